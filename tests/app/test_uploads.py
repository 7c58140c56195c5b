"""Issue 12: a user's own pictures reach every page that takes uploads, first, none dropped silently,
and pictures of any size and aspect ratio the loader accepts never crash a page."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

UPLOAD_PAGES = {  # page -> (uploader key, pictures it analyses at once)
    "views/inspect_image.py": ("inspect_upload", 8),
    "views/channel_attention.py": ("se_upload", 2),
    "views/lgam.py": ("lgam_upload", 1),
    "views/interflow.py": ("interflow_upload", 1),
}


def _png(size=(40, 30), seed=0) -> bytes:
    array = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _captions(at) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def _upload(at, key: str, files: list[tuple[str, bytes]], multiple: bool):
    values = [(name, data, "image/png") for name, data in files]
    at.file_uploader(key=key).set_value(values if multiple else values[0]).run()
    return at


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
@pytest.mark.parametrize("page", list(UPLOAD_PAGES))
def test_an_upload_replaces_the_gallery_defaults_and_is_analysed(app, page):
    key, limit = UPLOAD_PAGES[page]
    at = app.switch_page(page).run()
    defaults = list(at.multiselect(key=key.replace("_upload", "_gallery")).value)
    assert defaults  # the gallery shows something before anything is uploaded
    files = [(f"mine-{i}.png", _png(seed=i)) for i in range(min(limit, 2))]
    _upload(at, key, files, multiple=limit > 1)
    assert not at.exception, [e.value for e in at.exception]
    captions = " ".join(_captions(at))
    for name, _ in files:
        assert name in captions, f"{name} was not shown on {page}"
    # the gallery's preselected pictures made way for the user's own
    for label in defaults[:limit]:
        assert label not in captions
    # ... and the page says so, since the gallery tab still lists them as picked
    assert any("preselected samples are set aside" in c.value for c in at.caption)


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
@pytest.mark.parametrize("page", list(UPLOAD_PAGES))
@pytest.mark.parametrize("size", [(1, 1), (3000, 2), (2, 2500)])
def test_any_size_and_aspect_ratio_survives(app, page, size):
    key, limit = UPLOAD_PAGES[page]
    at = app.switch_page(page).run()
    _upload(at, key, [(f"odd-{size[0]}x{size[1]}.png", _png(size))], multiple=limit > 1)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert f"odd-{size[0]}x{size[1]}.png" in " ".join(_captions(at))


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
def test_inspect_keeps_every_upload_and_offers_a_choice_past_its_limit(app):
    at = app.switch_page("views/inspect_image.py").run()
    seven = [(f"p{i}.png", _png(seed=i)) for i in range(7)]
    _upload(at, "inspect_upload", seven, multiple=True)
    assert not at.exception
    captions = " ".join(_captions(at))
    assert all(name in captions for name, _ in seven)  # all seven, gallery defaults gone
    assert not any("not analysed now" in i.value for i in at.info)
    ten = [(f"q{i}.png", _png(seed=10 + i)) for i in range(10)]
    _upload(at, "inspect_upload", ten, multiple=True)
    assert not at.exception
    picker = at.multiselect(key="inspect_analyse")
    # the session keeps the earlier seven too (until 'Forget them'), after the ten newer ones
    assert picker.options == [name for name, _ in ten + seven] and picker.value == [name for name, _ in ten[:8]]
    notice = [i.value for i in at.info if "not analysed now" in i.value]
    assert notice and all(name in notice[0] for name in ["q8.png", "q9.png", "p0.png", "p6.png"])
    picker.set_value(["q9.png", "q0.png"]).run()  # the user picks which ones
    captions = " ".join(_captions(at))
    assert "q9.png" in captions and "q1.png" not in captions


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
def test_the_latest_upload_comes_first(app):
    at = app.switch_page("views/channel_attention.py").run()
    _upload(at, "se_upload", [("older.png", _png(seed=1))], multiple=True)
    _upload(at, "se_upload", [("older.png", _png(seed=1)), ("newer.png", _png(seed=2))], multiple=True)
    assert not at.exception
    subheaders = [s.value for s in at.subheader]
    assert any("newer.png" in s and s.index("newer.png") < s.index("older.png") for s in subheaders if "vs" in s), \
        subheaders


def test_class_profile_legend_sits_below_the_axes_not_over_the_title():
    import figures

    fig = figures.profiles_figure(np.random.default_rng(0).random((10, 16)), [f"class {i}" for i in range(10)],
                             title="early: layer1.0 · specialisation 0.79")
    assert fig.layout.legend.y < 0 and fig.layout.legend.yanchor == "top"
    assert fig.layout.title.text.startswith("early")


def test_top_classes_as_html_bars_escape_names_and_order_by_probability():
    import figures

    probs = np.array([0.05, 0.6, 0.1, 0.25])
    html = figures.topk_html({"<b>my run</b>": probs, "resnet20": probs[::-1].copy()}, ["cat", "dog", "<x>", "frog"],
                             ["#c2410c", "#1d4ed8"], k=3)
    assert "<b>my run</b>" not in html and "&lt;b&gt;my run&lt;/b&gt;" in html and "&lt;x&gt;" in html
    first = html[:html.index("resnet20")]
    assert first.index(">dog<") < first.index(">frog<") < first.index("&lt;x&gt;") and ">cat<" not in first
    assert "width:60.0%" in first and ">60%<" in first and "#1d4ed8" in html[html.index("resnet20") - 200:]


def test_deletion_and_insertion_curves_are_one_picture_with_each_model_line_where_its_values_are():
    import io

    import figures
    from PIL import Image

    falling, rising = np.linspace(1.0, 0.0, 33), np.linspace(0.0, 1.0, 33)
    png = figures.curves_png({"red model": falling, "blue model": np.full(33, 1.0)},
                             {"red model": rising, "blue model": np.full(33, 0.0)}, ["#ff0000", "#0000ff"])
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    assert image.shape == (300, 1100, 3)

    def rows_of(color, x):  # rows where the column x holds (nearly) this colour
        return np.nonzero(np.abs(image[:, x] - color).sum(axis=1) < 60)[0]

    red, blue = (255, 0, 0), (0, 0, 255)
    left_mid, right_mid = 300, 850  # inside the deletion and the insertion panel
    # a constant 1.0 is drawn at the top of the plot area, a constant 0.0 at its bottom, and a falling
    # line crosses the middle of the deletion panel between them; the rising one mirrors it
    assert rows_of(blue, left_mid).mean() < rows_of(red, left_mid).mean() < rows_of(blue, right_mid).mean()
    assert abs(rows_of(red, left_mid).mean() - rows_of(red, right_mid).mean()) < 8
    legend = image[266:]  # below the axes: one swatch per model
    assert all((np.abs(legend - color).sum(axis=2) < 60).sum() > 20 for color in (red, blue))


@pytest.mark.slow  # measures every zoo model once (cached on disk afterwards)
def test_zoo_latency_and_sidebar_latency_are_one_measurement(app):
    import services

    at = app.switch_page("views/zoo.py").run()
    assert not at.exception
    report = services.device_report()
    rows = {r["spec"]: r for r in services.zoo_rows_with_costs() if r["source"] == "shipped"}
    assert rows["resnet20"]["cpu_latency_ms"] == report["resnet20_cpu_ms"]
    caption = " ".join(c.value for c in at.sidebar.caption)
    assert f"{report['resnet20_cpu_ms']:.1f} ms" in caption and "median of 20" in caption
    assert any("median of 20" in c.value for c in at.caption)


def _predictions_table(at):
    """The Zoo page's table of predictions on the pictures (the zoo table itself has the models' costs)."""
    return next(frame.value for frame in at.dataframe if "params (M)" not in frame.value.columns)


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
def test_a_picture_given_on_one_page_is_shown_on_every_picture_page_until_forgotten(app):
    at = app.switch_page("views/inspect_image.py").run()
    _upload(at, "inspect_upload", [("mine.png", _png(seed=5))], multiple=True)
    for page in ["views/channel_attention.py", "views/lgam.py", "views/interflow.py", "views/sanity.py",
                 "views/activations.py", "views/zoo.py"]:
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        shown = " ".join(_captions(at)) + " ".join(c.value for c in at.caption)
        assert "mine.png" in shown, f"the picture given on Inspect is missing on {page}"
    # the Zoo page's table: the upload's row, one column per trained model
    import services

    table = _predictions_table(at)
    trained = [r["name"] for r in services.zoo_rows() if r["trained"]]
    assert list(table.columns) == ["model", "test acc %", "mine.png"] and list(table["model"]) == trained
    assert all(" · " in cell and cell.endswith("%") for cell in table["mine.png"])
    # forgotten: every page is back on the gallery's pictures and the uploader is empty again
    at.switch_page("views/lgam.py").run()
    at.button(key="lgam_forget").click().run()
    assert "mine.png" not in " ".join(_captions(at))
    at.switch_page("views/zoo.py").run()
    assert "mine.png" not in _predictions_table(at).columns


@pytest.mark.slow  # runs models (seconds each on 2 shared cores)
def test_activations_page_puts_the_pictures_se_hidden_units_on_the_curve(app):
    at = app.switch_page("views/activations.py").run()
    _upload(at, "act_upload", [("act.png", _png(seed=9))], multiple=False)
    assert not at.exception, [e.value for e in at.exception]
    captions = [c.value for c in at.caption if c.value.startswith("act.png: the ")]
    assert len(captions) >= 2  # the ReLU and the FeLU SE models
    assert any("ReLU gives 0" in c for c in captions) and any("FeLU" in c for c in captions)
    import json

    units = 3 * (16 // 16 + 32 // 16 + 64 // 16)  # SE on ResNet-20, reduction 16: 3 blocks per stage
    markers = [trace for chart in at.get("plotly_chart") for trace in json.loads(chart.proto.spec)["data"]
               if trace.get("mode") == "markers"]
    assert len(markers) >= 2 and all(len(trace["x"]) == units for trace in markers)
