"""The load benchmark's protocol client against a live server: what it reads is what the page shows.

``benchmarks/app_load.py --clients protocol`` counts a classroom's uploads with ``protocol_client``; these
tests make sure such a client really uploads through Streamlit's file uploader, waits for the run that
draws the upload's maps, and reads the numbers the library computes for that picture, and that a broken
file comes back as the page's one-sentence warning, not as a traceback.
"""

from __future__ import annotations

import asyncio
import shutil

import pytest
from apphelpers import chosen_models, inspect_captions, scored_captions
from appserver import app_server
from protocol_client import ProtocolClient

from attnviz.paths import SAMPLE_DIR

pytestmark = pytest.mark.slow
PICTURE = sorted((SAMPLE_DIR / "train" / "cat").glob("*.jpg"))[0]  # not in the gallery: nothing cached


async def open_inspect(base: str):
    client = ProtocolClient(base)
    run = await client.open("inspect_image", 300, done=lambda run: len(scored_captions(run)) > 0)
    return client, run, chosen_models(run)


def test_an_upload_through_the_protocol_shows_the_librarys_numbers(tmp_path):
    async def scenario(base: str):
        client, run, names = await open_inspect(base)
        try:
            uploader = run.widgets("file_uploader")[0]
            shown = await client.upload(PICTURE, uploader.id, timeout_s=300, multiple=uploader.multiple_files,
                                        done=lambda run: len(scored_captions(run)) == len(names) and PICTURE.name in run.text())
            map_urls = {image.url for image in shown.images() if image.caption in scored_captions(shown)}
            return names, scored_captions(shown), map_urls, client.fetched
        finally:
            await client.close()

    with app_server(tmp_path / "home") as (base, _):
        names, captions, map_urls, fetched = asyncio.run(scenario(base))
    assert len(names) == 3 and len(captions) == 3
    assert captions == inspect_captions(names, PICTURE.name, PICTURE.read_bytes())
    assert len(map_urls) == 3 and map_urls <= fetched  # the maps' images were downloaded, as a browser does


def test_a_broken_upload_comes_back_as_the_pages_warning(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    shutil.copy(PICTURE, tmp_path / "fine.jpg")

    async def scenario(base: str):
        client, run, _ = await open_inspect(base)
        try:
            uploader = run.widgets("file_uploader")[0]
            return await client.upload(broken, uploader.id, timeout_s=300, multiple=uploader.multiple_files,
                                       done=lambda run: "broken.jpg could not be used" in run.text())
        finally:
            await client.close()

    with app_server(tmp_path / "home") as (base, _):
        shown = asyncio.run(scenario(base))
    assert not shown.exceptions()
    warning = next(e.alert.body for e in shown.elements if e.WhichOneof("type") == "alert" and "broken.jpg" in e.alert.body)
    assert warning.startswith("broken.jpg could not be used: ") and "Traceback" not in warning
