"""attnviz.training: determinism, cancel + resume, divergence, disk errors, atomic writes, statistics."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from attnviz.checkpoints import load_checkpoint, sha256_file
from attnviz.data import load_dataset
from attnviz.errors import AttnvizError, TrainingCancelled, TrainingDiverged, TrainingError
from attnviz.models.registry import create_model
from attnviz.training import (
    Recipe,
    attention_statistics,
    augment_batch,
    evaluate,
    lr_at,
    train,
)

TINY = dict(epochs=2, batch_size=40, step_event_every=1, probe_size=32)


@pytest.fixture(scope="module")
def tiny():
    """120 training and 60 test images of the shipped sample set (3 steps of 40 per epoch)."""
    return load_dataset("sample").subset(train_per_class=12, test_per_class=6)


def _weights(card_path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(card_path).with_suffix(".safetensors")))


def test_same_seed_gives_identical_weights_and_other_seed_does_not(tiny, tmp_path):
    recipe = Recipe(**{**TINY, "epochs": 1}, seed=3)
    first = train("resnet20", tiny, recipe, tmp_path / "a", device="cpu")
    second = train("resnet20", tiny, recipe, tmp_path / "b", device="cpu")
    other = train("resnet20", tiny, Recipe(**{**TINY, "epochs": 1}, seed=4), tmp_path / "c", device="cpu")
    a, b, c = _weights(first.checkpoint), _weights(second.checkpoint), _weights(other.checkpoint)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert first.card["metrics"] == second.card["metrics"]


def test_card_metrics_equal_a_fresh_evaluation_of_the_saved_checkpoint(tiny, tmp_path):
    events = []
    result = train("resnet20-se", tiny, Recipe(**TINY), tmp_path, name="se", callback=events.append, device="cpu")
    card = json.loads(result.checkpoint.read_text())
    for key in ("name", "spec", "num_classes", "class_names", "in_chans", "input_size", "mean", "std",
                "dataset", "metrics", "recipe", "seed", "attnviz_version", "created", "weights_sha256",
                "params", "flops", "train_time_s", "device", "history"):
        assert key in card, key
    assert card["status"] == "complete" and len(card["history"]) == 2
    model, loaded = load_checkpoint(result.checkpoint)
    measured = evaluate(model, tiny.test_images, tiny.test_labels, loaded["mean"], loaded["std"])
    assert measured["test_acc"] == card["metrics"]["test_acc"]
    assert measured["test_loss"] == pytest.approx(card["metrics"]["test_loss"], rel=1e-6)
    assert card["metrics"]["n_test"] == 60 and len(card["metrics"]["per_class_acc"]) == 10
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch") == 2 and kinds.count("step") == 6
    step = next(e for e in events if e["event"] == "step")
    assert {"loss", "train_acc", "lr", "images_per_s", "eta_s"} <= set(step)
    epoch = next(e for e in events if e["event"] == "epoch")
    assert set(epoch["attention"]["dead_fraction"]) == {f"layer{s}.{b}.attn" for s in (1, 2, 3) for b in range(3)}
    assert 0.0 <= epoch["attention"]["dead_fraction_total"] <= 1.0
    assert not result.checkpoint.with_suffix(".trainstate").exists()  # a finished run leaves no state


@pytest.mark.slow
def test_cancel_mid_epoch_then_resume_matches_an_uninterrupted_run(tiny, tmp_path):
    recipe = Recipe(**TINY, seed=1)
    straight = train("resnet20", tiny, recipe, tmp_path / "straight", device="cpu")

    cancel = threading.Event()

    def cancel_at_step_two_of_epoch_one(event):
        if event["event"] == "step" and event["epoch"] == 1 and event["step"] == 2:
            cancel.set()

    out = tmp_path / "interrupted"
    with pytest.raises(TrainingCancelled) as info:
        train("resnet20", tiny, recipe, out, callback=cancel_at_step_two_of_epoch_one, cancel_event=cancel,
              device="cpu")
    card_path = info.value.checkpoint
    model, card = load_checkpoint(card_path)  # loadable, consistent
    assert card["status"] == "cancelled" and card["epochs_done"] == pytest.approx(2 / 3, abs=1e-3)
    assert (out / "resnet20.trainstate").exists()

    resumed_events = []
    resumed = train("resnet20", tiny, recipe, out, callback=resumed_events.append, device="cpu", resume=True)
    assert resumed_events[0]["resumed_at"] == [0, 2]
    a, b = _weights(straight.checkpoint), _weights(resumed.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.card["metrics"]["test_acc"] == straight.card["metrics"]["test_acc"]

    # resuming a finished run does nothing and says so
    again = []
    train("resnet20", tiny, recipe, out, callback=again.append, device="cpu", resume=True)
    assert again == [{"event": "end", "status": "complete", "checkpoint": str(resumed.checkpoint),
                      "test_acc": resumed.card["metrics"]["test_acc"], "skipped": True}]


def test_cancel_file_from_another_process(tiny, tmp_path):
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "CANCEL").write_text("")
    with pytest.raises(TrainingCancelled):
        train("resnet20", tiny, Recipe(**TINY), tmp_path, device="cpu")
    _, card = load_checkpoint(tmp_path / "resnet20.json")
    assert card["status"] == "cancelled"
    assert not (tmp_path / "CANCEL").exists()  # consumed, so the next run is not cancelled at once


def test_injected_nan_stops_within_one_step_and_keeps_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_FAULT_NAN_AT_STEP", "5")  # epoch 2, step 2
    shas, steps = [], []

    def watch(event):
        if event["event"] == "checkpoint":
            shas.append(sha256_file(Path(event["path"]).with_suffix(".safetensors")))
        if event["event"] == "step":
            steps.append(event["global_step"])

    with pytest.raises(TrainingDiverged, match="diverged") as info:
        train("resnet20", tiny, Recipe(**TINY), tmp_path, callback=watch, device="cpu")
    assert steps[-1] == 4  # step 5 never completed
    assert "epoch 2, step 2" in info.value.reason
    model, card = load_checkpoint(tmp_path / "resnet20.json")
    assert sha256_file(tmp_path / "resnet20.safetensors") == shas[-1] and len(shas) == 1
    assert card["status"] == "diverged" and "nan" in card["stopped_reason"]
    assert card["epochs_done"] == 1.0
    assert all(torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point())


def test_disk_full_is_a_clear_error_and_keeps_the_previous_checkpoint(tiny, tmp_path, monkeypatch):
    import attnviz.checkpoints as checkpoints

    real_save = checkpoints.save_file
    calls = {"n": 0}

    def save_then_fill_the_disk(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoints, "save_file", save_then_fill_the_disk)
    with pytest.raises(TrainingError, match="disk is full") as info:
        train("resnet20", tiny, Recipe(**TINY), tmp_path, device="cpu")
    assert "\n" not in str(info.value)
    _, card = load_checkpoint(tmp_path / "resnet20.json")
    assert card["epochs_done"] == 1.0
    assert not list(tmp_path.glob("*.tmp"))


KILL_SCRIPT = r"""
import os, signal, sys
from attnviz.checkpoints import save_checkpoint
from attnviz.models.registry import create_model
import torch
where = sys.argv[2]
torch.manual_seed(1)
model = create_model("resnet20")
if where == "replace":
    real = os.replace
    def replace_then_die(src, dst):
        real(src, dst)
        os.kill(os.getpid(), signal.SIGKILL)  # after the weights are in place, before the card
    os.replace = replace_then_die
else:
    def die(fd):
        os.kill(os.getpid(), signal.SIGKILL)  # while the new weights are still a temporary file
    os.fsync = die
save_checkpoint(model, sys.argv[1], "net", {"status": "second"})
"""


@pytest.mark.parametrize("where", ["fsync", "replace"])
def test_process_killed_during_checkpoint_write_leaves_a_loadable_checkpoint(tmp_path, where):
    torch.manual_seed(0)
    from attnviz.checkpoints import save_checkpoint

    save_checkpoint(create_model("resnet20"), tmp_path, "net", {"status": "first"})
    before = sha256_file(tmp_path / "net.safetensors")
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(tmp_path), where], capture_output=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-500:]
    model, card = load_checkpoint(tmp_path / "net.json")
    if where == "fsync":  # killed before anything was renamed: the previous checkpoint, untouched
        assert card["status"] == "first" and sha256_file(tmp_path / "net.safetensors") == before
    else:  # killed between the renames: the complete new pair is used, never a mix
        assert card["status"] == "second" and card["weights_sha256"] == sha256_file(tmp_path / "net.safetensors")


def test_interflow_aux_loss_and_branch_weights_are_reported(tiny, tmp_path):
    events = []
    recipe = Recipe(**{**TINY, "epochs": 1}, interflow_aux_weight=0.3)
    result = train("resnet20-interflow-soft", tiny, recipe, tmp_path, callback=events.append, device="cpu")
    epoch = next(e for e in events if e["event"] == "epoch")
    weights = epoch["attention"]["interflow_branch_weights"]
    model, _ = load_checkpoint(result.checkpoint)
    assert weights == pytest.approx(model.head.branch_weights.tolist(), abs=1e-5)
    assert len(weights) == 3 and weights != pytest.approx([1 / 3] * 3, abs=1e-7)  # they were trained
    assert result.card["recipe"]["interflow_aux_weight"] == 0.3


def test_grey_dataset_trains_a_one_channel_model(tmp_path):
    from PIL import Image

    for split, count in (("train", 6), ("test", 2)):
        for cls, value in (("dark", 30), ("light", 220)):
            folder = tmp_path / "grey" / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("L", (16, 16), value + i).save(folder / f"{i}.png")
    data = load_dataset(f"imagefolder:{tmp_path / 'grey'}", cache_dir=tmp_path / "cache")
    result = train("resnet20", data, Recipe(epochs=1, batch_size=4), tmp_path / "out", device="cpu")
    model, card = load_checkpoint(result.checkpoint)
    assert card["in_chans"] == 1 and model.in_chans == 1 and len(card["mean"]) == 1
    assert card["input_size"] == [16, 16]


def test_attention_statistics_counts_dead_units_and_removes_its_hooks():
    torch.manual_seed(0)
    model = create_model("resnet20-se")
    sites = [m for m in model.modules() if hasattr(m, "tap_hidden")]
    with torch.no_grad():
        sites[0].fc_reduce.bias.fill_(-1e4)  # every pre-activation of this site is negative: all dead
    stats = attention_statistics(model, torch.randn(8, 3, 32, 32))
    assert stats["dead_fraction"]["layer1.0.attn"] == 1.0
    assert stats["dead_fraction_total"] >= 1 / len(sites)
    assert all(0.0 < m < 1.0 for m in stats["channel_weight_mean"].values())
    assert model.training  # mode restored
    assert all(not m._forward_hooks for m in model.modules())


def test_augment_batch_is_a_padded_crop_and_flip_of_each_image():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(images, generator)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(16):
        candidates = []
        for dy in range(9):
            for dx in range(9):
                crop = padded[i, :, dy : dy + 8, dx : dx + 8]
                candidates += [crop, crop.flip(-1)]
        assert any(torch.equal(out[i], c) for c in candidates)
    flips = sum(torch.equal(out[i], images[i].flip(-1)) for i in range(16))
    assert flips < 16  # not everything flipped


def test_interflow_weight_lr_scale_slows_only_the_aggregation_weights(tiny, tmp_path):
    """The learned branch weights train at lr x interflow_weight_lr_scale; everything else at the lr."""
    moved = {}
    for scale in (1e-6, 1.0):
        recipe = Recipe(**{**TINY, "epochs": 1}, interflow_weight_lr_scale=scale)
        result = train("resnet20-interflow-soft", tiny, recipe, tmp_path, name=f"scale{scale}", device="cpu")
        model, _ = load_checkpoint(result.checkpoint)
        moved[scale] = (model.head.branch_weights - 1 / 3).abs().max().item()
        assert result.card["recipe"]["interflow_weight_lr_scale"] == scale
    # Same seed and data: the only difference is the aggregation weights' lr (3 steps of SGD).
    assert moved[1e-6] < 1e-5 < moved[1.0]
    with pytest.raises(AttnvizError, match="interflow_weight_lr_scale"):
        Recipe(interflow_weight_lr_scale=0.0).validate()


def test_schedules_and_recipe_validation():
    onecycle = Recipe(lr=0.4, schedule="onecycle", warmup_fraction=0.25)
    assert lr_at(onecycle, 0, 100) == pytest.approx(0.016)
    assert lr_at(onecycle, 25, 100) == pytest.approx(0.4)
    assert lr_at(onecycle, 99, 100) == pytest.approx(0.4 / 75, rel=1e-6)
    cosine = Recipe(lr=0.1, schedule="cosine")
    assert lr_at(cosine, 0, 10) == pytest.approx(0.1) and lr_at(cosine, 5, 10) == pytest.approx(0.05)
    assert Recipe(batch_size=512).resolved_lr == pytest.approx(0.4)
    with pytest.raises(AttnvizError, match="epochs"):
        Recipe(epochs=0).validate()
    with pytest.raises(AttnvizError, match="schedule"):
        Recipe(schedule="step").validate()
    with pytest.raises(AttnvizError, match="Unknown recipe"):
        Recipe.from_dict({"epochz": 3})


@pytest.mark.slow
def test_ddp_two_cpu_processes_on_the_sample_set(tmp_path):
    """torchrun with 2 CPU processes (gloo): each rank trains on its shard, rank 0 writes the checkpoint."""
    env = dict(os.environ, ATTNVIZ_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "attnviz", "train", "--model", "resnet20", "--data", "sample", "--epochs", "1",
           "--batch-size", "128", "--device", "cpu", "--out", str(tmp_path / "out"), "--json-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    start = next(e for e in events if e["event"] == "start")
    assert start["world_size"] == 2 and start["steps_per_epoch"] == 2000 // 128
    assert sum(1 for e in events if e["event"] == "end") == 1  # only rank 0 reports
    model, card = load_checkpoint(tmp_path / "out" / "resnet20.json")
    assert "DDP" in card["device"]
    data = load_dataset("sample", cache_dir=tmp_path / "cache")
    measured = evaluate(model, data.test_images, data.test_labels, card["mean"], card["std"])
    assert measured["test_acc"] == card["metrics"]["test_acc"]


def test_zoo_train_all_skips_finished_entries_and_writes_the_readme(tiny, tmp_path):
    from attnviz.zoo import ZOO, train_all

    assert len(ZOO) == 11 and len({spec for _, spec in ZOO}) == 11
    recipe = Recipe(epochs=1, batch_size=40, probe_size=16)
    lines = []
    outcomes = train_all(tiny, tmp_path, only=["resnet20", "vgg16-interflow-soft"], device="cpu", recipe=recipe,
                         log=lines.append)
    assert set(outcomes) == {"resnet20", "vgg16-interflow-soft"}
    assert all(o.startswith("complete") for o in outcomes.values())
    readme = (tmp_path / "README.md").read_text()
    assert "| resnet20 | `resnet20` |" in readme and "`vgg16-interflow-soft:width=0.5`" in readme
    assert "python scripts/train_zoo.py" in readme
    before = (tmp_path / "resnet20.json").read_text()
    lines.clear()
    train_all(tiny, tmp_path, only=["resnet20"], device="cpu", recipe=recipe, log=lines.append)
    assert (tmp_path / "resnet20.json").read_text() == before  # finished: skipped, not retrained
    assert not any("training" in line for line in lines)
    # a card whose recipe differs from the first card's is named with the difference
    from attnviz.zoo import write_readme

    card_path = tmp_path / "vgg16-interflow-soft.json"
    card = json.loads(card_path.read_text())
    card["recipe"]["interflow_weight_lr_scale"] = 0.25
    card_path.write_text(json.dumps(card))
    readme = write_readme(tmp_path).read_text()
    assert "`vgg16-interflow-soft`: interflow_weight_lr_scale=0.25" in readme
    assert f"| {card['training_precision']} | {card['recipe']['epochs']} |" in readme  # precision column


def test_precision_and_memory_format_fields_resolve_per_device_and_model():
    from attnviz.training import cpu_supports_bf16, precision_label, resolve_precision

    cpu = torch.device("cpu")
    plain, lgam = create_model("resnet20"), create_model("resnet20-lgam")
    native = cpu_supports_bf16()
    assert resolve_precision(Recipe(), cpu, plain) == (torch.bfloat16 if native else None, True)
    # LGAM is kept contiguous only under bf16 on a CPU (measured slower there); float32 uses channels_last
    assert resolve_precision(Recipe(), cpu, lgam)[1] is (not native)
    assert resolve_precision(Recipe(precision="fp32"), cpu, lgam) == (None, True)
    assert resolve_precision(Recipe(precision="bf16"), cpu, lgam) == (torch.bfloat16, False)
    for spec in ("resnet20-cbam", "resnet20-sge"):  # also measured slower in channels_last under bf16
        assert resolve_precision(Recipe(precision="bf16"), cpu, create_model(spec)) == (torch.bfloat16, False)
    assert resolve_precision(Recipe(precision="bf16"), cpu, create_model("resnet20-eca")) == (torch.bfloat16, True)
    assert resolve_precision(Recipe(precision="fp32", memory_format="contiguous"), cpu, plain) == (None, False)
    assert resolve_precision(Recipe(precision="bf16", memory_format="channels_last"), cpu, lgam) == (torch.bfloat16, True)
    assert precision_label(None, True) == "float32, channels_last"
    with pytest.raises(AttnvizError, match="precision must be one of"):
        Recipe(precision="fp16").validate()
    with pytest.raises(AttnvizError, match="memory_format must be one of"):
        Recipe(memory_format="nhwc").validate()


def test_card_records_training_precision_and_final_metrics_stay_float32(tiny, tmp_path):
    result = train("resnet20", tiny, Recipe(**{**TINY, "epochs": 1}, memory_format="channels_last"), tmp_path,
                   device="cpu")
    assert result.card["training_precision"].endswith("channels_last")
    assert [entry["precision"] for entry in result.card["history"]] == [result.card["training_precision"]]
    assert result.card["recipe"]["memory_format"] == "channels_last"
    model, card = load_checkpoint(result.checkpoint)
    measured = evaluate(model, tiny.test_images, tiny.test_labels, card["mean"], card["std"])
    assert measured["test_acc"] == card["metrics"]["test_acc"]
    assert card["metrics"]["measured_by"].startswith("attnviz eval (cpu, float32")


def test_a_run_resumed_in_another_precision_says_which_epochs_ran_in_which():
    from attnviz.training.recipe import precision_over_epochs

    bf16, fp32 = "bf16 autocast, channels_last", "float32, channels_last"
    assert precision_over_epochs([], fp32) == fp32
    assert precision_over_epochs([{"epoch": 1, "precision": bf16}, {"epoch": 2, "precision": bf16}], fp32) == bf16
    mixed = [{"epoch": e, "precision": bf16} for e in (1, 2)] + [{"epoch": 3, "precision": fp32}]
    assert precision_over_epochs(mixed, fp32) == f"{bf16} (epochs 1-2); {fp32} (epoch 3)"
    legacy = [{"epoch": 1}, {"epoch": 2}, {"epoch": 3, "precision": fp32}]  # history from before per-epoch labels
    assert precision_over_epochs(legacy, fp32) == f"not recorded (epochs 1-2); {fp32} (epoch 3)"


def test_bf16_on_a_cpu_without_native_bf16_is_a_clear_error(tiny, tmp_path):
    from attnviz.training import cpu_supports_bf16

    if cpu_supports_bf16():
        pytest.skip("this CPU has native bf16 kernels")
    with pytest.raises(AttnvizError, match="no native bf16"):
        train("resnet20", tiny, Recipe(**TINY, precision="bf16"), tmp_path, device="cpu")
    assert not list(tmp_path.glob("*"))  # refused before anything was written


def test_zoo_ship_copies_a_finished_checkpoint_and_its_golden_logits(tiny, tmp_path):
    from attnviz.zoo import ship

    result = train("resnet20", tiny, Recipe(**{**TINY, "epochs": 1}), tmp_path / "stage", device="cpu")
    staged = json.loads(result.checkpoint.read_text())
    staged["dataset"] = "imagefolder:/home/someone/data/cifar10-jpeg.tar.gz"  # as a local run records it
    result.checkpoint.write_text(json.dumps(staged, indent=2))
    shipped = ship(result.checkpoint, tmp_path / "shipped", golden_dir=tmp_path / "golden")
    # shipped cards name the data without the training machine's path; nothing else changes
    assert json.loads(shipped.read_text()) == staged | {"dataset": "imagefolder:cifar10-jpeg.tar.gz"}
    golden = json.loads((tmp_path / "golden" / "resnet20.json").read_text())
    assert golden["weights_sha256"] == result.card["weights_sha256"] and len(golden["logits"]) == 10
    model, _ = load_checkpoint(shipped)  # the shipped copy loads (weights match the card's hash)
    assert model.spec == "resnet20"


def test_zoo_ship_writes_the_variant_note_into_the_card(tiny, tmp_path):
    from attnviz.zoo import ZOO_NOTES, ship

    result = train("resnet20-sge:min_group_channels=4", tiny, Recipe(**{**TINY, "epochs": 1}), tmp_path / "stage",
                   name="resnet20-sge", device="cpu")
    shipped = ship(result.checkpoint, tmp_path / "shipped", golden_dir=tmp_path / "golden")
    card = json.loads(shipped.read_text())
    assert card["zoo_note"] == ZOO_NOTES["resnet20-sge"] and "min_group_channels=4" in card["zoo_note"]
    model, _ = load_checkpoint(shipped)
    assert model.spec == "resnet20-sge:min_group_channels=4"


def test_zoo_hands_an_interrupted_entry_to_the_next_session_through_a_folder(tiny, tmp_path):
    from attnviz.zoo import train_all

    recipe = Recipe(epochs=1, batch_size=40, probe_size=16)
    first, handoff = tmp_path / "session1", tmp_path / "repo" / "training-state"
    first.mkdir()
    (first / "CANCEL").touch()  # the session ends: cancelled at the next step
    with pytest.raises(TrainingCancelled):
        train_all(tiny, first, only=["resnet20"], device="cpu", recipe=recipe, log=lambda _: None, handoff=handoff)
    assert (handoff / "resnet20.trainstate").exists()
    lines = []  # the next session: a fresh staging folder, the handed-off state in the repository
    outcomes = train_all(tiny, tmp_path / "session2", only=["resnet20"], device="cpu", recipe=recipe,
                         log=lines.append, handoff=handoff)
    assert outcomes["resnet20"].startswith("complete")
    assert any("resuming from the handed-off state" in line for line in lines)
    assert any("resumed at [0, 1]" in line for line in lines)  # it went on from where it stopped
    assert not (handoff / "resnet20.trainstate").exists()  # finished: nothing left to hand off


def test_zoo_refreshes_the_handed_off_state_after_every_epoch(tiny, tmp_path):
    # a session can end with no cancel at all (the machine is taken): the last finished epoch must
    # already be in the handoff folder, not only after a clean Ctrl-C / SIGTERM
    from attnviz.training.state import read_state
    from attnviz.zoo import train_all

    handoff = tmp_path / "repo" / "training-state"
    handed = handoff / "resnet20.trainstate"
    seen = {}

    def log(line: str) -> None:
        if line.startswith("resnet20: epoch 2/"):  # logged before epoch 2's hand-off
            seen["epoch_before_2"] = read_state(handed)[0]["epoch"] if handed.exists() else None

    outcomes = train_all(tiny, tmp_path / "stage", only=["resnet20"], device="cpu",
                         recipe=Recipe(epochs=2, batch_size=40, probe_size=16), log=log, handoff=handoff)
    assert outcomes["resnet20"].startswith("complete")
    assert seen["epoch_before_2"] == 1  # epoch 1 was handed off while the run went on
    assert not handed.exists() and not list(handoff.glob("*.partial"))  # finished: nothing left behind


def test_resume_state_names_the_dataset_without_this_machines_path(tiny, tmp_path):
    # a handed-off state is committed (checkpoints/training-state/): it must not carry a local path
    import dataclasses

    from attnviz.training.state import read_state

    local = dataclasses.replace(tiny, name=f"imagefolder:{tmp_path}/data/cifar10-jpeg.tar.gz")
    cancel = threading.Event()
    with pytest.raises(TrainingCancelled):
        train("resnet20", local, Recipe(**TINY), tmp_path / "out", cancel_event=cancel, device="cpu",
              callback=lambda event: cancel.set() if event["event"] == "step" else None)
    meta, _ = read_state(tmp_path / "out" / "resnet20.trainstate")
    assert meta["dataset"] == "imagefolder:cifar10-jpeg.tar.gz"
    assert str(tmp_path) not in json.dumps(meta)


def test_committed_checkpoint_files_hold_no_absolute_path_of_the_machine_that_made_them():
    from attnviz.paths import REPO_ROOT, SHIPPED_DIR

    machine_paths = [str(REPO_ROOT.parent).encode(), str(Path.home()).encode() + b"/"]
    for path in SHIPPED_DIR.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".trainstate", ".md"):
            data = path.read_bytes()
            head = data if path.suffix != ".trainstate" else data[: 8 + int.from_bytes(data[:8], "little")]
            assert not any(p in head for p in machine_paths), path.name


# ------------------------------------------------------------------ weight averaging (SWA phase)
def test_weight_average_is_the_mean_of_the_snapshots_and_batchnorm_is_recomputed(tiny):
    from attnviz.training.averaging import WeightAverage, recompute_batchnorm

    torch.manual_seed(0)
    snapshots = [create_model("resnet20", num_classes=10) for _ in range(3)]
    average = WeightAverage()
    for model in snapshots:
        average.add(model)
    key = "conv1.weight" if "conv1.weight" in snapshots[0].state_dict() else next(iter(snapshots[0].state_dict()))
    expected = torch.stack([m.state_dict()[key] for m in snapshots]).mean(0)
    assert torch.allclose(average.tensors[key], expected, atol=1e-6)
    restored = WeightAverage.from_tensors(average.to_tensors(), average.count)
    assert restored.count == 3 and torch.equal(restored.tensors[key], average.tensors[key])

    model = snapshots[0]
    average.apply_to(model)
    assert torch.allclose(model.state_dict()[key], expected, atol=1e-6)
    norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    norm.running_mean.fill_(123.0)
    model.eval()
    assert recompute_batchnorm(model, tiny.train_images[:50], tiny.mean, tiny.std, batch_size=20) > 0
    assert not model.training and norm.momentum == 0.1  # mode and momentum restored
    assert float(norm.running_mean.abs().max()) < 50  # the planted value is gone
    one_batch = torch.clone(norm.running_var)
    recompute_batchnorm(model, tiny.train_images[:50], tiny.mean, tiny.std, batch_size=50)
    # a cumulative average: batches of 20, 20, 10 weigh alike, so they differ slightly from one batch of 50
    assert torch.allclose(one_batch, norm.running_var, rtol=0.2) and not torch.equal(one_batch, norm.running_var)


def test_averaging_phase_extends_the_schedule_and_the_card_holds_the_averaged_weights(tiny, tmp_path):
    recipe = Recipe(**TINY, average_epochs=2, average_lr=0.01)
    assert lr_at(recipe, 5, 6) < lr_at(recipe, 1, 6)  # still the one-cycle inside the main schedule
    assert lr_at(recipe, 6, 6) == lr_at(recipe, 11, 6) == 0.01
    events = []
    result = train("resnet20-se", tiny, recipe, tmp_path, callback=events.append, device="cpu")
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4] and all(e["epochs"] == 4 for e in epochs)
    assert [("average_test_acc" in e) for e in epochs] == [False, False, True, True]
    assert [h["lr"] for h in result.history[2:]] == [0.01, 0.01]
    card = result.card
    assert card["epochs_done"] == 4 and card["recipe"]["average_epochs"] == 2 and card["recipe"]["average_lr"] == 0.01
    # what ships is the averaged model with its BN statistics recomputed, measured like attnviz eval
    model, _ = load_checkpoint(result.checkpoint)
    fresh = evaluate(model, tiny.test_images, tiny.test_labels, card["mean"], card["std"], device="cpu")
    assert fresh["test_acc"] == card["metrics"]["test_acc"]


@pytest.mark.slow
def test_averaging_phase_resumes_exactly_and_continues_a_finished_main_schedule(tiny, tmp_path):
    from attnviz.training.state import continue_into_averaging

    main = Recipe(**TINY, seed=2)
    averaged = Recipe(**TINY, seed=2, average_epochs=2, average_lr=0.02)
    straight = train("resnet20", tiny, averaged, tmp_path / "straight", device="cpu")

    # cancelled inside the averaging phase, then resumed: the same weights
    cancel = threading.Event()
    out = tmp_path / "interrupted"
    with pytest.raises(TrainingCancelled):
        train("resnet20", tiny, averaged, out, cancel_event=cancel, device="cpu",
              callback=lambda e: cancel.set() if e["event"] == "step" and (e["epoch"], e["step"]) == (4, 1) else None)
    resumed = train("resnet20", tiny, averaged, out, device="cpu", resume=True)
    a, b = _weights(straight.checkpoint), _weights(resumed.checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)

    # a checkpoint finished on the main schedule alone, continued into the phase: the same run again
    first = train("resnet20", tiny, main, tmp_path / "old", device="cpu")
    later = tmp_path / "later"
    later.mkdir()
    assert not continue_into_averaging(first.checkpoint, later / "resnet20.trainstate", main)  # nothing to add
    assert not continue_into_averaging(first.checkpoint, later / "x.trainstate",
                                       Recipe(**{**TINY, "epochs": 3}, seed=2, average_epochs=2))  # other schedule
    assert continue_into_averaging(first.checkpoint, later / "resnet20.trainstate", averaged)
    continued = train("resnet20", tiny, averaged, later, device="cpu", resume=True)
    c = _weights(continued.checkpoint)
    assert all(torch.equal(a[k], c[k]) for k in a)
    assert [h["epoch"] for h in continued.history] == [1, 2, 3, 4]


def test_zoo_takes_shipped_and_handed_off_main_schedule_runs_into_the_averaging_phase(tiny, tmp_path):
    from attnviz.zoo import train_all

    main = Recipe(epochs=1, batch_size=40, probe_size=16)
    averaged = Recipe(epochs=1, batch_size=40, probe_size=16, average_epochs=1, average_lr=0.01)
    shipped, handoff = tmp_path / "checkpoints", tmp_path / "training-state"
    quiet = lambda _: None  # noqa: E731
    train_all(tiny, tmp_path / "s1", only=["resnet20"], device="cpu", recipe=main, log=quiet, ship_to=shipped)
    # a fresh checkout holding that shipped card: nothing to do for the same schedule
    outcomes = train_all(tiny, tmp_path / "s2", only=["resnet20"], device="cpu", recipe=main, log=quiet,
                         ship_to=shipped)
    assert outcomes["resnet20"] == "complete: already shipped"
    # the recipe gains the averaging phase: the shipped card is continued, not retrained
    lines = []
    train_all(tiny, tmp_path / "s3", only=["resnet20"], device="cpu", recipe=averaged, log=lines.append,
              ship_to=shipped)
    assert any("continuing the shipped 1-epoch checkpoint" in line for line in lines)
    card = json.loads((shipped / "resnet20.json").read_text())
    assert card["recipe"]["average_epochs"] == 1 and [h["epoch"] for h in card["history"]] == [1, 2]
    # a state handed off under the main schedule alone goes on into the phase too
    (tmp_path / "s4").mkdir()
    (tmp_path / "s4" / "CANCEL").touch()
    with pytest.raises(TrainingCancelled):
        train_all(tiny, tmp_path / "s4", only=["resnet20-se"], device="cpu", recipe=main, log=quiet, handoff=handoff)
    lines.clear()
    train_all(tiny, tmp_path / "s5", only=["resnet20-se"], device="cpu", recipe=averaged, log=lines.append,
              handoff=handoff, ship_to=shipped)
    assert any("weight-averaging phase" in line for line in lines)
    assert json.loads((shipped / "resnet20-se.json").read_text())["recipe"]["average_epochs"] == 1


def test_shipping_outside_the_repository_never_touches_its_golden_files(tiny, tmp_path):
    from attnviz.golden import GOLDEN_DIR
    from attnviz.zoo import ship

    before = {path.name: path.read_bytes() for path in GOLDEN_DIR.glob("*.json")}
    result = train("resnet20", tiny, Recipe(**{**TINY, "epochs": 1}), tmp_path / "stage", device="cpu")
    ship(result.checkpoint, tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "resnet20.json").exists()
    assert {path.name: path.read_bytes() for path in GOLDEN_DIR.glob("*.json")} == before


def test_cyclic_averaging_lr_falls_within_each_epoch_and_cards_without_the_phase_are_unchanged():
    recipe = Recipe(epochs=2, average_epochs=2, average_lr=0.05, average_schedule="cyclic")
    total = 2 * 10  # 10 steps per epoch
    phase = [lr_at(recipe, step, total) for step in range(total, total + 20)]
    assert phase[0] == pytest.approx(0.05) and phase[9] == pytest.approx(0.0005) and phase[10] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(phase[:9], phase[1:10], strict=True))
    assert not any(key.startswith("average_") for key in Recipe(epochs=2).to_dict())
    with pytest.raises(AttnvizError, match="average_schedule"):
        Recipe(average_epochs=1, average_schedule="triangle").validate()


def test_zoo_standing_names_the_recipe_and_the_bar_of_shipped_models_only():
    from attnviz.zoo.entries import ZOO_RECIPE, standing

    full = ZOO_RECIPE.epochs
    assert standing("shipped", "resnet20-se", full, 0.8898) == "meets the 88.5% bar"
    assert standing("shipped", "resnet20-lgam:zero_init_residual=true", full, 0.8774) == "below the 88.5% bar"
    assert standing("shipped", "resnet20-interflow-soft", full, 0.881) == "meets the 88% bar"
    assert standing("shipped", "vgg16-interflow-soft:width=0.5", full, 0.885) == "below the 89% bar"
    assert standing("shipped", "resnet20-cbam", 3, 0.7392) == "earlier 3-epoch recipe"
    assert standing("your run", "resnet20-se", full, 0.95) == ""
    assert standing("untrained", "resnet20-se", None, None) == ""
