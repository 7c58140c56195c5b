"""``attnviz train`` / ``attnviz eval``: exit codes, progress output, card accuracy == eval accuracy."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnviz.checkpoints import load_checkpoint, sha256_file
from attnviz.cli import main
from attnviz.paths import SAMPLE_DIR

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNVIZ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ATTNVIZ_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ATTNVIZ_FAULT_NAN_AT_STEP", raising=False)


@pytest.fixture
def small_folder(tmp_path) -> str:
    """A 10-class ImageFolder copied from the shipped sample: 8 train + 4 test images per class."""
    root = tmp_path / "small"
    for split, count in (("train", 8), ("test", 4)):
        for class_dir in sorted((SAMPLE_DIR / split).iterdir()):
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            for image in sorted(class_dir.glob("*.jpg"))[:count]:
                shutil.copy(image, target / image.name)
    return f"imagefolder:{root}"


def _train_args(data: str, out: Path, *extra: str) -> list[str]:
    return ["train", "--model", "resnet20", "--data", data, "--batch-size", "20", "--device", "cpu",
            "--out", str(out), *extra]


def _events(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_one_epoch_json_progress_and_eval_agree(small_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_train_args(small_folder, out, "--epochs", "1", "--json-progress")) == 0
    events = _events(capsys.readouterr().out)  # every stdout line is one JSON object
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and "epoch" in kinds and "step" in kinds
    card = json.loads((out / "resnet20.json").read_text())
    assert events[-1]["test_acc"] == card["metrics"]["test_acc"]

    assert main(["eval", str(out / "resnet20.json"), "--data", small_folder, "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["test_acc"] == card["metrics"]["test_acc"]
    assert measured["n_test"] == 40 and len(measured["per_class_acc"]) == 10
    assert measured["test_loss"] == pytest.approx(card["metrics"]["test_loss"], rel=1e-6)

    # eval defaults to the card's dataset and prints a readable report
    assert main(["eval", str(out / "resnet20.json")]) == 0
    report = capsys.readouterr().out
    assert "matches the model card" in report and "airplane" in report


def test_progress_bar_for_people(small_folder, tmp_path, capsys):
    assert main(_train_args(small_folder, tmp_path / "run", "--epochs", "1", "--name", "people")) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # the bar and the summary go to stderr
    assert "epoch 1/1" in captured.err and "test accuracy" in captured.err
    assert (tmp_path / "run" / "people.safetensors").exists()


def test_injected_nan_exits_3_and_keeps_the_last_good_checkpoint(small_folder, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("ATTNVIZ_FAULT_NAN_AT_STEP", "6")  # 4 steps per epoch: epoch 2, step 2
    assert main(_train_args(small_folder, out, "--epochs", "3", "--json-progress")) == 3
    captured = capsys.readouterr()
    events = _events(captured.out)
    assert events[-1]["event"] == "error" and events[-1]["kind"] == "diverged"
    saved = [e for e in events if e["event"] == "checkpoint"]
    assert len(saved) == 1 and saved[0]["epochs_done"] == 1.0
    _, card = load_checkpoint(out / "resnet20.json")
    assert card["status"] == "diverged" and "epoch 2, step 2" in card["stopped_reason"]
    assert captured.err.strip().count("\n") == 0 and captured.err.startswith("error: Training diverged")


def test_bad_arguments_exit_2_with_one_line(small_folder, tmp_path, capsys):
    cases = [
        ["train", "--model", "resnet99", "--data", small_folder, "--out", str(tmp_path)],
        ["train", "--model", "resnet20", "--data", "imagenet", "--out", str(tmp_path)],
        ["train", "--model", "resnet20", "--epochs", "0", "--out", str(tmp_path)],
        ["train", "--model", "resnet20-interflow-soft", "--interflow-weight-lr-scale", "0", "--out", str(tmp_path)],
        ["train", "--model", "resnet20", "--average-epochs", "-1", "--out", str(tmp_path)],
        ["train", "--model", "resnet20", "--average-epochs", "2", "--average-lr", "0", "--out", str(tmp_path)],
        ["eval", str(tmp_path / "missing.json")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "sample"])  # --model missing
    assert info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.slow
def test_sigint_cancels_with_exit_130_and_a_loadable_checkpoint(small_folder, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "attnviz", *_train_args(small_folder, out, "--epochs", "50", "--json-progress")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=dict(os.environ))
    try:
        for line in proc.stdout:
            if json.loads(line)["event"] == "epoch":  # training is under way
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.stdout.read()
        assert proc.wait(timeout=300) == 130, proc.stderr.read()[-1000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    last = _events(rest)[-1]
    assert last["event"] == "error" and last["kind"] == "cancelled"
    model, card = load_checkpoint(out / "resnet20.json")
    assert card["status"] == "cancelled" and 1 <= card["epochs_done"] < 50
    assert (out / "resnet20.trainstate").exists()

    # --resume continues from there (shortened here by a cancel file after one more step)
    before = sha256_file(out / "resnet20.safetensors")
    (out / "CANCEL").write_text("")
    assert main(_train_args(small_folder, out, "--epochs", "50", "--resume")) == 130
    _, resumed = load_checkpoint(out / "resnet20.json")
    assert resumed["epochs_done"] > card["epochs_done"] and sha256_file(out / "resnet20.safetensors") != before


@pytest.mark.slow
def test_one_epoch_on_the_sample_set_from_the_command_line(tmp_path):
    """The issue's check, as a user runs it: train 1 epoch on `sample`, then `attnviz eval` in a new process."""
    out = tmp_path / "run"
    env = dict(os.environ)
    train = subprocess.run([sys.executable, "-m", "attnviz", "train", "--model", "resnet20-se", "--data", "sample",
                            "--epochs", "1", "--out", str(out), "--device", "cpu"],
                           capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert train.returncode == 0, train.stderr[-2000:]
    evaluated = subprocess.run([sys.executable, "-m", "attnviz", "eval", str(out / "resnet20-se.json"),
                                "--data", "sample", "--json"], capture_output=True, text=True, timeout=300,
                               cwd=REPO, env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    measured = json.loads(evaluated.stdout)
    card = json.loads((out / "resnet20-se.json").read_text())
    assert measured["test_acc"] == card["metrics"]["test_acc"] and measured["n_test"] == 500
    assert card["metrics"]["test_acc"] > 0.15  # one epoch on 2,000 real images beats chance (0.10)


def test_eval_of_a_shipped_card_without_data_asks_for_it_in_one_line(tmp_path, capsys):
    from attnviz.paths import SHIPPED_DIR

    card = json.loads((SHIPPED_DIR / "resnet20.json").read_text())
    assert card["dataset"] == "imagefolder:cifar10-jpeg.tar.gz"  # no path of the machine that trained it
    assert main(["eval", str(SHIPPED_DIR / "resnet20.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "pass --data" in err[0]


@pytest.mark.slow  # a real three-epoch run in a subprocess, suspended for a few seconds
@pytest.mark.parametrize("own_session", [False, True], ids=["terminal-job", "orphaned-background-job"])
def test_time_while_suspended_is_not_training_time(tmp_path, own_session):
    # own_session: the run leads its own session, so its process group is orphaned, like a
    # `nohup ... &` job whose shell has exited (the zoo's lanes); the kernel discards a default-action
    # SIGTSTP there, so the trainer must stop itself another way
    env = dict(os.environ, ATTNVIZ_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "attnviz", "train", "--model", "resnet20", "--data", "sample", "--epochs", "3",
           "--batch-size", "128", "--device", "cpu", "--out", str(tmp_path / "out"), "--json-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, start_new_session=own_session)
    for line in proc.stdout:  # wait until it is really training
        if '"event": "step"' in line:
            break
    proc.send_signal(signal.SIGTSTP)  # Ctrl-Z, during one of the epochs
    time.sleep(8)
    status = Path(f"/proc/{proc.pid}/status")
    if status.exists():  # Linux: the process must really stand still, not just keep training
        state = next(line for line in status.read_text().splitlines() if line.startswith("State:"))
        assert "stopped" in state, state
    proc.send_signal(signal.SIGCONT)
    proc.stdout.read()
    assert proc.wait(timeout=600) == 0
    card = json.loads((tmp_path / "out" / "resnet20.json").read_text())
    epoch_times = [entry["time_s"] for entry in card["history"]]
    # counted, the 8 suspended seconds would make one epoch that much longer than the others
    assert max(epoch_times) - min(epoch_times) < 4, epoch_times
