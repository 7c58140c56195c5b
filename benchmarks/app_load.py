"""The app under load: Inspect latency with 4 concurrent sessions vs 1, and memory over many cycles (issue 6).

Targets: with 4 concurrent app sessions, Inspect's p95 latency is at most 2.5x the single-session
figure; the server's memory grows by at most 50 MB over 100 upload-and-explain cycles.

One *cycle* is what a user does: open Inspect in a new browser session (its own context), upload one
picture nobody has uploaded before (a training image of the shipped sample set, never in the gallery,
so no cached result can answer it), and wait until that picture's heat maps and deletion/insertion
scores are on the page (they replace the gallery's preselected pictures). The latency is the time from the upload to that moment; the page load before
it is not counted. Both phases run in this one process against one real server (``streamlit run``,
headless Chromium driven by Playwright), the single-session phase first:

1. ``--cycles`` cycles one after another (the first ``--warmup`` not counted) -> single p95;
2. ``--sessions`` sessions at once, each doing ``--cycles / sessions`` cycles (rounded up) -> concurrent p95;
3. the memory check: the server's RSS after phases 1-2 (caches and models warm) and after
   ``--memory-cycles`` more sequential cycles (default 100).

Server side, the app runs with ``ATTNVIZ_PROFILE`` (``app/profiling.py``): every Inspect rerun that
computed something new (an upload) is split into its phases (decode, inspect compute, overlay PNGs,
figures, report, sidebar, cache lookups...) and the time it waited for model locks held by other
sessions; the benchmark prints the median of each for phase 1 and phase 2 beside the browser-side
latency.

    .venv/bin/python benchmarks/app_load.py [--sessions 4] [--cycles 20] [--memory-cycles 100] [--processes 1]

``--processes N`` (N > 1) serves the app as a classroom would past one process (``attnviz.cluster``:
N app processes behind nginx with sticky sessions; each new browser session goes to the next process);
the memory is then the sum over the processes. Run it with and without to compare on one machine.

Every client is a browser on this machine, in a laptop-sized window (``VIEWPORT``), so the clients' own
painting competes with the server for the same cores: on a 2-core machine that is most of the concurrent
slowdown. A cycle that shows no result within ``--timeout`` seconds leaves a screenshot, the page's text
and (with ``py-spy`` installed) every server thread's stack in ``--diagnostics``.

Needs Chromium at /usr/bin/chromium (``apt-get install -y chromium``) and the ``playwright`` package.
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


async def one_cycle(browser, base: str, picture: Path, timeout_s: float = 600.0, on_stuck=None) -> float:
    """One user: open Inspect, upload ``picture``, wait for its scored heat maps; returns seconds.

    ``on_stuck(page, picture)`` (async) is called before a timeout is raised, to keep what the page and
    the server were doing."""
    # a laptop's screen, not the whole page: a browser paints what is in view, and every client here
    # paints on the server's own cores
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        page = await context.new_page()
        await page.goto(base + "/inspect_image")
        await wait_idle(page, timeout_s)
        # counted from the choices, not from the maps on screen: a count taken while the last gallery
        # picture is still being drawn would wait for a number of maps that never comes
        models, gallery = await tag_counts(page, timeout_s)
        await wait_for_captions(page, models * gallery, timeout_s)
        started = time.perf_counter()
        await page.locator("input[type='file']").first.set_input_files(str(picture))
        deadline = time.monotonic() + timeout_s
        # an upload replaces the gallery's preselected pictures: done when the grid holds the upload's
        # scored maps alone (one per model) and the picture's name is on the page
        while not (await score_captions(page) == models and await page.get_by_text(picture.name).count()):
            if time.monotonic() > deadline:
                if on_stuck is not None:
                    await on_stuck(page, picture)
                raise TimeoutError(f"no heat maps for {picture.name} after {timeout_s:.0f} s")
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        if await page.locator("[data-testid='stException']").count():
            raise RuntimeError("the page showed a traceback")
        return elapsed
    finally:
        await context.close()


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


def print_breakdown(single: dict[str, float], concurrent: dict[str, float], sessions: int) -> None:
    print("Server side, median seconds per Inspect rerun that computed an upload (app/profiling.py; phases "
          "nest: 'inspect' holds its cache lookup, model load and compute)")
    print(f"  {'phase':<34} {'1 session':>10} {f'{sessions} sessions':>12}")
    first = ["reruns", "total", "lock wait"]
    for name in [*first, *sorted((set(single) | set(concurrent)) - set(first))]:
        cells = [single.get(name), concurrent.get(name)]
        text = ["-" if v is None else (f"{v:.0f}" if name == "reruns" else f"{v:.3f}") for v in cells]
        print(f"  {name:<34} {text[0]:>10} {text[1]:>12}")


async def run(args) -> None:
    from playwright.async_api import async_playwright

    pictures = iter(fresh_pictures())
    with tempfile.TemporaryDirectory() as home:
        profile = Path(home) / "profile.jsonl"
        os.environ["ATTNVIZ_PROFILE"] = str(profile)  # the server inherits it
        await measure(args, pictures, home, profile, async_playwright)


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
    """What to keep when a cycle times out: the page (screenshot, text) and every server thread's stack."""

    async def on_stuck(page, picture: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{picture.stem}-{int(time.time())}"
        await page.screenshot(path=str(folder / f"{stem}.png"), full_page=True)
        (folder / f"{stem}.txt").write_text(await page.inner_text("body"))
        if shutil.which("py-spy"):  # optional: `pip install py-spy`; stacks of a server that may be stuck
            for pid in pids:
                dump = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True, text=True)
                (folder / f"{stem}-server-{pid}.txt").write_text(dump.stdout + dump.stderr)
        print(f"a cycle timed out: the page and the server's stacks are in {folder}", file=sys.stderr, flush=True)

    return on_stuck


async def measure(args, pictures, home: str, profile: Path, async_playwright) -> None:
    with serve(args.processes, Path(home) / "home") as (base, pids):
        on_stuck = stuck_recorder(args.diagnostics, pids)

        async def cycle(browser, base, picture):  # every cycle of this run: the run's timeout and record
            return await one_cycle(browser, base, picture, args.timeout, on_stuck)

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            print(f"{args.processes} app process(es) up; {args.warmup + args.cycles} single cycles...",
                  file=sys.stderr, flush=True)
            single = []
            single_started = None
            for i in range(args.warmup + args.cycles):
                if i == args.warmup:
                    single_started = time.time()
                seconds = await cycle(browser, base, next(pictures))
                if i >= args.warmup:
                    single.append(seconds)
            single_ended = time.time()
            per_session = -(-args.cycles // args.sessions)

            async def session() -> list[float]:
                return [await cycle(browser, base, next(pictures)) for _ in range(per_session)]

            print(f"{args.sessions} concurrent sessions...", file=sys.stderr, flush=True)
            concurrent = [s for result in await asyncio.gather(*(session() for _ in range(args.sessions)))
                          for s in result]
            concurrent_ended = time.time()

            await asyncio.sleep(3)
            rss_start = sum(rss_mb(pid) for pid in pids)
            print(f"{args.memory_cycles} memory cycles...", file=sys.stderr, flush=True)
            for _ in range(args.memory_cycles):
                await cycle(browser, base, next(pictures))
            await asyncio.sleep(3)
            rss_end = sum(rss_mb(pid) for pid in pids)
            await browser.close()

    print_breakdown(server_breakdown(profile, single_started, single_ended),
                    server_breakdown(profile, single_ended, concurrent_ended), args.sessions)
    single_p95, concurrent_p95 = p95(single), p95(concurrent)
    print(f"Inspect latency, upload -> scored heat maps ({len(single)} single cycles, "
          f"{len(concurrent)} cycles in {args.sessions} concurrent sessions)")
    print(f"  single      median {statistics.median(single):6.2f} s   p95 {single_p95:6.2f} s")
    print(f"  concurrent  median {statistics.median(concurrent):6.2f} s   p95 {concurrent_p95:6.2f} s")
    print(f"  p95 ratio {concurrent_p95 / single_p95:.2f}x (target <= 2.5x; {args.processes} app process(es))")
    print(f"Server memory: {rss_start:.0f} MB after both phases, {rss_end:.0f} MB after {args.memory_cycles} more "
          f"upload-and-explain cycles: {rss_end - rss_start:+.0f} MB (target <= +50 MB per 100 cycles)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=4)
    parser.add_argument("--cycles", type=int, default=20, help="timed cycles per phase")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--memory-cycles", type=int, default=100)
    parser.add_argument("--processes", type=int, default=1, help="app processes behind nginx (attnviz.cluster)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a cycle counts as stuck")
    parser.add_argument("--diagnostics", type=Path, default=Path(tempfile.gettempdir()) / "attnviz-app-load",
                        help="where a stuck cycle's screenshot, page text and server stacks go")
    args = parser.parse_args()
    if min(args.sessions, args.cycles, args.processes) < 1 or min(args.warmup, args.memory_cycles) < 0:
        parser.error("--sessions, --cycles and --processes must be >= 1, --warmup and --memory-cycles >= 0")
    if args.warmup + args.cycles * 2 + args.memory_cycles + args.sessions > len(fresh_pictures()):
        parser.error(f"only {len(fresh_pictures())} fresh pictures: ask for fewer cycles")
    if not Path(CHROMIUM).exists():
        sys.exit(f"This benchmark drives Chromium at {CHROMIUM}; install it with apt-get install -y chromium.")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
