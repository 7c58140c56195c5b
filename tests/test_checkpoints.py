import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attnviz.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from attnviz.errors import CheckpointError
from attnviz.models.registry import create_model


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet20-se-felu").to(memory_format=torch.channels_last)
    card = save_checkpoint(model, tmp_path, "m", {"dataset": "sample", "mean": [0.5] * 3, "std": [0.25] * 3})
    return model, card


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_round_trip_is_exact(saved, tmp_path):
    model, card_path = saved
    loaded, card = load_checkpoint(card_path)
    assert card["spec"] == "resnet20-se-felu" and card["dataset"] == "sample"
    assert not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():  # channels_last vs contiguous convs differ only in summation order
        assert torch.allclose(model(x), loaded(x), atol=1e-5)
    for path in (tmp_path / "m.safetensors", tmp_path / "m"):
        assert load_checkpoint(path)[1]["name"] == "m"
    assert not list(tmp_path.glob("*.tmp"))


class _WritesAFile:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".safetensors"])
def test_pickle_is_never_unpickled(tmp_path, suffix):
    evidence = tmp_path / "pwned.txt"
    payload = pickle.dumps({"state_dict": _WritesAFile(str(evidence))}, protocol=2)
    weights = tmp_path / f"evil{suffix}"
    weights.write_bytes(payload)
    (tmp_path / "evil.json").write_text(json.dumps({
        "spec": "resnet20", "num_classes": 10, "weights_sha256": hashlib.sha256(payload).hexdigest()}))
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(weights)
    assert "\n" not in str(info.value)
    assert not evidence.exists()
    assert _snapshot(tmp_path) == before


def test_torch_save_zip_is_refused(tmp_path):
    path = tmp_path / "z.safetensors"
    torch.save({"a": torch.ones(1)}, path)
    (tmp_path / "z.json").write_text(json.dumps({
        "spec": "resnet20", "num_classes": 10, "weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(path)


def test_hash_mismatch_refused_and_nothing_changes(saved, tmp_path):
    _, card_path = saved
    weights = tmp_path / "m.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(card_path)
    assert _snapshot(tmp_path) == before


def _rewrite(tmp_path, tensors, card_update):
    weights = tmp_path / "m.safetensors"
    save_file(tensors, str(weights))
    card = json.loads((tmp_path / "m.json").read_text())
    card.update(card_update)
    card["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (tmp_path / "m.json").write_text(json.dumps(card))


def test_spec_that_does_not_fit_weights(saved, tmp_path):
    model, card_path = saved
    _rewrite(tmp_path, {k: v.contiguous() for k, v in model.state_dict().items()}, {"spec": "resnet20-lgam"})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(card_path)
    _rewrite(tmp_path, {k: v.contiguous() for k, v in model.state_dict().items()}, {"spec": "resnet20-se-felu", "num_classes": 100})
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_checkpoint(card_path)


def test_non_finite_weights_refused(saved, tmp_path):
    model, card_path = saved
    tensors = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    tensors["head.fc.weight"][0, 0] = float("nan")
    _rewrite(tmp_path, tensors, {})
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(card_path)


@pytest.mark.parametrize("content", ["not json", "[1, 2]", '{"spec": "resnet20"}', '{"spec": "nope", "num_classes": 10, "weights_sha256": "x"}'])
def test_bad_cards(saved, tmp_path, content):
    _, card_path = saved
    if "nope" in content:
        digest = hashlib.sha256((tmp_path / "m.safetensors").read_bytes()).hexdigest()
        content = content.replace('"x"', f'"{digest}"')
    card_path.write_text(content)
    with pytest.raises(CheckpointError):
        load_checkpoint(card_path)


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "absent.json")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "absent")


def test_interrupted_commit_rolls_forward(saved, tmp_path):
    """A crash between the weights rename and the card rename must not lose the checkpoint."""
    model, card_path = saved
    old_card = card_path.read_text()
    with torch.no_grad():
        model.head.fc.bias.add_(1.0)
    save_checkpoint(model, tmp_path, "m", {"dataset": "sample"})
    new_card = card_path.read_text()
    (tmp_path / "m.json.tmp").write_text(new_card)
    card_path.write_text(old_card)  # as if the card's rename had not happened yet
    loaded, card = load_checkpoint(card_path)
    assert torch.equal(loaded.head.fc.bias, model.head.fc.bias.detach())


def test_failed_write_keeps_previous_checkpoint(saved, tmp_path, monkeypatch):
    model, card_path = saved
    before = _snapshot(tmp_path)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(CheckpointError, match="disk is full"):
        save_checkpoint(model, tmp_path, "m", {})
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before
    load_checkpoint(card_path)


def test_list_checkpoints_reads_env_folder(saved, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_CHECKPOINTS", str(tmp_path))
    rows = [r for r in list_checkpoints() if r["path"].startswith(str(tmp_path))]
    assert len(rows) == 1
    assert {"name", "spec", "dataset", "params", "test_acc", "path"} <= set(rows[0])
    assert rows[0]["spec"] == "resnet20-se-felu" and rows[0]["params"] > 0


def test_bad_names_refused(tmp_path):
    with pytest.raises(CheckpointError):
        save_checkpoint(create_model("resnet20"), tmp_path, "../escape", {})


def test_one_home_rule_for_runs_caches_and_jobs(monkeypatch, tmp_path):
    from attnviz import archives, jobs
    from attnviz.catalog import cache_dir
    from attnviz.paths import attnviz_home, runs_dir

    monkeypatch.setenv("ATTNVIZ_HOME", "")  # empty means unset, everywhere
    assert attnviz_home() == Path.home() / ".attnviz"
    monkeypatch.setenv("ATTNVIZ_HOME", str(tmp_path))
    assert runs_dir() == tmp_path / "runs" == jobs.runs_dir() and cache_dir() == tmp_path / "cache"
    assert archives.attnviz_home is attnviz_home and archives.uploads_dir() == tmp_path / "uploads"


def test_an_entry_retrained_under_a_new_spec_keeps_its_shipped_row(monkeypatch, tmp_path):
    # a zoo entry whose spec changed (issue 11: LGAM) shows its shipped checkpoint until the new one ships,
    # with no untrained twin beside it; entries with nothing shipped are listed as untrained
    from attnviz.catalog import zoo_rows
    from attnviz.paths import SHIPPED_DIR
    from attnviz.zoo import ZOO

    monkeypatch.setenv("ATTNVIZ_HOME", str(tmp_path))
    rows = zoo_rows(with_latency=False, dirs=[SHIPPED_DIR])
    assert sorted((r.name, r.source) for r in rows) == sorted((name, "shipped") for name, _ in ZOO)
    untrained = zoo_rows(with_latency=False, dirs=[tmp_path / "nothing-here"])
    assert sorted((r.name, r.source) for r in untrained) == sorted((spec, "untrained") for _, spec in ZOO)


def test_shipped_zoo_notes_match_the_entries_that_trained_them():
    # the app shows a card's zoo_note as the reason a checkpoint differs from the paper; a shipped card
    # trained under the entry's current spec must carry the entry's current note, word for word
    from attnviz.models.registry import parse_spec
    from attnviz.paths import SHIPPED_DIR
    from attnviz.zoo import ZOO, ZOO_NOTES

    specs = dict(ZOO)
    checked = 0
    for name, note in ZOO_NOTES.items():
        card = json.loads((SHIPPED_DIR / f"{name}.json").read_text(encoding="utf-8"))
        if card["spec"] == parse_spec(specs[name]).canonical():
            assert card.get("zoo_note") == note, name
            checked += 1
    assert checked == len(ZOO_NOTES)  # every noted entry ships on its current spec
