"""The app under load: Inspect latency with 4 and 8 concurrent sessions vs 1, and memory over many cycles
(issues 6 and 15).

Targets: Inspect's p95 latency with 4 concurrent sessions is at most 2.5x the single-session figure, with 8
at most 5x; the server's memory grows by at most 50 MB over 100 upload-and-explain cycles.

One *cycle* is what a user does: open Inspect in a new session, upload one picture nobody has uploaded
before (a training image of the shipped sample set, never in the gallery, so no cached result can answer
it), and wait until that picture's heat maps and deletion/insertion scores are on the page (they replace
the gallery's preselected pictures) and their images are downloaded. The latency is the time from the
upload to that moment; the page load before it is not counted. All phases run in this one process
against one real server (``streamlit run``):

1. ``--warmup`` + ``--cycles`` cycles one after another (the warm-ups not counted) -> single p95, and
   the server's CPU seconds per upload;
2. for each N in ``--sessions`` (default 4 and 8), a classroom: rounds in which N students first open
   Inspect (every page loaded and idle), then all upload at the same moment, the worst case for the
   server; ``--cycles / N`` rounds (rounded up) -> the p95 over every upload, and its ratio to phase 1.
   Clients are idle between actions: no page load ever overlaps another client's timed upload. Beside
   it, the compute floor: N uploads' CPU seconds spread perfectly over the machine's cores, the least
   any scheduling could give the last of them, as a ratio to the single p95;
3. the memory check: the server's RSS after phases 1-2 (caches and models warm), right after
   ``--memory-cycles`` more sequential cycles (default 100), and once the closed sessions that Streamlit
   keeps for a reconnect (``server.disconnectedSessionTTL``, 120 s by default, at most 128 sessions)
   have expired. Beside it, how many closed sessions were still kept at the first reading and how many
   bytes of new images each upload's page fetched (media the server holds per session). The app hands
   freed memory back to the system every ``ATTNVIZ_TRIM_SECONDS`` (``attnviz.device.return_free_heap``);
   run with ``ATTNVIZ_TRIM_SECONDS=0`` to see the process without it.

Server side, the app runs with ``ATTNVIZ_PROFILE`` (``app/profiling.py``): every Inspect rerun that
computed something new (an upload) is split into its phases (decode, inspect compute, overlay PNGs,
figures, report, sidebar, cache lookups...) and the time it waited for model locks held by other
sessions; the benchmark prints the median of each phase per measured window beside the client-side
latency.

    .venv/bin/python benchmarks/app_load.py [--sessions 4 8] [--cycles 16] [--memory-cycles 100] [--processes 1]
                                            [--clients protocol|browser]

``--processes N`` (N > 1) serves the app as a classroom would past one process (``attnviz.cluster``:
N app processes behind nginx with sticky sessions; each new session goes to the next process);
the memory is then the sum over the processes. Run it with and without to compare on one machine.

The clients (``--clients``):

- ``protocol`` (the default): each student is Streamlit's own traffic without a browser
  (``tests/app/protocol_client.py``): the page and health requests, one websocket carrying the protobuf
  messages, the file uploader's PUT and its rerun, and a GET of every image the page shows (six at a time,
  as Chromium does). What reaches the server is what a browser sends; nothing is drawn here. Why: a
  headless Chromium per session, on the server's own 2 cores, spent more CPU per upload than the server
  itself (the benchmark prints both), so browser classrooms measured the browsers as much as the app,
  while in a classroom each laptop draws its own page. What a user sees after the maps arrive (the
  browser decoding and painting them) is then not counted; the browser tests cover that the page draws.
- ``browser``: a headless Chromium per session on this machine, in a laptop-sized window (``VIEWPORT``).
  Its own painting shares the server's cores, so, once the server is up, this process, Playwright's
  driver and the browsers run at ``--client-priority idle`` (SCHED_IDLE: a client runs only on a core the
  server leaves free; Chromium renices its own processes, which does not lift that), and a client waits
  for its maps with a check inside the page every 50 ms, not with a round trip to this process per check.
  That is pessimistic for the concurrent latency: a client whose maps are ready waits to paint (and to
  send its upload) until the server has no other work, where a laptop would do both at once.
  ``--client-priority normal`` lets the clients compete as equals. Client pages are still
  (``--client-animations off``, the default): no CSS animation or transition, so the browsers do not
  paint spinners and fades frame by frame, in software, on the server's cores.

A cycle that shows no result within ``--timeout`` seconds leaves the page (a browser's screenshot and
text, or a protocol client's last run) and (with ``py-spy`` installed) every server thread's stack in
``--diagnostics``.

``--clients browser`` needs Chromium at /usr/bin/chromium (``apt-get install -y chromium``) and the
``playwright`` package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "app"))  # the test harness's server starter

from apphelpers import chosen_models, scored_captions  # noqa: E402
from appserver import CHROMIUM, CHROMIUM_ARGS, app_server, free_port  # noqa: E402

from attnviz.cluster import Cluster  # noqa: E402
from attnviz.paths import SAMPLE_DIR  # noqa: E402

VIEWPORT = {"width": 1366, "height": 768}


def fresh_pictures() -> list[Path]:
    """Training images of the sample set: never in the gallery, each with its own digest."""
    pictures = sorted((SAMPLE_DIR / "train").glob("*/*.jpg"))
    # interleave classes so consecutive cycles see different kinds of picture
    by_class: dict[str, list[Path]] = {}
    for path in pictures:
        by_class.setdefault(path.parent.name, []).append(path)
    columns = list(by_class.values())
    return [column[i] for i in range(max(map(len, columns))) for column in columns if i < len(column)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used so far (every thread)."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent not idle so far (all processes, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


async def wait_idle(page, timeout_s: float) -> None:
    """Until Streamlit has finished its run (no running-status widget twice in a row)."""
    await page.wait_for_selector("[data-testid='stApp']", timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    await asyncio.sleep(0.5)
    while time.monotonic() < deadline:
        if await page.locator("[data-testid='stStatusWidget']").count() == 0:
            await asyncio.sleep(0.3)
            if await page.locator("[data-testid='stStatusWidget']").count() == 0:
                return
        await asyncio.sleep(0.2)
    raise TimeoutError("the page was still running")


async def score_captions(page) -> int:
    texts = await page.locator("[data-testid='stCaptionContainer']").all_inner_texts()
    return sum(1 for t in texts if "deletion" in t and "p=" in t)


async def tag_counts(page, timeout_s: float) -> tuple[int, int]:
    """(models chosen in the sidebar, gallery pictures chosen on the page), the multiselects' tags, once
    both are drawn."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        models = await page.locator("[data-testid='stSidebar'] [data-tag]").count()
        gallery = await page.locator("[data-tag]").count() - models
        if models and gallery:
            return models, gallery
        await asyncio.sleep(0.1)
    raise RuntimeError("Inspect opened with no models or no gallery pictures chosen")


async def wait_for_captions(page, expected: int, timeout_s: float) -> None:
    """Until exactly ``expected`` scored heat maps are on the page."""
    deadline = time.monotonic() + timeout_s
    while await score_captions(page) != expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the gallery's {expected} scored heat maps did not appear")
        await asyncio.sleep(0.1)


# A client's spinners and fades are painted by its own laptop in a classroom; here they would be painted, in
# software, frame by frame, on the server's cores. So unless --client-animations on, every client page is
# still: no CSS animation or transition (the page's content and its timing are the same).
CLIENT_ANIMATIONS = False
STILL_PAGE_JS = """
document.addEventListener('DOMContentLoaded', () => {
  const style = document.createElement('style');
  style.textContent = '*, *::before, *::after { animation: none !important; transition: none !important; }';
  document.head.appendChild(style);
});
"""


async def open_inspect(browser, base: str, timeout_s: float):
    """A user opens Inspect in a new browser session (its own context) and waits until the gallery's
    scored maps are drawn; returns (context, page, models chosen)."""
    # a laptop's screen, not the whole page: a browser paints what is in view, and every client here
    # paints on the server's own cores
    context = await browser.new_context(viewport=VIEWPORT, reduced_motion=None if CLIENT_ANIMATIONS else "reduce")
    if not CLIENT_ANIMATIONS:
        await context.add_init_script(STILL_PAGE_JS)
    page = await context.new_page()
    await page.goto(base + "/inspect_image")
    await wait_idle(page, timeout_s)
    # counted from the choices, not from the maps on screen: a count taken while the last gallery
    # picture is still being drawn would wait for a number of maps that never comes
    models, gallery = await tag_counts(page, timeout_s)
    await wait_for_captions(page, models * gallery, timeout_s)
    return context, page, models


# Evaluated inside the page, every POLL_MS, so waiting costs the client next to nothing (no round trip to
# this process per check); true (the page's clock, ms) once the upload's scored maps alone fill the grid
# and the picture's name is on the page. textContent, not innerText: it needs no layout.
UPLOAD_DONE_JS = """([models, name]) => {
  const scored = [...document.querySelectorAll("[data-testid='stCaptionContainer']")]
    .filter(c => c.textContent.includes("deletion") && c.textContent.includes("p=")).length;
  return scored === models && document.body.textContent.includes(name) ? Date.now() : false;
}"""
POLL_MS = 50


async def upload_and_wait(page, picture: Path, models: int, timeout_s: float, on_stuck=None,
                          marks: list | None = None) -> float:
    """Upload ``picture`` on an open Inspect page and wait for its scored heat maps; returns seconds.

    ``on_stuck(picture)`` (async) is called before a timeout is raised, to keep what the page and
    the server were doing; ``marks`` gets (upload started, maps on the page), both ``time.time()``."""
    started = time.time()  # the page's Date.now() reads the same clock
    await page.locator("input[type='file']").first.set_input_files(str(picture))
    # an upload replaces the gallery's preselected pictures: done when the grid holds the upload's
    # scored maps alone (one per model) and the picture's name is on the page
    try:
        done = await page.wait_for_function(UPLOAD_DONE_JS, arg=[models, picture.name], polling=POLL_MS,
                                            timeout=timeout_s * 1000)
    except Exception as error:  # playwright's TimeoutError
        if on_stuck is not None:
            await on_stuck(picture)
        raise TimeoutError(f"no heat maps for {picture.name} after {timeout_s:.0f} s") from error
    done_at = await done.json_value() / 1000
    if marks is not None:
        marks.append((started, done_at))
    elapsed = done_at - started
    if await page.locator("[data-testid='stException']").count():
        raise RuntimeError("the page showed a traceback")
    return elapsed


class BrowserStudent:
    """A student in a headless Chromium: a page open on Inspect (its own browser context)."""

    def __init__(self, context, page, models: int) -> None:
        self.context, self.page, self.models = context, page, models

    @classmethod
    async def open(cls, browser, base: str, timeout_s: float) -> BrowserStudent:
        return cls(*await open_inspect(browser, base, timeout_s))

    async def upload(self, picture: Path, timeout_s: float, on_stuck=None, marks: list | None = None) -> float:
        stuck = None if on_stuck is None else (lambda pic: on_stuck(pic, page=self.page))
        return await upload_and_wait(self.page, picture, self.models, timeout_s, stuck, marks)

    async def close(self) -> None:
        await self.context.close()


# (picture, the session's model names, the captions its page showed) of every protocol upload: checked
# against the library's numbers for that picture at the end
PROTOCOL_SHOWN: list[tuple[Path, list[str], list[str]]] = []
# bytes of the new images each protocol upload's page fetched: media the server keeps for that session
UPLOAD_IMAGE_BYTES: list[int] = []


class ProtocolStudent:
    """A student as Streamlit's protocol, no browser (``tests/app/protocol_client.py``): the same requests
    to the server, nothing drawn on this machine."""

    def __init__(self, client, model_names: list[str], uploader) -> None:
        self.client, self.model_names, self.uploader = client, model_names, uploader
        self.models = len(model_names)

    @classmethod
    async def open(cls, browser, base: str, timeout_s: float) -> ProtocolStudent:
        from protocol_client import ProtocolClient, chosen

        def gallery_drawn(run) -> bool:  # as open_inspect: every chosen model's map of every gallery picture
            models = len(chosen_models(run))
            gallery = next((chosen(m) for m in run.widgets("multiselect") if m.label.startswith("Sample images")), 0)
            return models > 0 and gallery > 0 and len(scored_captions(run)) == models * gallery

        client = ProtocolClient(base)
        try:
            run = await client.open("inspect_image", timeout_s, done=gallery_drawn)
        except BaseException:
            await client.close()
            raise
        return cls(client, chosen_models(run), run.widgets("file_uploader")[0])

    async def upload(self, picture: Path, timeout_s: float, on_stuck=None, marks: list | None = None) -> float:
        started, fetched_before = time.time(), self.client.fetched_bytes
        try:
            run = await self.client.upload(
                picture, self.uploader.id,
                lambda run: len(scored_captions(run)) == self.models and picture.name in run.text(),
                timeout_s, multiple=self.uploader.multiple_files)
        except TimeoutError:
            if on_stuck is not None:
                await on_stuck(picture, text=self.client.last_run.text() if self.client.last_run else "")
            raise
        shown = time.time()
        PROTOCOL_SHOWN.append((picture, self.model_names, scored_captions(run)))
        UPLOAD_IMAGE_BYTES.append(self.client.fetched_bytes - fetched_before)
        if marks is not None:
            marks.append((started, shown))
        return shown - started

    async def close(self) -> None:
        await self.client.close()


async def one_cycle(student_kind, browser, base: str, picture: Path, timeout_s: float = 600.0,
                    on_stuck=None) -> float:
    """One user alone: open Inspect, upload ``picture``, wait for its scored heat maps; returns seconds
    from the upload (the page load is not counted)."""
    student = await student_kind.open(browser, base, timeout_s)
    try:
        return await student.upload(picture, timeout_s, on_stuck)
    finally:
        await student.close()


async def classroom_round(student_kind, browser, base: str, pictures: list[Path], timeout_s: float, on_stuck=None,
                          usage: list | None = None, pids: list[int] = (), marks: list | None = None) -> list[float]:
    """``len(pictures)`` students (``student_kind``: BrowserStudent or ProtocolStudent): every one opens
    Inspect first (all pages loaded and idle), then all upload at the same moment, the worst case for the
    server; returns each upload's seconds.

    Page loads happen before the timed window, so no client's page load competes with another's upload:
    a classroom's browsers sit idle between actions. ``usage`` gets (wall seconds, server CPU seconds,
    whole-machine busy CPU seconds) of the uploads, the server being ``pids``; ``marks`` each upload's
    (started, maps on the page)."""
    opened = await asyncio.gather(*(student_kind.open(browser, base, timeout_s) for _ in pictures),
                                  return_exceptions=True)
    try:
        for outcome in opened:
            if isinstance(outcome, BaseException):
                raise outcome
        started, cpu_started, busy_started = time.perf_counter(), cpu_seconds(pids), machine_busy_seconds()
        seconds = list(await asyncio.gather(*(student.upload(picture, timeout_s, on_stuck, marks)
                                              for student, picture in zip(opened, pictures, strict=True))))
        if usage is not None:
            usage.append((time.perf_counter() - started, cpu_seconds(pids) - cpu_started,
                          machine_busy_seconds() - busy_started))
        return seconds
    finally:
        for student in opened:
            if not isinstance(student, BaseException):
                await student.close()


def server_breakdown(profile: Path, start: float, end: float) -> dict[str, float]:
    """Median seconds per phase over the Inspect reruns that computed a new picture in [start, end]."""
    runs = []
    for line in profile.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["page"].startswith("Inspect") and start <= record["at"] <= end and any(
                name.startswith("inspect: compute") for name in record["phases"]):
            runs.append(record)
    if not runs:
        return {}
    names = sorted({name for record in runs for name in record["phases"]})
    out = {"reruns": float(len(runs)), "total": statistics.median(r["total_s"] for r in runs),
           "lock wait": statistics.median(r["lock_wait_s"] for r in runs)}
    out |= {name: statistics.median(r["phases"].get(name, 0.0) for r in runs) for name in names}
    return out


def client_timeline(profile: Path, marks: list[tuple[float, float]]) -> dict[str, float] | None:
    """Where a lone user's wait goes, as medians over the single cycles: from the upload to the start of
    the rerun that computed it (the browser sends the file and asks for a rerun; Streamlit starts the
    script), the rerun itself (``app/profiling.py``'s total), and from its end to the maps on the page
    (the deltas and images travel; a browser also draws them). Cycles are one after another, so each
    upload's rerun is the one that computed a picture inside its window."""
    reruns = [json.loads(line) for line in profile.read_text(encoding="utf-8").splitlines()]
    reruns = [r for r in reruns if any(name.startswith("inspect: compute") for name in r["phases"])]
    parts = []
    for started, shown in marks:
        inside = [r for r in reruns if started <= r["at"] - r["total_s"] and r["at"] <= shown]
        if len(inside) == 1:
            rerun = inside[0]
            begun = rerun["at"] - rerun["total_s"]
            parts.append((begun - started, rerun["total_s"], shown - rerun["at"]))
    if not parts:
        return None
    names = ("upload -> rerun starts", "the rerun", "rerun ends -> maps shown")
    return {name: statistics.median(part[i] for part in parts) for i, name in enumerate(names)} | {
        "cycles matched": float(len(parts))}


def print_breakdown(phases_by_window: dict) -> None:
    """One column per measured window (``"single"``, then each concurrent session count)."""
    print("Server side, median seconds per Inspect rerun that computed an upload (app/profiling.py; phases "
          "nest: 'inspect' holds its cache lookup, model load and compute; the models run side by side inside "
          "'compare', so 'inspect' adds up their threads' time and can exceed it)")
    heads = [("1 session" if name == "single" else f"{name} sessions") for name in phases_by_window]
    print(f"  {'phase':<34}" + "".join(f"{h:>13}" for h in heads))
    first = ["reruns", "total", "lock wait"]
    names = set().union(*phases_by_window.values()) if phases_by_window else set()
    for name in [*first, *sorted(names - set(first))]:
        cells = [window.get(name) for window in phases_by_window.values()]
        text = ["-" if v is None else (f"{v:.0f}" if name == "reruns" else f"{v:.3f}") for v in cells]
        print(f"  {name:<34}" + "".join(f"{t:>13}" for t in text))


async def run(args) -> None:
    pictures = iter(fresh_pictures())
    with tempfile.TemporaryDirectory() as home:
        profile = args.profile or Path(home) / "profile.jsonl"
        profile.parent.mkdir(parents=True, exist_ok=True)
        profile.unlink(missing_ok=True)
        os.environ["ATTNVIZ_PROFILE"] = str(profile)  # the server inherits it
        await measure(args, pictures, home, profile)


@contextlib.contextmanager
def serve(processes: int, home: Path):
    """The app at one address: (base URL, the app processes' pids)."""
    if processes == 1:
        with app_server(home) as (base, server):
            yield base, [server.pid]
        return
    base_port = free_port()
    while any(not _port_free(base_port + i) for i in range(processes)):
        base_port = free_port()
    with Cluster(processes=processes, port=free_port(), base_port=base_port, home=home,
                 state_dir=home.parent / "cluster") as cluster:
        yield cluster.url, [child.pid for child in cluster.children[:processes]]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stuck_recorder(folder: Path, pids: list[int]):
    """What to keep when a cycle times out: the page (a browser's screenshot and text, or a protocol client's
    last run) and every server thread's stack."""

    async def on_stuck(picture: Path, page=None, text: str = "") -> None:
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{picture.stem}-{int(time.time())}"
        if page is not None:  # a browser: its screenshot and text; a protocol client: its last run's elements
            await page.screenshot(path=str(folder / f"{stem}.png"), full_page=True)
            text = await page.inner_text("body")
        (folder / f"{stem}.txt").write_text(text)
        if shutil.which("py-spy"):  # optional: `pip install py-spy`; stacks of a server that may be stuck
            for pid in pids:
                dump = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True)
                (folder / f"{stem}-server-{pid}.txt").write_text(dump.stdout + dump.stderr)
        print(f"a cycle timed out: the page and the server's stacks are in {folder}", file=sys.stderr, flush=True)

    return on_stuck


def lower_client_priority(policy: str) -> None:
    """This process and everything it starts from now on: ``idle`` = SCHED_IDLE (runs only on a core
    the server leaves free; Chromium renices its own processes, which does not lift SCHED_IDLE) or
    ``normal`` (as the server; also what the report's own library work goes back to, which a busy
    machine would otherwise starve)."""
    policy_id = os.SCHED_IDLE if policy == "idle" else os.SCHED_OTHER
    if os.sched_getscheduler(0) != policy_id:
        try:
            os.sched_setscheduler(0, policy_id, os.sched_param(0))
        except PermissionError:  # leaving SCHED_IDLE needs RLIMIT_NICE room or CAP_SYS_NICE
            print(f"could not switch this process to {policy} priority (not permitted); going on as it is",
                  file=sys.stderr, flush=True)


async def measure(args, pictures, home: str, profile: Path) -> None:
    with serve(args.processes, Path(home) / "home") as (base, pids):
        on_stuck = stuck_recorder(args.diagnostics, pids)
        # the server is up at normal priority; from here this process, Playwright's driver and every
        # browser it starts are clients, which in a classroom would run on the students' own laptops
        lower_client_priority(args.client_priority)
        global CLIENT_ANIMATIONS
        CLIENT_ANIMATIONS = args.client_animations == "on"
        if args.clients == "protocol":
            measured = await phases(args, ProtocolStudent, None, base, pids, pictures, on_stuck)
        else:
            from playwright.async_api import async_playwright

            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    measured = await phases(args, BrowserStudent, browser, base, pids, pictures, on_stuck)
                finally:
                    await browser.close()
    # the server is gone: the library check of every shown caption in `report` is this process's own work
    lower_client_priority("normal")
    report(args, profile, measured)


async def phases(args, student_kind, browser, base: str, pids: list[int], pictures, on_stuck) -> dict:
    """The single cycles, each classroom, the memory cycles (the module docstring's phases 1-3)."""
    print(f"{args.processes} app process(es) up, {args.clients} clients; {args.warmup + args.cycles} single "
          "cycles...", file=sys.stderr, flush=True)
    single, single_usage, single_marks = [], [], []
    single_started = None
    for i in range(args.warmup + args.cycles):
        if i == args.warmup:
            single_started = time.time()
        # a round of one: the same steps as one_cycle, with the server's CPU time of the upload
        timed = i >= args.warmup
        seconds = await classroom_round(student_kind, browser, base, [next(pictures)], args.timeout, on_stuck,
                                        single_usage if timed else None, pids, single_marks if timed else None)
        if timed:
            single += seconds
    windows = {"single": (single_started, time.time())}

    concurrent: dict[int, list[float]] = {}
    usage: dict[int, list[tuple[float, float, float]]] = {}
    for sessions in args.sessions:
        rounds = -(-args.cycles // sessions)
        print(f"{sessions} concurrent sessions: {rounds} round(s), everyone uploading at once...",
              file=sys.stderr, flush=True)
        started, concurrent[sessions], usage[sessions] = time.time(), [], []
        for _ in range(rounds):
            concurrent[sessions] += await classroom_round(
                student_kind, browser, base, [next(pictures) for _ in range(sessions)], args.timeout, on_stuck,
                usage[sessions], pids)
        windows[sessions] = (started, time.time())

    await asyncio.sleep(3)
    rss_start = sum(rss_mb(pid) for pid in pids)
    print(f"{args.memory_cycles} memory cycles...", file=sys.stderr, flush=True)
    cycle_ends = []
    for _ in range(args.memory_cycles):
        await one_cycle(student_kind, browser, base, next(pictures), args.timeout, on_stuck)
        cycle_ends.append(time.time())
    await asyncio.sleep(3)
    rss_cycles = rss_end = sum(rss_mb(pid) for pid in pids)
    # the closed sessions the server still kept at that reading: those closed within the TTL, at most 128
    held = min(sessions_kept_for_reconnect(), sum(1 for t in cycle_ends if t > time.time() - disconnected_session_ttl()))
    if args.memory_cycles:
        # Streamlit keeps every closed session (its state, uploads, pictures) for a reconnect, up to 128 of
        # them for server.disconnectedSessionTTL seconds: fast cycles end with up to 128 such sessions held,
        # which is not a leak. Wait that out; one more session's close makes the server drop the expired.
        ttl = disconnected_session_ttl()
        print(f"waiting {ttl + 5:.0f} s for closed sessions to expire (kept {ttl:.0f} s for a reconnect)...",
              file=sys.stderr, flush=True)
        await asyncio.sleep(ttl + 5)
        student = await student_kind.open(browser, base, args.timeout)
        await student.close()
        await asyncio.sleep(3)
        rss_end = sum(rss_mb(pid) for pid in pids)
    return {"single": single, "single_usage": single_usage, "single_marks": single_marks, "windows": windows,
            "concurrent": concurrent, "usage": usage, "rss": (rss_start, rss_cycles, rss_end), "held": held}


def sessions_kept_for_reconnect() -> int:
    """At most how many closed sessions Streamlit keeps for a reconnect (its session storage's maxsize)."""
    import inspect

    from streamlit.runtime.memory_session_storage import MemorySessionStorage

    return int(inspect.signature(MemorySessionStorage).parameters["maxsize"].default)


def disconnected_session_ttl() -> float:
    """Seconds Streamlit keeps a closed session for a reconnect (``server.disconnectedSessionTTL``, read
    from the app's config as the server reads it)."""
    from streamlit import config

    config.get_config_options(force_reparse=True)
    return float(config.get_option("server.disconnectedSessionTTL"))


def report(args, profile: Path, measured: dict) -> None:
    single, single_usage, concurrent, usage = (measured[k] for k in ("single", "single_usage", "concurrent", "usage"))
    rss_start, rss_cycles, rss_end = measured["rss"]
    print_breakdown({name: server_breakdown(profile, *window) for name, window in measured["windows"].items()})
    cores = os.cpu_count() or 1
    upload_cpu = sum(cpu for _, cpu, _ in single_usage) / len(single_usage)
    targets = {4: 2.5, 8: 5.0}
    single_p95 = p95(single)
    print(f"Inspect latency, upload -> scored heat maps ({len(single)} single cycles; concurrent: every session "
          f"uploads at the same moment, pages loaded beforehand; {args.clients} clients at {args.client_priority} "
          "priority)")
    print(f"  single          median {statistics.median(single):6.2f} s   p95 {single_p95:6.2f} s")
    timeline = client_timeline(profile, measured["single_marks"])
    if timeline:
        print(f"{'':17}of which (medians over {timeline.pop('cycles matched'):.0f} cycles): "
              + ", ".join(f"{name} {value:.3f} s" for name, value in timeline.items()))
    client_cpu = sum(busy - cpu for _, cpu, busy in single_usage) / len(single_usage)
    print(f"{'':17}CPU per upload: the server {upload_cpu:.2f} s, everything else on this machine (the "
          f"clients, this process) {client_cpu:.2f} s")
    for sessions, values in concurrent.items():
        target = targets.get(sessions)
        print(f"  {sessions:>2} sessions     median {statistics.median(values):6.2f} s   p95 {p95(values):6.2f} s   "
              f"p95 ratio {p95(values) / single_p95:.2f}x" + (f" (target <= {target}x)" if target else "")
              + f"   [{len(values)} uploads, {args.processes} app process(es)]")
        wall, cpu, busy = (sum(x) for x in zip(*usage[sessions], strict=True))
        print(f"{'':17}while the rounds' uploads ran ({wall:.1f} s): the server used {cpu / wall:.2f} cores, the "
              f"whole machine {busy / wall:.2f} of {cores}")
        # what no scheduling can beat: the last of N simultaneous uploads waits for all N uploads' CPU work
        floor = sessions * upload_cpu / cores
        print(f"{'':17}compute floor: {sessions} uploads x {upload_cpu:.2f} server CPU s each (single phase) on "
              f"{cores} cores = {floor:.2f} s before the last can finish: a p95 ratio of at least "
              f"{floor / single_p95:.2f}x with perfect scheduling and every client on another machine")
    if PROTOCOL_SHOWN:  # "every session shows the single-session numbers", for every upload of the run
        from apphelpers import inspect_captions

        differ = [picture.name for picture, names, captions in PROTOCOL_SHOWN
                  if captions != inspect_captions(names, picture.name, picture.read_bytes())]
        print(f"Shown numbers: {len(PROTOCOL_SHOWN) - len(differ)} of {len(PROTOCOL_SHOWN)} uploads' captions "
              "(class, p, deletion, insertion per model) equal the library's for that picture"
              + (f"; differ: {', '.join(differ[:8])}" if differ else ""))
    print(f"Server memory: {rss_start:.0f} MB after both phases, {rss_cycles:.0f} MB right after {args.memory_cycles} "
          f"more upload-and-explain cycles ({rss_cycles - rss_start:+.0f} MB, {measured['held']} of their closed "
          f"sessions still kept for a reconnect), {rss_end:.0f} MB once those expired: {rss_end - rss_start:+.0f} MB "
          "(target <= +50 MB per 100 cycles)")
    if UPLOAD_IMAGE_BYTES:
        print(f"{'':15}each upload's page fetched {statistics.median(UPLOAD_IMAGE_BYTES) / 1024:.0f} KB of new images "
              "(median): media the server keeps in memory for that session until it is dropped")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[4, 8],
                        help="concurrent session counts to measure, one after another")
    parser.add_argument("--clients", choices=["protocol", "browser"], default="protocol",
                        help="browser: a headless Chromium per session; protocol: Streamlit's own messages and "
                             "HTTP requests, nothing drawn (tests/app/protocol_client.py)")
    parser.add_argument("--client-priority", choices=["idle", "normal"], default="idle",
                        help="the clients' CPU priority: idle (SCHED_IDLE: the server's work goes first) or normal")
    parser.add_argument("--client-animations", choices=["off", "on"], default="off",
                        help="let the client pages animate (spinners, fades): painted on this machine's cores")
    parser.add_argument("--cycles", type=int, default=20, help="timed cycles per phase")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--memory-cycles", type=int, default=100)
    parser.add_argument("--processes", type=int, default=1, help="app processes behind nginx (attnviz.cluster)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a cycle counts as stuck")
    parser.add_argument("--profile", type=Path, default=None,
                        help="keep the server's per-rerun profile here (JSON lines, app/profiling.py)")
    parser.add_argument("--diagnostics", type=Path, default=Path(tempfile.gettempdir()) / "attnviz-app-load",
                        help="where a stuck cycle's screenshot, page text and server stacks go")
    args = parser.parse_args()
    if min(*args.sessions, args.cycles, args.processes) < 1 or min(args.warmup, args.memory_cycles) < 0:
        parser.error("--sessions, --cycles and --processes must be >= 1, --warmup and --memory-cycles >= 0")
    needed = args.warmup + args.cycles + sum(-(-args.cycles // n) * n for n in args.sessions) + args.memory_cycles
    if needed > len(fresh_pictures()):
        parser.error(f"only {len(fresh_pictures())} fresh pictures: ask for fewer cycles")
    if args.clients == "browser" and not Path(CHROMIUM).exists():
        sys.exit(f"This benchmark drives Chromium at {CHROMIUM}; install it with apt-get install -y chromium.")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
