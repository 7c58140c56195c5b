"""``attnviz inspect`` end to end on checkpoints written by the test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnviz.checkpoints import save_checkpoint
from attnviz.cli import main
from attnviz.models.registry import create_model

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("inspect")
    torch.manual_seed(0)
    model = create_model("resnet20-se-interflow-soft", num_classes=10)
    card = {"class_names": CLASSES, "input_size": [32, 32], "in_chans": 3, "dataset": "test",
            "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
    checkpoint = save_checkpoint(model, root / "ckpt", "se_interflow", card)
    grey = create_model("resnet20-lgam", num_classes=3, in_chans=1)
    grey_checkpoint = save_checkpoint(grey, root / "ckpt", "grey_lgam",
                                      {"class_names": ["a", "b", "c"], "input_size": [28, 28], "in_chans": 1,
                                       "mean": [0.5], "std": [0.25]})
    rng = np.random.default_rng(0)
    photo = root / "photo.png"
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(photo)
    second = root / "second.jpg"
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(second, quality=90)
    bad = root / "notes.png"
    bad.write_text("this is not a picture\n")
    return {"root": root, "checkpoint": checkpoint, "grey": grey_checkpoint, "photo": photo,
            "second": second, "bad": bad}


def test_text_output_pngs_and_a_bad_image(workspace, capsys):
    out = workspace["root"] / "out"
    code = main(["inspect", str(workspace["photo"]), str(workspace["bad"]), str(workspace["second"]),
                 "--model", str(workspace["checkpoint"]), "--out", str(out), "--target", "cat"])
    captured = capsys.readouterr()
    assert code == 2  # one image failed
    assert captured.err.strip().splitlines() == [f"error: {workspace['bad']}: this is a text file, not an image"]
    # the images after the bad one were still processed
    assert str(workspace["photo"]) in captured.out and str(workspace["second"]) in captured.out
    assert "top-3:" in captured.out
    assert "layer1.0.attn [se] channel weights mean" in captured.out
    assert "head [interflow] soft branch weights 0.333 0.333 0.333" in captured.out
    assert "gradcam at layer3 for 'cat'" in captured.out and "gradcam branch 2 at layer2 for 'cat'" in captured.out
    pngs = sorted(p.name for p in out.glob("photo__*.png"))
    assert pngs == ["photo__se_interflow__gradcam.png"] + [f"photo__se_interflow__gradcam__branch{i}.png" for i in (1, 2, 3)]
    # overlays are drawn on the full-resolution original
    assert Image.open(out / "photo__se_interflow__gradcam.png").size == (80, 60)


def test_json_document(workspace, capsys):
    code = main(["inspect", str(workspace["photo"]), str(workspace["bad"]), "--model", str(workspace["checkpoint"]),
                 "--model", str(workspace["grey"]), "--json", "--topk", "4", "--target", "1", "--method", "layercam"])
    captured = capsys.readouterr()
    assert code == 2
    document = json.loads(captured.out)
    assert document["method"] == "layercam"
    assert [m["name"] for m in document["models"]] == ["se_interflow", "grey_lgam"]
    assert document["errors"] == [{"file": str(workspace["bad"]), "error": "this is a text file, not an image"}]
    (image,) = document["images"]
    assert image["size"] == [80, 60]
    colour, grey = image["models"]
    probs = [p["prob"] for p in colour["predictions"]]
    assert len(probs) == 4 and probs == sorted(probs, reverse=True)
    assert all(p["name"] == CLASSES[p["class"]] for p in colour["predictions"])
    assert {c["target"] for c in colour["cams"]} == {1}
    assert {c["target_name"] for c in grey["cams"]} == {"b"}
    assert [c["branch"] for c in colour["cams"]] == [None, 0, 1, 2]
    kinds = [site["kind"] for site in colour["attention"]]
    assert kinds == ["se"] * 9 + ["interflow"]
    assert len(grey["predictions"]) == 3  # only 3 classes
    lgam = grey["attention"][0]
    assert lgam["kind"] == "lgam" and lgam["spatial"]["shape"] == [1, 28, 28]  # the grey card's 28x28 input


def test_all_good_images_exit_zero_and_spec_models_are_flagged(workspace, capsys):
    code = main(["inspect", str(workspace["second"]), "--model", "resnet32-eca", "--target", "2"])
    captured = capsys.readouterr()
    assert code == 0
    assert "resnet32-eca (untrained)" in captured.out
    assert "untrained" in captured.err and "error" not in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no_such_model_or_spec"], "neither a checkpoint"),
        (["--target", "zebra"], "not a class index"),
        (["--target", "10"], "out of range"),
        (["--method", "magic"], "unknown explanation method"),
    ],
)
def test_argument_errors_are_one_line(workspace, capsys, args, message):
    if "--model" not in args:
        args = args + ["--model", str(workspace["checkpoint"])]
    code = main(["inspect", str(workspace["second"]), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_pickle_checkpoints_are_refused(workspace, capsys):
    unsafe = workspace["root"] / "model.pt"
    unsafe.write_bytes(b"\x80\x02not really")
    code = main(["inspect", str(workspace["second"]), "--model", str(unsafe)])
    assert code == 2 and "pickle" in capsys.readouterr().err


@pytest.mark.slow
def test_console_entry_point(workspace, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "attnviz", "inspect", str(workspace["second"]), str(workspace["bad"]),
         "--model", str(workspace["checkpoint"]), "--json"],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 2
    assert result.stderr.strip().endswith(f"error: {workspace['bad']}: this is a text file, not an image")
    assert json.loads(result.stdout)["images"][0]["file"] == str(workspace["second"])
