"""A student that speaks Streamlit's own protocol instead of driving a browser: the load benchmark's light client.

Why (issue 15): a headless Chromium per session, on the server's own 2 cores, spent more CPU per upload
than the server did (``benchmarks/app_load.py`` prints both), so every browser-driven classroom measured
the browsers as much as the app. In a classroom each student's laptop draws its own page; what reaches the
server is the same either way: a page request, one websocket per session carrying Streamlit's protobuf
messages (``streamlit.proto``), an HTTP PUT per uploaded file, and a GET per image the page shows. This
client sends exactly those, in the order the browser does, and draws nothing:

1. ``open(page)``: GET the page and ``/_stcore/health`` (cookies: the cluster's sticky ``attnviz_backend``,
   Streamlit's XSRF token), open ``/_stcore/stream`` and ask for a run of ``page`` (``BackMsg.rerun_script`` with the page's URL
   path); wait for its ``script_finished`` and fetch every image the run shows;
2. ``upload(path)``: ``BackMsg.file_urls_request`` -> ``ForwardMsg.file_urls_response`` (where to PUT),
   the PUT (multipart, with the XSRF header), then ``rerun_script`` with the uploader's new state, as the
   browser's file uploader does; wait for the run whose page ``done(run)`` accepts, and fetch its new
   images (a browser caches media by URL; so does this client).

Widgets this client never touches keep their values on the server (Streamlit keeps a widget's last value
when the client sends no new one). A run is the elements of the ``delta``s between its ``new_session`` (which
starts every script run) and its ``script_finished``: what the page shows when the run ends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.Common_pb2 import UploadedFileInfo
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import connect

XSRF_COOKIE = "_streamlit_xsrf"
BROWSER_CONNECTIONS = 6  # what Chromium opens to one host over HTTP/1.1
FINISHED_OK = (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY)


@dataclass
class Run:
    """One script run as the page shows it when it ends: every element its deltas drew, in order."""

    elements: list = field(default_factory=list)
    status: int | None = None

    def images(self) -> list:
        return [image for element in self.elements if element.WhichOneof("type") == "imgs"
                for image in element.imgs.imgs]

    def widgets(self, kind: str) -> list:
        return [getattr(element, kind) for element in self.elements if element.WhichOneof("type") == kind]

    def text(self) -> str:
        """Everything the run wrote, as text (what ``document.body.textContent`` would hold, and more)."""
        return "\n".join(str(element) for element in self.elements)

    def exceptions(self) -> list[str]:
        return [element.exception.message for element in self.elements if element.WhichOneof("type") == "exception"]


def chosen(multiselect) -> int:
    """How many options a multiselect element shows as chosen (its value set by the server, or its default)."""
    return len(multiselect.raw_values) if multiselect.set_value else len(multiselect.default)


class ProtocolClient:
    """One browser session's traffic, without the browser (see the module docstring). Use as
    ``async with ProtocolClient(base) as client: await client.open("inspect_image")``."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")
        self.http = requests.Session()
        self.socket = None
        self.session_id: str | None = None
        self.page_hash = ""
        self.page_name = ""
        self.fetched: set[str] = set()  # media already downloaded: a browser's cache
        self.fetched_bytes = 0  # their bytes: what the server holds for this session while it lives
        self.last_run: Run | None = None
        self.uploaded: dict[str, list] = {}  # uploader id -> the files it holds

    async def __aenter__(self) -> ProtocolClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()
            self.socket = None
        self.http.close()

    async def open(self, page: str, timeout_s: float, done=None) -> Run:
        """Load ``page`` (its URL path) in a new session; returns its first finished run that ``done``
        accepts (any finished run by default), its images fetched."""
        self.page_name = page
        for path in (page, "_stcore/health"):  # the frontend checks health before it connects: the XSRF cookie
            response = await asyncio.to_thread(self.http.get, f"{self.base}/{path}", timeout=timeout_s)
            response.raise_for_status()
        split = urlsplit(self.base)
        scheme = "wss" if split.scheme == "https" else "ws"
        cookies = "; ".join(f"{name}={value}" for name, value in self.http.cookies.items())
        self.socket = await connect(
            f"{scheme}://{split.netloc}{split.path}/_stcore/stream",
            # the browser passes its XSRF token as a second "subprotocol"; Streamlit selects "streamlit"
            subprotocols=["streamlit", *filter(None, [self.http.cookies.get(XSRF_COOKIE)])],
            additional_headers={"Cookie": cookies, "Origin": self.base}, max_size=None, compression=None,
            open_timeout=timeout_s)
        await self._rerun(widget_states=[])
        return await self.wait_for_run(done or (lambda run: True), timeout_s)

    async def upload(self, picture: Path, uploader_id: str, done, timeout_s: float, *, multiple: bool = True) -> Run:
        """Upload ``picture`` through the file uploader ``uploader_id`` (``multiple``: it keeps the files
        uploaded before, as the browser's does) as the browser does; returns the finished run that
        ``done(run)`` accepts, its new images fetched."""
        request_id = uuid.uuid4().hex
        message = BackMsg()
        message.file_urls_request.request_id = request_id
        message.file_urls_request.file_names.append(picture.name)
        message.file_urls_request.session_id = self.session_id or ""
        await self.socket.send(message.SerializeToString())
        urls = await self._file_urls(request_id, timeout_s)
        data = picture.read_bytes()
        response = await asyncio.to_thread(
            self.http.put, urljoin(self.base + "/", urls.upload_url.lstrip("/")),
            files={"file": (picture.name, data, "image/jpeg")},
            headers={"X-Xsrftoken": self.http.cookies.get(XSRF_COOKIE) or ""}, timeout=timeout_s)
        response.raise_for_status()
        info = UploadedFileInfo(name=picture.name, size=len(data), file_id=urls.file_id, file_urls=urls)
        # the browser's uploader lists every file it holds (one uploader takes several files)
        files = self.uploaded.setdefault(uploader_id, []) if multiple else []
        files.append(info)
        state = WidgetState(id=uploader_id)
        state.file_uploader_state_value.uploaded_file_info.extend(files)
        await self._rerun(widget_states=[state])
        return await self.wait_for_run(done, timeout_s)

    async def wait_for_run(self, done, timeout_s: float) -> Run:
        """Read messages until a run finishes successfully and ``done(run)`` is true; fetch its new images."""
        deadline = time.monotonic() + timeout_s
        run = Run()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no finished run of {self.page_name} that shows what was asked for "
                                   f"after {timeout_s:.0f} s")
            message = ForwardMsg()
            message.ParseFromString(await asyncio.wait_for(self.socket.recv(), remaining))
            kind = message.WhichOneof("type")
            if kind == "new_session":  # a script run starts: the page is redrawn from scratch
                run = Run()
                if message.new_session.HasField("initialize"):
                    self.session_id = message.new_session.initialize.session_id
                if message.new_session.page_script_hash:
                    self.page_hash = message.new_session.page_script_hash
            elif kind == "navigation":
                self._note_page(message)
            elif kind == "delta" and message.delta.WhichOneof("type") == "new_element":
                run.elements.append(message.delta.new_element)
            elif kind == "script_finished":
                run.status = message.script_finished
                if run.status in FINISHED_OK:
                    self.last_run = run
                    if run.exceptions():
                        raise RuntimeError(f"the page raised: {run.exceptions()[0][:200]}")
                    if done(run):
                        await self._fetch_images(run, timeout_s)
                        return run

    def _note_page(self, message) -> None:
        for page in message.navigation.app_pages:
            if page.url_pathname == self.page_name:
                self.page_hash = page.page_script_hash

    async def _file_urls(self, request_id: str, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = ForwardMsg()
            message.ParseFromString(await asyncio.wait_for(self.socket.recv(), deadline - time.monotonic()))
            if message.WhichOneof("type") == "file_urls_response" and message.file_urls_response.response_id == request_id:
                if message.file_urls_response.error_msg:
                    raise RuntimeError(f"the server refused the upload: {message.file_urls_response.error_msg}")
                return message.file_urls_response.file_urls[0]
        raise TimeoutError("the server never said where to upload the file")

    async def _rerun(self, widget_states: list) -> None:
        message = BackMsg()
        state = message.rerun_script
        state.query_string = ""
        state.page_script_hash = self.page_hash
        state.page_name = self.page_name
        for widget in widget_states:
            state.widget_states.widgets.add().CopyFrom(widget)
        await self.socket.send(message.SerializeToString())

    async def _fetch_images(self, run: Run, timeout_s: float) -> None:
        """GET every image of ``run`` not fetched before, side by side as a browser does (it opens up to 6
        connections to one host), to draw the page."""
        urls = list(dict.fromkeys(image.url for image in run.images() if image.url and image.url not in self.fetched))

        def get(url: str) -> int:
            response = self.http.get(urljoin(self.base + "/", url.lstrip("/")), timeout=timeout_s)
            response.raise_for_status()
            return len(response.content)

        for start in range(0, len(urls), BROWSER_CONNECTIONS):
            batch = urls[start:start + BROWSER_CONNECTIONS]
            sizes = await asyncio.gather(*(asyncio.to_thread(get, url) for url in batch))
            self.fetched.update(batch)
            self.fetched_bytes += sum(sizes)
