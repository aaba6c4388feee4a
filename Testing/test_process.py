"""The progress-line protocol and the background process runner, with real child processes."""
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

from MedSRLib import Cancelled, InputError, MedSRError, Volume
from MedSRLib.apps.process import (OUT_OF_MEMORY_ADVICE, ProcessRunner, cli_arguments, estimate_remaining_seconds,
    format_duration, format_progress_line, parse_progress_line, readable_error, super_resolve_in_subprocess)

posix_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process states from /proc")


def python_command(source):
    return [sys.executable, "-c", textwrap.dedent(source)]


def is_alive(pid):
    """True while ``pid`` runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(condition, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_progress_lines_round_trip():
    assert format_progress_line(12, 40) == "MEDSR-PROGRESS 12/40"
    assert parse_progress_line("MEDSR-PROGRESS 12/40\n") == (12, 40)
    assert parse_progress_line(format_progress_line(0, 1)) == (0, 1)


@pytest.mark.parametrize("line", ["", "wrote out.nrrd", "MEDSR-PROGRESS 3", "MEDSR-PROGRESS -1/4",
                                  "MEDSR-PROGRESS 1/2 extra", "log: MEDSR-PROGRESS 1/2", "MEDSR-PROGRESS a/b"])
def test_other_lines_are_not_progress(line):
    assert parse_progress_line(line) is None


def test_eta_and_durations():
    # 2 of 10 units took 10 s: 8 more take 40 s.
    assert estimate_remaining_seconds(10.0, 2, 10) == pytest.approx(40.0)
    assert estimate_remaining_seconds(10.0, 0, 10) is None
    assert estimate_remaining_seconds(10.0, 10, 10) == 0
    assert format_duration(12.4) == "12 s"
    assert format_duration(65) == "1 min 05 s"
    assert format_duration(3720) == "1 h 02 min"
    assert format_duration(None) == "…"


def test_readable_errors():
    traceback = ["Traceback (most recent call last):", '  File "x.py", line 1',
                 "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"]
    assert readable_error(1, traceback) == OUT_OF_MEMORY_ADVICE
    assert readable_error(2, ["medsr: warning: looks like a label map", "medsr: error: Scale 9 is above 8."]) \
        == "Scale 9 is above 8."
    assert "signal 9" in readable_error(-9, [])
    assert readable_error(1, ["ValueError: bad", ""]) == "The processing failed with exit code 1 (ValueError: bad)."


def test_cli_arguments_mirror_super_resolve_options():
    assert cli_arguments("bspline", (1, 1, 3), patch=(8, 16, 16), batch_size=2, device="cpu", blend=None) == [
        "--method", "bspline", "--scale", "1,1,3", "--patch", "8,16,16", "--batch", "2", "--device", "cpu"]
    assert cli_arguments("linear", 2, memory_budget_gb=1.5) == [
        "--method", "linear", "--scale", "2", "--memory-budget", "1.5"]
    with pytest.raises(InputError, match="sharpness"):
        cli_arguments("bspline", 2, sharpness=3)


def test_runner_reports_progress_logs_and_the_error_sentence():
    progress, logs = [], []
    runner = ProcessRunner(python_command("""
        import sys
        for done in (1, 2, 3):
            print(f"MEDSR-PROGRESS {done}/3", flush=True)
        print("loaded the model", flush=True)
        print("medsr: error: The input volume is constant.", file=sys.stderr)
        sys.exit(2)
    """), progress=lambda done, total: progress.append((done, total)), log=logs.append)
    result = runner.wait()
    assert progress == [(1, 3), (2, 3), (3, 3)]
    assert "loaded the model" in logs
    assert result.returncode == 2 and not result.succeeded and not result.cancelled
    assert result.error == "The input volume is constant."


def test_runner_success_and_idle_callback():
    idle_calls = []
    runner = ProcessRunner(python_command("import time; time.sleep(0.3); print('MEDSR-PROGRESS 1/1')"))
    result = runner.wait(idle=lambda: idle_calls.append(1))
    assert result.succeeded and result.error is None
    assert runner.last_progress == (1, 1)
    assert len(idle_calls) >= 2  # called while the child was still running


@posix_only
def test_cancel_kills_the_child_and_its_stubborn_grandchild(tmp_path):
    pid_file = tmp_path / "pids"
    runner = ProcessRunner(python_command(f"""
        import os, subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        with open({str(pid_file)!r}, "w") as handle:
            handle.write(f"{{os.getpid()}} {{grandchild.pid}}")
        print("MEDSR-PROGRESS 1/100", flush=True)
        time.sleep(600)
    """))
    started = time.monotonic()
    result = runner.wait(cancel=lambda: runner.last_progress is not None)
    assert result.cancelled and not result.succeeded
    assert time.monotonic() - started < 30
    child, grandchild = (int(pid) for pid in pid_file.read_text().split())
    assert not is_alive(child)
    assert wait_until(lambda: not is_alive(grandchild)), "the grandchild survived the cancel"


@posix_only
def test_background_super_resolve_cancel_removes_its_temporary_files(tmp_path, monkeypatch):
    """A stand-in 'python' that starts like the CLI and then hangs, so the cancel is the only way out."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen_input = tmp_path / "seen"
    fake_python = tmp_path / "fake-python"
    fake_python.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""
        import os, sys, time
        # argv: -m MedSRLib.cli super-resolve INPUT OUTPUT ...
        open({str(seen_input)!r}, "w").write(str(os.path.exists(sys.argv[4])))
        print("MEDSR-PROGRESS 0/10", flush=True)
        time.sleep(600)
    """))
    fake_python.chmod(0o755)
    volume = Volume(np.random.default_rng(0).random((4, 5, 6), dtype=np.float32), (1.0, 1.0, 3.0))
    progress = []
    with pytest.raises(Cancelled):
        super_resolve_in_subprocess(volume, "bspline", (1, 1, 3), python=str(fake_python),
                                    progress=lambda done, total: progress.append(done), cancel=lambda: bool(progress))
    assert seen_input.read_text() == "True"
    assert progress == [0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["fake-python", "seen"]


def test_background_super_resolve_runs_the_cli(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ramp = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    volume = Volume(ramp, (1.0, 1.0, 3.0), (10.0, -20.0, 5.0))
    progress = []
    result = super_resolve_in_subprocess(volume, "linear", (1, 1, 3), progress=lambda done, total: progress.append(
        (done, total)))
    assert result.array.shape == (12, 5, 6)
    # Linear ×3 along k of a ramp of 30 per slice: output slice t sits at input slice (t + ½)/3 − ½, held at the
    # first and last slice beyond their centres.
    positions = np.clip((np.arange(12) + 0.5) / 3 - 0.5, 0, 3)
    np.testing.assert_allclose(result.array, 30 * positions[:, None, None] + ramp[0], atol=1e-3)
    assert result.spacing == pytest.approx((1.0, 1.0, 1.0))
    assert result.origin == pytest.approx((10.0, -20.0, 4.0))  # o + (s' − s)/2 along z
    assert result.metadata["method"] == "linear"
    assert result.metadata["scale"] == [1.0, 1.0, 3.0]
    assert progress and progress[-1][0] == progress[-1][1]
    assert list(tmp_path.iterdir()) == []


def test_background_failure_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    volume = Volume(np.ones((4, 5, 6), dtype=np.float32), (1.0, 1.0, 1.0))
    with pytest.raises(MedSRError, match="constant") as raised:
        super_resolve_in_subprocess(volume, "bspline", 2)
    assert "\n" not in str(raised.value) and not isinstance(raised.value, Cancelled)
    assert list(tmp_path.iterdir()) == []
