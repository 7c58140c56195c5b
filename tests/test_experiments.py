"""The studies of ``attnviz.experiments``: metrics by hand, reports' structure, resume, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attnviz.experiments import list_reports, run_study
from attnviz.experiments.metrics import compare_to_reference, felu_metrics, pointing_hit, pooled_std
from attnviz.experiments.readings import activations_reading

# ---------------------------------------------------------------------------------------------
# metrics A-D, worked by hand


def test_felu_metrics_hand_worked_example():
    # Two runs, three iterations (the paper: 5 runs, 100 iterations; the definitions do not depend on it).
    train = [[0.80, 0.90, 0.85],
             [0.70, 0.95, 0.99]]
    val = [[0.60, 0.70, 0.65],
           [0.50, 0.80, 0.72]]
    # A: mean over runs of the last iteration's validation accuracy = (0.65 + 0.72) / 2
    # B: mean training accuracy per iteration = [0.75, 0.925, 0.92] -> highest at t* = 1 (0-based);
    #    mean validation accuracy there = (0.70 + 0.80) / 2 = 0.75. (Run 2's own best training
    #    accuracy is at t = 2, so a per-run reading would give something else: the mean matters.)
    # C: best run's last-iteration validation accuracy = max(0.65, 0.72)
    # D: best validation accuracy of any run at any iteration = 0.80
    m = felu_metrics(train, val)
    assert m["A"] == pytest.approx(0.685)
    assert m["t_star"] == 1
    assert m["B"] == pytest.approx(0.75)
    assert m["C"] == pytest.approx(0.72)
    assert m["D"] == pytest.approx(0.80)
    assert m["B_peak_of_mean"] == pytest.approx(0.75)  # mean val curve [0.55, 0.75, 0.685]
    assert (m["runs"], m["iterations"]) == (2, 3)


def test_felu_metrics_ties_go_to_the_first_iteration_and_c_never_exceeds_d():
    train = [[0.9, 0.9, 0.8]]
    val = [[0.5, 0.7, 0.6]]
    m = felu_metrics(train, val)
    assert m["t_star"] == 0 and m["B"] == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        t, v = rng.random((5, 7)), rng.random((5, 7))
        m = felu_metrics(t, v)
        assert m["A"] <= m["C"] <= m["D"]


def test_felu_metrics_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        felu_metrics([[0.1, 0.2]], [[0.1, 0.2, 0.3]])


def test_spread_comparison_by_hand():
    reference = [5.0, 6.0, 7.0]
    # pooled std of [1,2,3] and [5,6,7]: sqrt((2 + 2) / 4) = 1; delta -4 -> exceeds 2 x 1
    # pooled std of [5,7,9] and [5,6,7]: sqrt((8 + 2) / 4) = 1.581; delta +1 -> does not
    assert pooled_std([1, 2, 3], reference) == pytest.approx(1.0)
    rows = {r["group"]: r for r in compare_to_reference({"ref": reference, "low": [1, 2, 3], "wide": [5, 7, 9]}, "ref")}
    assert rows["low"]["delta"] == pytest.approx(-4.0) and rows["low"]["exceeds"]
    assert rows["wide"]["pooled_std"] == pytest.approx(np.sqrt(2.5)) and not rows["wide"]["exceeds"]


def test_pointing_hit():
    heat = np.zeros((8, 8))
    heat[5, 6] = 1.0
    assert pointing_hit(heat, (4, 4, 4, 4))
    assert not pointing_hit(heat, (0, 0, 4, 4))
    assert pointing_hit(heat, (0, 0, 4, 5), tolerance=2)
    assert pointing_hit(np.zeros((8, 8)), (0, 0, 4, 4))  # flat map: argmax is the top-left pixel


def _cell(a: float, finals: list[float]) -> dict:
    return {"A": a, "final_val_accs": finals, "dead_relu_final": 0.5, "dead_gradient_final": 0.0,
            "dead_gradient_max": 0.0}


def test_activations_reading_does_not_overclaim():
    within = {"digits": {"normalised": {"felu": _cell(97.1, [97.0, 97.2, 97.1]),
                                        "relu": _cell(97.0, [96.9, 97.2, 96.9])}}}
    text = activations_reading(within, ["relu", "felu"])
    assert "do not separate" in text and "1 of 1" in text
    apart = {"digits": {"normalised": {"felu": _cell(98.0, [98.0, 98.1, 97.9]),
                                       "relu": _cell(95.0, [95.0, 95.1, 94.9])}}}
    text = activations_reading(apart, ["relu", "felu"])
    assert "relu below FeLU on digits/normalised" in text


def test_modules_reading_names_runs_that_stalled_near_chance():
    from attnviz.experiments.modules import summarise
    from attnviz.experiments.readings import modules_reading

    def runs(spec, accs):
        return [{"spec": spec, "test_acc": a, "params": 1, "flops": 1, "train_s_per_epoch": 1.0,
                 "inference_s_per_epoch": 0.1, "history": []} for a in accs]

    healthy = summarise({"none": runs("resnet20", [0.45, 0.44, 0.46]), "lgam": runs("resnet20-lgam", [0.44, 0.45, 0.46])})
    assert "did not train" not in modules_reading(healthy, data_label="x", epochs=10)
    stalled = summarise({"none": runs("resnet20", [0.45, 0.44, 0.46]), "lgam": runs("resnet20-lgam", [0.126, 0.33, 0.156])})
    text = modules_reading(stalled, data_label="x", epochs=10)
    assert "did not train: lgam 2 of 3" in text  # 87.4% and 84.4% error are within 10 points of 90%
    ablated = summarise({"none": runs("resnet20", [0.45, 0.44, 0.46]), "lgam": runs("resnet20-lgam", [0.126, 0.33, 0.156]),
                         "lgam-noladder": runs("resnet20-lgam:ladder=false", [0.41, 0.40, 0.42])})
    text = modules_reading(ablated, data_label="x", epochs=10)
    assert "LGAM as the paper defines it: 2 of 3 runs stalled" in text
    assert "without the ladder of eq. (4): 0 of 3 runs stalled, error 59.00 ± 1.00%" in text


def test_reading_for_regenerates_from_numbers_and_falls_back_to_the_stored_text():
    from attnviz.experiments.readings import reading_for

    summary = {"digits": {"normalised": {"felu": _cell(98.0, [98.0, 98.1, 97.9]),
                                         "relu": _cell(95.0, [95.0, 95.1, 94.9])}}}
    report = {"study": "activations", "reading": "stored", "results": {"summary": summary},
              "metadata": {"budget_detail": {"activations": "relu, felu"}}}
    assert "relu below FeLU" in reading_for(report)
    assert reading_for({"study": "modules", "reading": "stored", "results": {}, "metadata": {}}) == "stored"


# ---------------------------------------------------------------------------------------------
# studies at the tiny budget


def _check_report(path: Path, study: str, budget: str = "tiny") -> dict:
    assert path == path.parent / "report.json" and path.parent.name == study
    report = json.loads(path.read_text())
    assert report["study"] == study and report["format"] == 1
    meta = report["metadata"]
    for key in ("commit", "dirty", "device", "seeds", "budget", "budget_detail", "wall_time_s", "compute_time_s",
                "versions", "units", "units_reused", "units_computed", "command"):
        assert key in meta, key
    assert meta["budget"] == budget and meta["wall_time_s"] > 0
    assert {"attnviz", "torch"} <= meta["versions"].keys()
    assert isinstance(report["reading"], str) and len(report["reading"]) > 40
    for table in report["tables"]:
        assert table["rows"], table["id"]
        assert all(len(row) == len(table["columns"]) for row in table["rows"])
    for plot in report["plots"]:
        png = path.parent / plot["file"]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (path.parent / "report.md").read_text()
    assert report["title"] in markdown and "| " in markdown
    return report


@pytest.mark.slow
def test_activations_tiny_report_and_resume(tmp_path):
    path = run_study("activations", "tiny", tmp_path)
    report = _check_report(path, "activations")
    meta = report["metadata"]
    assert meta["units_computed"] == meta["units"] == 16 and meta["units_reused"] == 0
    tables = {t["id"]: t for t in report["tables"]}
    assert {"digits-normalised", "digits-standardised", "cifar10-normalised", "cifar10-standardised"} <= tables.keys()
    digits = tables["digits-normalised"]
    assert digits["paper"]["rows"][0][0] == "relu" and digits["paper"]["rows"][0][1] == 97.42  # FeLU table 1
    assert [row[0] for row in digits["rows"]] == ["relu", "felu"]
    for row in digits["rows"]:
        a, b, c, d = row[1:5]
        assert 0 <= a <= c <= d <= 100 and b <= d
    summary = report["results"]["summary"]["digits"]["normalised"]["relu"]
    assert len(summary["dead_gradient_curve"]) == 3 and 0 <= summary["dead_relu_final"] <= 1  # init + 2 epochs
    assert any("MNIST" in note for note in report["notes"])

    # A rerun reuses every finished unit and rewrites the same numbers.
    again = json.loads(run_study("activations", "tiny", tmp_path).read_text())
    assert again["metadata"]["units_reused"] == 16 and again["metadata"]["units_computed"] == 0
    assert again["tables"] == report["tables"]
    # An interrupted run (one unit missing) recomputes only that unit.
    units = sorted((tmp_path / "activations" / "units" / "tiny").glob("*.json"))
    units[0].unlink()
    third = json.loads(run_study("activations", "tiny", tmp_path).read_text())
    assert third["metadata"]["units_computed"] == 1 and third["metadata"]["units_reused"] == 15
    assert third["tables"] == report["tables"]  # deterministic: the recomputed unit gives the same numbers


@pytest.mark.slow
def test_modules_tiny_report(tmp_path):
    report = _check_report(run_study("modules", "tiny", tmp_path), "modules")
    modules = report["results"]["modules"]
    assert set(modules) == {"none", "se", "se-felu"}
    for entry in modules.values():
        assert entry["seeds"] == 3 and len(entry["errors"]) == 3
        assert entry["params"] > 0 and entry["flops"] > 0 and entry["train_s_per_epoch"] > 0
    assert modules["se"]["params"] > modules["none"]["params"]
    comparisons = report["results"]["comparisons"]
    assert {(c["group"], c["reference"]) for c in comparisons} == {("se", "none"), ("se-felu", "none"), ("se-felu", "se")}
    assert {t["id"] for t in report["tables"]} == {"errors", "differences"}
    assert report["tables"][0]["paper"]["rows"]  # LGAM / FeLU tables beside ours
    assert not list((tmp_path / "modules" / ".work" / "tiny").glob("*.safetensors"))  # checkpoints cleaned up


@pytest.mark.slow
def test_interflow_tiny_report(tmp_path):
    report = _check_report(run_study("interflow", "tiny", tmp_path), "interflow")
    variants = report["results"]["resnet20"]
    assert set(variants) == {"hard-equal", "hard-deep", "soft", "per_class"}
    assert variants["hard-deep"]["final_weights"] == pytest.approx([0.1, 0.3, 0.6])
    assert variants["hard-equal"]["final_weights"] == pytest.approx([1 / 3] * 3)
    assert len(variants["per_class"]["final_weights"]) == 3 and len(variants["per_class"]["final_weights"][0]) == 10
    for entry in variants.values():
        assert len(entry["branch_acc"]) == 3 and all(0 <= a <= 100 for a in entry["branch_acc"])
    soft = variants["soft"]
    assert len(soft["weights_over_training"]) == 2 and len(soft["weights_over_training"][0]) == 3
    assert soft["final_weights"] != pytest.approx([1 / 3] * 3, abs=1e-6)  # the weights did learn
    assert "claims" in soft and "claims" not in variants["hard-equal"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from attnviz.data import load_dataset
    from attnviz.training import Recipe, train

    out = tmp_path_factory.mktemp("ckpt")
    data = load_dataset("sample").subset(8, 4)
    train("resnet20-cbam", data, Recipe(epochs=1, batch_size=64, probe_size=16), out_dir=out, name="tiny-cbam")
    return out


@pytest.mark.slow
def test_faithfulness_tiny_report(tmp_path, tiny_checkpoint):
    from attnviz.experiments import faithfulness

    path = faithfulness.run("tiny", tmp_path, None, checkpoint_dirs=[tiny_checkpoint])
    report = _check_report(path, "faithfulness")
    kinds = report["results"]["tiny-cbam"]["kinds"]
    assert set(kinds) == {"gradcam", "gradcam++", "saliency", "module mask", "random", "centre"}
    for row in kinds.values():
        assert row["n"] == 20 and row["n_pointing"] == 10
        assert 0 <= row["deletion"] <= 1 and 0 <= row["insertion"] <= 1 and 0 <= row["pointing"] <= 1
    assert "deletion_vs_gradcam" in kinds["random"] and "deletion_vs_random" in kinds["gradcam"]


def test_faithfulness_without_checkpoints_says_so(tmp_path):
    from attnviz.experiments import faithfulness

    empty = tmp_path / "none"
    empty.mkdir()
    report = json.loads(faithfulness.run("tiny", tmp_path / "out", None, checkpoint_dirs=[empty]).read_text())
    assert any("No CIFAR-10 checkpoint" in note for note in report["notes"])
    assert "nothing was measured" in report["reading"]


def test_grid_pointing_set_places_the_target_in_its_box():
    from attnviz.experiments.faithfulness import pointing_set

    images = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 4, 4).contiguous()
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    mosaics, boxes, present = pointing_set(images, labels, seed=3)
    assert mosaics.shape == (8, 3, 8, 8)
    for i, ((top, left, h, w), classes) in enumerate(zip(boxes, present, strict=True)):
        assert classes[0] == i and len(set(classes)) == 4
        assert torch.all(mosaics[i, :, top:top + h, left:left + w] == i)  # the target image is in its box
        assert sorted(torch.unique(mosaics[i]).tolist()) == sorted(classes)  # four images, four classes


# ---------------------------------------------------------------------------------------------
# the CLI and report discovery


def test_cli_list_and_bad_arguments(capsys):
    from attnviz.cli import main

    assert main(["experiment", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("activations", "modules", "interflow", "faithfulness"):
        assert name in out
    for argv in (["experiment", "run", "nope"], ["experiment", "run", "activations", "--budget", "huge"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1


@pytest.mark.slow
def test_cli_runs_a_study_and_prints_the_report_path(tmp_path, capsys):
    from attnviz.cli import main

    assert main(["experiment", "run", "activations", "--budget", "tiny", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "activations" / "report.json")
    _check_report(tmp_path / "activations" / "report.json", "activations")


def test_list_reports_finds_reports_and_skips_broken_ones(tmp_path):
    from attnviz.experiments import faithfulness

    empty = tmp_path / "none"
    empty.mkdir()
    faithfulness.run("tiny", tmp_path, None, checkpoint_dirs=[empty])
    broken = tmp_path / "modules"
    broken.mkdir()
    (broken / "report.json").write_text("{not json")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "report.json").write_text(json.dumps({"hello": 1}))
    found = list_reports([tmp_path])
    assert [r["study"] for r in found] == ["faithfulness"]
    assert found[0]["_dir"] == str(tmp_path / "faithfulness")


@pytest.mark.slow
def test_experiments_page_renders_every_report(tmp_path, monkeypatch):
    import sys

    from streamlit.testing.v1 import AppTest

    app_dir = Path(__file__).resolve().parents[1] / "app"
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    run_study("activations", "tiny", tmp_path)
    monkeypatch.setenv("ATTNVIZ_REPORTS", str(tmp_path))
    at = AppTest.from_file(str(app_dir / "streamlit_app.py"), default_timeout=240)
    at.run()
    at.switch_page("views/experiments.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Experiments"
    assert any(tab.label.startswith("Activations in the SE excitation") for tab in at.tabs)
    markdown = " ".join(m.value for m in at.markdown)
    assert "**Reading.**" in markdown and "**The paper** — FeLU paper table 1" in markdown
    assert len(at.dataframe) >= 8  # 4 tables of ours + 4 of the paper's
    assert sum(len(e.proto.imgs) for e in at.get("image")) >= 2  # the two PNG plots of the study


def test_git_commit_dirty_ignores_the_reports_folder(tmp_path):
    import subprocess

    from attnviz.experiments.base import git_commit

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "reports").mkdir()
    (tmp_path / "code.py").write_text("a = 1\n")
    (tmp_path / "reports" / "report.md").write_text("old\n")
    git("add", "-A")
    git("commit", "-qm", "init")
    assert git_commit(tmp_path)["dirty"] is False
    (tmp_path / "reports" / "report.md").write_text("rewritten by the study\n")
    assert git_commit(tmp_path)["dirty"] is False  # a report rewriting itself is not a code change
    (tmp_path / "code.py").write_text("a = 2\n")
    assert git_commit(tmp_path)["dirty"] is True
