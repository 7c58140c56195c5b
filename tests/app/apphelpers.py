"""Helpers shared by the app tests (imported as a plain module: pytest puts tests/app on sys.path)."""

from __future__ import annotations

import functools
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


@functools.lru_cache(maxsize=16)
def _shipped(name: str):
    from attnviz.checkpoints import load_checkpoint
    from attnviz.paths import SHIPPED_DIR

    return load_checkpoint(SHIPPED_DIR / f"{name}.json")


def inspect_captions(model_names: list[str], picture_name: str, data: bytes) -> list[str]:
    """The captions Inspect writes under each shipped model's default map of an uploaded picture (Grad-CAM
    of the predicted class, with its deletion/insertion scores), computed here with the library: what a
    session must show for that upload, alone or in a crowd."""
    from attnviz.analysis.inspection import inspect_picture, read_picture

    picture = read_picture(picture_name, data)
    captions = []
    for name in model_names:
        model, card = _shipped(name)
        inspection = inspect_picture(model, card, picture.source, scores=True)
        (explanation,), (score,) = inspection.own_maps, inspection.scores
        captions.append(f"{card['class_names'][explanation.target]} · p={explanation.target_prob:.2f} · "
                        f"deletion {score.deletion:.3f} · insertion {score.insertion:.3f}")
    return captions


def scored_captions(run) -> list[str]:
    """The captions under Inspect's scored heat maps in a protocol client's run (``protocol_client.Run``):
    the same captions the browser tests count."""
    return [image.caption for image in run.images() if "deletion" in image.caption and "p=" in image.caption]


def chosen_models(run) -> list[str]:
    """The model names chosen in the sidebar's picker of a protocol client's run (its labels read
    "name · accuracy")."""
    from protocol_client import chosen

    picker = next((m for m in run.widgets("multiselect") if m.label.startswith("Models to compare")), None)
    return [] if picker is None else [label.split(" · ")[0] for label in picker.raw_values][:chosen(picker)]
