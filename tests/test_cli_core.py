import json
import subprocess
import sys
import textwrap

import pytest
import torch

from attnviz.checkpoints import save_checkpoint
from attnviz.cli import main
from attnviz.device import pick_device
from attnviz.errors import AttnvizError
from attnviz.models.registry import create_model


def test_params_json_has_paper_figures(capsys):
    assert main(["params", "--arch", "resnet18", "--classes", "10", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_spec = {r["spec"]: r for r in rows}
    assert by_spec["resnet18-lgam"]["paper_params_m"] == 11.20
    assert abs(by_spec["resnet18-lgam"]["delta_m"]) <= 0.02
    assert by_spec["resnet18"]["flops"] > 1e9


def test_params_table_text(capsys):
    assert main(["params", "--arch", "resnet20", "--classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "resnet20-se-felu" in out and "MFLOPs" in out


def test_bad_arguments_exit_2_with_one_line(capsys):
    assert main(["params", "--arch", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        main(["params", "--bogus"])
    assert info.value.code == 2


def test_zoo_list_json(tmp_path, monkeypatch, capsys):
    save_checkpoint(create_model("resnet20"), tmp_path, "mine", {"dataset": "sample", "metrics": {"test_acc": 0.5}})
    monkeypatch.setenv("ATTNVIZ_CHECKPOINTS", str(tmp_path))
    assert main(["zoo", "list", "--json"]) == 0
    rows = [r for r in json.loads(capsys.readouterr().out) if r["name"] == "mine"]
    assert rows and rows[0]["test_acc"] == 0.5 and rows[0]["spec"] == "resnet20"


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "attnviz", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("attnviz ")


def test_device_choice():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None).type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(AttnvizError):
            pick_device("cuda")
    with pytest.raises(AttnvizError):
        pick_device("tpu")



@pytest.mark.parametrize("value, threads", [(None, 1), ("", 1), (" 3 ", 3), ("1", 1)])
def test_serving_threads_default_to_one_and_follow_the_environment(value, threads):
    from attnviz.device import serving_threads

    assert serving_threads({} if value is None else {"ATTNVIZ_THREADS": value}) == threads


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5", "5000"])
def test_a_bad_thread_count_is_refused_in_one_sentence(value):
    from attnviz.device import serving_threads

    with pytest.raises(AttnvizError) as err:
        serving_threads({"ATTNVIZ_THREADS": value})
    assert "ATTNVIZ_THREADS" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("value, seconds", [(None, 30.0), ("", 30.0), ("0", 0.0), (" 2.5 ", 2.5)])
def test_the_heap_trim_interval_defaults_to_30_s_and_follows_the_environment(value, seconds):
    from attnviz.device import trim_interval

    assert trim_interval({} if value is None else {"ATTNVIZ_TRIM_SECONDS": value}) == seconds


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf", "100000"])
def test_a_bad_heap_trim_interval_is_refused_in_one_sentence(value):
    from attnviz.device import trim_interval

    with pytest.raises(AttnvizError) as err:
        trim_interval({"ATTNVIZ_TRIM_SECONDS": value})
    assert "ATTNVIZ_TRIM_SECONDS" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_returning_the_free_heap_gives_a_fragmented_heaps_pages_back_to_the_system():
    # a fresh process: 200 MB of 4 KB buffers from malloc, every 64th kept so the heap cannot shrink from
    # its top by itself; what the rest freed stays resident until it is handed back
    script = textwrap.dedent("""
        import sys
        from attnviz.device import return_free_heap

        def rss_mb():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

        buffers = [bytearray(4096) for _ in range(50_000)]
        kept = buffers[::64]
        del buffers
        before = rss_mb()
        if not return_free_heap():
            sys.exit(3)
        print(before, rss_mb())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    if done.returncode == 3:
        pytest.skip("no glibc malloc_trim on this system")
    assert done.returncode == 0, done.stderr
    before, after = map(float, done.stdout.split())
    assert before - after > 100, (before, after)


def test_the_heap_trimmer_is_a_daemon_thread_and_off_at_0():
    from attnviz.device import start_heap_trimmer

    assert start_heap_trimmer(0) is None
    thread = start_heap_trimmer(3600)
    if sys.platform.startswith("linux"):  # glibc: elsewhere there is nothing to trim and no thread
        assert thread is not None and thread.daemon and thread.is_alive() and thread.name == "attnviz-heap-trimmer"


def test_configuring_serving_threads_sets_torchs_and_returns_it():
    from attnviz.device import configure_serving_threads

    before = torch.get_num_threads()
    try:
        assert configure_serving_threads({"ATTNVIZ_THREADS": "1"}) == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def test_settling_the_heap_collects_garbage_then_hides_the_living_from_later_collections():
    import gc
    import weakref

    from attnviz.device import settle_heap

    class Node:
        pass

    garbage = Node()
    garbage.self = garbage  # a reference cycle: only the collector frees it
    gone = weakref.ref(garbage)
    kept = [Node() for _ in range(3)]
    del garbage
    try:
        frozen = settle_heap()
        assert gone() is None  # collected before freezing: no garbage is frozen forever
        assert frozen == gc.get_freeze_count() >= 3
        tracked = {id(obj) for obj in gc.get_objects()}
        assert not any(id(node) in tracked for node in kept)  # later collections skip them
    finally:
        gc.unfreeze()
