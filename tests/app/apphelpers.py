"""Helpers shared by the app tests (imported as a plain module: pytest puts tests/app on sys.path)."""

from __future__ import annotations

import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[2] / "app"
ENTRY = str(APP_DIR / "streamlit_app.py")
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))

PAGES = ["views/zoo.py", "views/inspect_image.py", "views/sanity.py", "views/channel_attention.py", "views/lgam.py",
         "views/interflow.py", "views/activations.py", "views/train.py", "views/about.py"]


def image_urls(at) -> list[str]:
    """Media URLs of every st.image in the page (a URL is derived from the image's bytes)."""
    urls = []
    for element in at.get("image"):
        urls += [img.url for img in element.proto.imgs]
    return urls
