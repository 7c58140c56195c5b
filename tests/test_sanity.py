"""attnviz.analysis.sanity: the metrics by hand, the randomisation order, what each step may and may not change, the
shared model left bit-identical, determinism, the CLI and the study."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from attnviz import load_checkpoint
from attnviz.analysis.sanity import (
    randomisation_steps,
    randomisation_test,
    rank_correlations,
    reinitialise,
    spearman,
    ssim,
)
from attnviz.cli import main
from attnviz.data import load_dataset, preprocess
from attnviz.errors import AttnvizError


@pytest.fixture(scope="module")
def sample():
    return load_dataset("sample")


def _load(name, sample, per_class=1, count=4):
    model, card = load_checkpoint(name)
    model.requires_grad_(False)
    subset = sample.subset(test_per_class=per_class)
    return model, preprocess(subset.test_images[:count], card["mean"], card["std"])


# ---------------------------------------------------------------------------------------- metrics
def test_spearman_by_hand():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a**3) == pytest.approx(1.0)  # any increasing transform
    assert spearman(a, -a) == pytest.approx(-1.0)
    # ties get average ranks: ranks of [1, 2, 2, 3] are [0, 1.5, 1.5, 3]
    tied = np.array([1.0, 2.0, 2.0, 3.0])
    ranks = np.array([0.0, 1.5, 1.5, 3.0])
    expected = np.corrcoef(ranks, np.arange(4.0))[0, 1]
    assert spearman(tied, np.arange(4.0)) == pytest.approx(expected)
    assert math.isnan(spearman(np.ones(5), a))  # a constant map ranks nothing
    with pytest.raises(AttnvizError):
        spearman(a, a[:3])
    rows = rank_correlations(np.stack([a, a]), np.stack([a, -a]))
    assert rows.tolist() == pytest.approx([1.0, -1.0])


def test_ssim_by_hand():
    rng = np.random.default_rng(0)
    x = rng.random((32, 32))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    noisy = np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1)
    assert 0 < ssim(x, noisy) < 0.9
    assert ssim(x, 1 - x) < 0  # inverted structure
    assert ssim(x, noisy) == pytest.approx(ssim(noisy, x))  # symmetric


# ----------------------------------------------------------------------------------- randomisation
def test_order_is_from_the_logits_down(sample):
    model, _ = _load("resnet20-se", sample)
    assert randomisation_steps(model) == [("head", ["head"]), ("layer3", ["layer3"]), ("layer2", ["layer2"]),
                                          ("layer1", ["layer1"]), ("stem", ["stem"])]
    blocks = [label for label, _ in randomisation_steps(model, "block")]
    assert blocks == ["head", "layer3.2", "layer3.1", "layer3.0", "layer2.2", "layer2.1", "layer2.0", "layer1.2",
                      "layer1.1", "layer1.0", "stem"]
    vgg, _ = _load("vgg16-interflow-soft", sample)
    assert [label for label, _ in randomisation_steps(vgg)] == ["head", "layer4", "layer3", "layer2", "layer1"]  # no stem weights
    with pytest.raises(AttnvizError, match="granularity"):
        randomisation_steps(model, "layer")


def test_reinitialise_is_seeded_and_differs_from_the_training_init(sample):
    model, _ = _load("resnet20-se", sample)
    import copy

    a, b, c = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    reinitialise(a, ["layer2"], seed=0)
    reinitialise(b, ["layer2"], seed=0)
    reinitialise(c, ["layer2"], seed=1)
    state = model.state_dict()
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])  # same seed, same weights
        if key.startswith("layer2.") and value.dim() >= 2:  # conv and linear weights (BN starts at 1 / 0)
            assert not torch.equal(value, c.state_dict()[key]), key  # another seed, other weights
        if not key.startswith("layer2."):
            assert torch.equal(value, state[key]), key  # nothing else moved
    # the SE excitation weights are re-drawn, not restored to what training started from (seed 0)
    from attnviz.models.registry import create_model

    torch.manual_seed(0)
    start = create_model("resnet20-se").state_dict()
    key = "layer2.0.attn.fc_expand.weight"
    assert not torch.allclose(a.state_dict()[key], start[key], atol=0.05)


def test_cascading_test_leaves_the_shared_model_bit_identical_and_behaves(sample):
    model, x = _load("resnet20-se", sample)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        logits = model(x)
    rng_before = torch.random.get_rng_state()
    result = randomisation_test(model, x, methods=["gradcam", "saliency", "guided_backprop"])
    # the caller's model: same weights, same outputs, no hooks, still frozen and in eval mode
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(x), logits)
    assert all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())
    assert not any(m.training for m in model.modules()) and not any(p.requires_grad for p in model.parameters())
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # the global RNG is untouched

    assert result.labels == ["trained", "head", "layer3", "layer2", "layer1", "stem"]
    assert result.steps[-1].randomised == ["head", "layer3", "layer2", "layer1", "stem"]
    assert result.targets.tolist() == logits.argmax(1).tolist()
    for method in result.methods:
        assert result.curve(method, "spearman")[0] == pytest.approx(1.0)
        assert result.curve(method, "ssim")[0] == pytest.approx(1.0)
    # randomising the logits layer alone changes Grad-CAM (its weights come from the head's gradient)
    head = result.steps[1]
    assert not np.allclose(head.heatmaps["gradcam"], result.steps[0].heatmaps["gradcam"])
    assert result.curve("gradcam", "spearman_abs")[1] < 0.9
    # with everything random, Grad-CAM no longer ranks pixels like the trained model
    assert result.curve("gradcam", "spearman_abs")[-1] < 0.5
    # readouts: the head comes after every site, so no site's channel weights may change with it ...
    assert all(v == pytest.approx(1.0) for v in head.readouts.values())
    # ... and randomising layer3 leaves the sites of layers 1-2 alone but changes layer 3's
    layer3 = result.steps[2]
    for key, values in layer3.readouts.items():
        if key.startswith(("layer1.", "layer2.")):
            assert np.allclose(values, 1.0), key
    assert np.nanmean(layer3.readouts["layer3.1.attn:channel"]) < 0.9
    summary = result.summary()
    json.dumps(summary)  # plain numbers
    assert summary["steps"][0]["prediction_agreement"] == 1.0


def test_independent_test_randomises_one_stage_at_a_time(sample):
    model, x = _load("resnet20-cbam", sample, count=2)
    result = randomisation_test(model, x, methods=["gradcam"], mode="independent")
    assert [step.randomised for step in result.steps[1:]] == [["head"], ["layer3"], ["layer2"], ["layer1"], ["stem"]]
    layer2_alone = result.steps[3]
    # layer 3's attention sees layer 2's (random) output, layer 1's sees nothing random
    assert np.allclose(layer2_alone.readouts["layer1.0.attn:channel"], 1.0)
    assert np.allclose(layer2_alone.readouts["layer1.2.attn:spatial"], 1.0)
    assert np.nanmean(layer2_alone.readouts["layer3.0.attn:channel"]) < 0.99


def test_same_seed_same_numbers_other_seed_other_numbers(sample):
    model, x = _load("resnet20-se", sample, count=2)
    first = randomisation_test(model, x, methods=["saliency"], seed=3)
    again = randomisation_test(model, x, methods=["saliency"], seed=3)
    other = randomisation_test(model, x, methods=["saliency"], seed=4)
    for a, b in zip(first.steps, again.steps, strict=True):
        assert np.array_equal(a.heatmaps["saliency"], b.heatmaps["saliency"])
    assert not np.array_equal(first.steps[-1].heatmaps["saliency"], other.steps[-1].heatmaps["saliency"])


def test_interflow_branch_weights_are_a_readout(sample):
    model, x = _load("resnet20-interflow-soft", sample, count=2)
    result = randomisation_test(model, x, methods=["gradcam"])
    assert "head:branch_weights" in result.readout_keys()
    curve = result.readout_curve("head:branch_weights")
    assert curve[0] == pytest.approx(1.0)
    # the head's re-initialisation sets the soft weights to 1/n (all equal): no ranking is left
    assert math.isnan(curve[1]) or curve[1] < 1.0


def test_bad_input_is_one_sentence_and_the_model_untouched(sample):
    model, x = _load("resnet20-se", sample, count=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for kwargs, message in [({"methods": ["pixelsort"]}, "unknown explanation method"),
                            ({"methods": []}, "at least one explanation method"),
                            ({"mode": "sideways"}, "unknown randomisation mode"),
                            ({"granularity": "pixel"}, "unknown granularity")]:
        with pytest.raises(AttnvizError, match=message):
            randomisation_test(model, x, **kwargs)
    with pytest.raises(AttnvizError, match="batch tensor"):
        randomisation_test(model, x[0])
    with pytest.raises(AttnvizError, match="input channels"):
        randomisation_test(model, x[:, :1])
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------- CLI
def test_cli_sanity_json_and_text(capsys, tmp_path):
    assert main(["sanity", "--model", "resnet20-se", "--sample", "2", "--methods", "gradcam,saliency", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == "resnet20-se" and report["weights_sha256"]
    assert [s["label"] for s in report["steps"]] == ["trained", "head", "layer3", "layer2", "layer1", "stem"]
    assert report["images"][0].startswith("sample-test-airplane")
    assert set(report["verdicts"]) == {"gradcam", "saliency"}
    out = tmp_path / "strips"
    assert main(["sanity", "--model", "resnet20-se", "--sample", "1", "--methods", "gradcam", "--mode", "independent",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "steps: trained -> head -> layer3" in text and "Rank correlation of |map|" in text
    assert len(list(out.glob("*.png"))) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "resnet20-se", "--sample", "1", "--methods", "nonsense"], "unknown explanation method 'nonsense'"),
    (["--model", "resnet20-se", "--sample", "0"], "--sample needs at least 1 picture"),
    (["--model", "resnet20-se"], "give at least one image file, or --sample N"),
    (["--model", "resnet20-se", "no/such/picture.png"], "no/such/picture.png"),
    (["--model", "no-such-model", "--sample", "1"], "neither a checkpoint"),
    (["--model", "resnet20-se", "--sample", "1", "--granularity", "pixel"], "invalid choice"),
])
def test_cli_bad_input_exits_2_with_one_error_line(capsys, argv, message):
    try:
        code = main(["sanity", *argv])
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    assert code == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert captured.out == ""


# ------------------------------------------------------------------------------------------ study
def test_sanity_study_tiny_writes_a_report_with_the_paper_beside(tmp_path):
    from attnviz.experiments import run_study
    from attnviz.experiments.readings import reading_for

    report = json.loads(run_study("sanity", "tiny", tmp_path).read_text())
    assert report["study"] == "sanity"
    tables = {t["id"]: t for t in report["tables"]}
    assert {"overview", "per-model", "readouts", "checkpoints"} <= set(tables)
    assert "Guided Backprop" in json.dumps(tables["overview"]["paper"])
    assert tables["checkpoints"]["rows"][0][2]  # the weights' sha256 is recorded
    assert reading_for(report) == report["reading"]
    assert (tmp_path / "sanity" / "report.md").is_file() and (tmp_path / "sanity" / "cascading.png").is_file()
    again = json.loads(run_study("sanity", "tiny", tmp_path).read_text())
    assert again["metadata"]["units_reused"] == again["metadata"]["units"]  # resumable


def test_interventions_study_tiny(tmp_path):
    from attnviz.experiments import run_study
    from attnviz.experiments.readings import reading_for

    report = json.loads(run_study("interventions", "tiny", tmp_path).read_text())
    tables = {t["id"]: t for t in report["tables"]}
    assert tables["per-site"]["rows"] and "SE" in tables["per-site"]["paper"]["title"] + tables["per-site"]["paper"]["source"]
    assert report["results"]["checkpoints"][0]["name"] == "resnet20-se"  # the SE models come first
    assert reading_for(report) == report["reading"]
