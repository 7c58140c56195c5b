"""Every page of the app through `streamlit.testing.v1.AppTest`: it renders, widgets drive results, bad
input becomes one sentence, models load once, display-only settings run no model."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from apphelpers import ENTRY, PAGES, image_urls
from PIL import Image


def _png(color=(200, 30, 30), size=(48, 40)) -> bytes:
    buffer = io.BytesIO()
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[..., :] = color
    array[size[1] // 4: size[1] // 2, size[0] // 3: size[0] // 2] = (250, 250, 250)
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _run_page(at, page: str):
    """Open ``page`` directly (the first run of a session goes straight there, as a deep link does)."""
    at.switch_page(page).run()
    return at


# pages that run models take several seconds each on 2 shared cores: slow (CI runs them)
_FAST_PAGES = {"views/activations.py", "views/train.py"}


@pytest.mark.parametrize("page", [p if p in _FAST_PAGES else pytest.param(p, marks=pytest.mark.slow) for p in PAGES])
def test_every_page_renders_without_errors(app, page):
    at = _run_page(app, page)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title and at.title[0].value
    # the shared sidebar: the model choice and the device line
    assert at.sidebar.multiselect(key="models").value
    assert any("GFLOP/s" in c.value for c in at.sidebar.caption)
    # every chart has a caption saying what to look at
    charts = at.get("plotly_chart")
    if charts:
        assert len(at.caption) >= 1


def test_a_bad_heap_trim_setting_is_one_sidebar_sentence_and_the_default_is_used(app, monkeypatch):
    from services.models import heap_trimmer

    monkeypatch.setenv("ATTNVIZ_TRIM_SECONDS", "soon")
    heap_trimmer.clear()  # started once per process: this session starts it again, with the bad value
    try:
        at = _run_page(app, "views/activations.py")
        assert not at.exception, [e.value for e in at.exception]
        warnings = [w.value for w in at.sidebar.warning if "ATTNVIZ_TRIM_SECONDS" in w.value]
        assert len(warnings) == 1 and "'soon'" in warnings[0] and "every 30 s" in warnings[0], warnings
    finally:
        heap_trimmer.clear()


def test_model_choice_is_in_the_url_and_holds_across_pages(app):
    import services

    rows = services.zoo_rows()
    wanted = [rows[-1]["id"], rows[0]["id"]]
    app.query_params["models"] = wanted
    app.switch_page("views/activations.py").run()
    assert app.sidebar.multiselect(key="models").value == wanted
    app.sidebar.multiselect(key="models").set_value(wanted[:1]).run()
    assert app.query_params["models"] in (wanted[:1], wanted[0])
    for page in ("views/train.py", "views/activations.py"):
        app.switch_page(page).run()
        assert not app.exception
        assert app.sidebar.multiselect(key="models").value == wanted[:1]


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
def test_zoo_says_plainly_when_no_weights_are_shipped(app):
    import services

    app.switch_page("views/zoo.py").run()
    rows = services.zoo_rows()
    warnings = " ".join(w.value for w in app.warning)
    if any(r["source"] == "shipped" for r in rows):
        assert "No trained weights are shipped" not in warnings
    else:
        assert "No trained weights are shipped" in warnings
        assert all(r["test_acc"] is None for r in rows if r["source"] == "untrained")
    # the zoo table exists and counts were measured
    frame = app.dataframe[0].value
    assert len(frame) >= 1
    assert frame["params (M)"].notna().all() and frame["CPU ms"].notna().all()
    # what a model is and is worth comes first, and every shipped row says where it stands against the zoo's bar
    assert list(frame.columns)[:5] == ["model", "source", "test acc %", "epochs", "zoo recipe"]
    shipped = {r["name"] for r in rows if r["source"] == "shipped"}
    assert all(text for name, text in zip(frame["model"], frame["zoo recipe"], strict=True) if name in shipped)


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
def test_inspect_method_change_redraws_the_grid_and_recomputes(app):
    import services

    at = _run_page(app, "views/inspect_image.py")
    assert not at.exception
    before = image_urls(at)
    explains = services.COMPUTE_COUNTS["explain"]
    at.selectbox(key="inspect_method").set_value("saliency").run()
    assert not at.exception
    after = image_urls(at)
    assert len(after) == len(before) > 0
    assert set(after) != set(before)  # new maps
    assert services.COMPUTE_COUNTS["explain"] > explains  # computed, not cached


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
def test_adding_a_picture_computes_that_picture_alone(app):
    import services

    at = _run_page(app, "views/inspect_image.py")
    models = len(at.multiselect(key="models").value)
    gallery = at.multiselect(key="inspect_gallery")
    fresh = [label for label in gallery.options if label not in gallery.value][-1]  # not yet computed
    counts = dict(services.COMPUTE_COUNTS)
    gallery.set_value([*gallery.value, fresh]).run()
    assert not at.exception
    # one heat map and one faithfulness score per model for the new picture; the others come from the cache
    assert services.COMPUTE_COUNTS["explain"] - counts.get("explain", 0) == models
    assert services.COMPUTE_COUNTS["faithfulness"] - counts.get("faithfulness", 0) == models


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
def test_display_only_settings_run_no_model(app):
    import services

    at = _run_page(app, "views/inspect_image.py")
    counts = dict(services.COMPUTE_COUNTS)
    before = image_urls(at)
    cmaps = [c for c in ("viridis", "inferno", "magma") if c != at.selectbox(key="inspect_cmap").value]
    at.selectbox(key="inspect_cmap").set_value(cmaps[0]).run()
    at.slider(key="inspect_opacity").set_value(0.8).run()
    assert not at.exception
    assert dict(services.COMPUTE_COUNTS) == counts  # no probe, explain or faithfulness call
    assert set(image_urls(at)) != set(before)  # but the pictures did change


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
def test_bad_upload_shows_one_sentence_and_the_rest_still_works(app):
    at = _run_page(app, "views/inspect_image.py")
    at.file_uploader(key="inspect_upload").set_value([
        ("notes.png", b"this is a text file, not a picture", "image/png"),
        ("square.png", _png(), "image/png"),
    ]).run()
    assert not at.exception
    messages = [w.value for w in at.warning if "could not be used" in w.value]
    assert len(messages) == 1
    assert messages[0].startswith("notes.png could not be used:")
    assert "Traceback" not in messages[0] and messages[0].count(".") <= 3
    # the gallery pictures and the good upload still get predictions and maps
    captions = [c for e in at.get("image") for c in [img.caption for img in e.proto.imgs]]
    assert "square.png" in captions


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
def test_each_model_is_loaded_once_per_process(app):
    import services
    from streamlit.testing.v1 import AppTest

    _run_page(app, "views/inspect_image.py")
    chosen = app.sidebar.multiselect(key="models").value
    second = AppTest.from_file(ENTRY, default_timeout=240)
    _run_page(second, "views/inspect_image.py")
    second.selectbox(key="inspect_method").set_value("gradcam++").run()
    assert not second.exception
    assert chosen and all(services.LOAD_COUNTS[model_id] == 1 for model_id in chosen)


def test_activations_range_and_choice_drive_the_curves(app):
    at = _run_page(app, "views/activations.py")
    table = at.dataframe[0].value
    relu = table[table["activation"] == "ReLU"].iloc[0]
    assert abs(relu["share of the range with f'(x) = 0"] - 0.5) < 0.01  # [-5, 5]: the left half is flat
    at.slider(key="act_range").set_value((-2.0, 8.0)).run()
    relu = at.dataframe[0].value.set_index("activation").loc["ReLU"]
    assert abs(relu["share of the range with f'(x) = 0"] - 0.2) < 0.01
    felu = at.dataframe[0].value.set_index("activation").loc["FeLU"]
    assert felu["share of the range with f'(x) = 0"] == 0.0
    metrics = {m.label: m.value for m in at.metric}
    assert abs(float(metrics["FeLU minimum at x"]) - np.log(np.sqrt(2) - 1)) < 1e-3


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
def test_se_page_compares_two_pictures_and_counts_dead_units(app):
    at = _run_page(app, "views/channel_attention.py")
    assert not at.exception
    assert len(at.multiselect(key="se_gallery").value) == 2
    subheaders = [s.value for s in at.subheader]
    assert any(" vs " in s for s in subheaders)
    assert any("dead" in m.value for m in at.metric)


def test_train_form_rejects_bad_archives_with_one_sentence(app):
    at = _run_page(app, "views/train.py")
    at.radio(key="train_dataset").set_value("upload")
    at.file_uploader(key="train_zip").set_value(("images.zip", b"PK\x03\x04 not really a zip", "application/zip"))
    form_buttons = [b for b in at.button if b.label == "Start training"]
    form_buttons[0].click().run()
    assert not at.exception
    assert any("not a readable zip archive" in e.value for e in at.error)

    one_class = io.BytesIO()
    with zipfile.ZipFile(one_class, "w") as archive:
        archive.writestr("cats/a.png", _png())
        archive.writestr("cats/b.png", _png((10, 200, 10)))
    at.file_uploader(key="train_zip").set_value(("cats.zip", one_class.getvalue(), "application/zip"))
    [b for b in at.button if b.label == "Start training"][0].click().run()
    assert any("at least two are needed" in e.value for e in at.error)

    escaping = io.BytesIO()
    with zipfile.ZipFile(escaping, "w") as archive:
        archive.writestr("../evil/a.png", _png())
        archive.writestr("dogs/b.png", _png())
    at.file_uploader(key="train_zip").set_value(("evil.zip", escaping.getvalue(), "application/zip"))
    [b for b in at.button if b.label == "Start training"][0].click().run()
    assert any("outside its folder" in e.value for e in at.error)
    assert not at.exception
