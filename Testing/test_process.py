"""The background process protocol, the runner, the stepped job and the device probe, with real child processes."""
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest

from MedSRLib import Cancelled, MedSRError, Volume
from MedSRLib.apps.process import (OUT_OF_MEMORY_ADVICE, DeviceProbe, JobState, ProcessRunner, SuperResolveJob,
    estimate_remaining_seconds, format_duration, format_progress_line, parse_progress_line, protocol_payload,
    readable_error, super_resolve_in_subprocess)
from MedSRLib.apps.worker import estimate_run_memory

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


def test_protocol_payloads():
    assert protocol_payload("MEDSR-STAGE", "MEDSR-STAGE Reading the input") == "Reading the input"
    assert protocol_payload("MEDSR-STAGE", "MEDSR-STAGE ") is None
    assert protocol_payload("MEDSR-STAGE", "MEDSR-STAGES x") is None
    assert protocol_payload("MEDSR-PROBE", "log: MEDSR-PROBE {}") is None


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


def test_runner_poll_never_blocks_and_reads_stages():
    runner = ProcessRunner(python_command("""
        print("MEDSR-PROGRESS 1/2", flush=True)
        print("MEDSR-STAGE Second part", flush=True)
    """))
    runner.start()
    assert runner.poll() is None  # the interpreter has not even started yet
    while (result := runner.poll()) is None:
        time.sleep(0.01)
    assert result.succeeded and result.error is None
    assert runner.stage == "Second part" and runner.last_progress is None  # a new stage starts its own progress


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
    """A stand-in 'python' that starts like the worker and then hangs, so the cancel is the only way out."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen_input = tmp_path / "seen"
    fake_python = tmp_path / "fake-python"
    fake_python.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""
        import os, sys, time
        # argv: -m MedSRLib.apps.worker run FOLDER
        open({str(seen_input)!r}, "w").write(str(os.path.exists(os.path.join(sys.argv[4], "input.npy"))))
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


def test_background_super_resolve_runs_the_worker(tmp_path, monkeypatch):
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


def test_job_steps_through_its_stages_with_progress(tmp_path, monkeypatch):
    """Input and result move a slab per poll; the B-spline comparison comes back on the same grid."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    ramp = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    job = SuperResolveJob(Volume(ramp, (1.0, 1.0, 3.0)), "linear", (1, 1, 3), {"device": "cpu"},
                          compare_bspline=True, step_bytes=ramp[0].nbytes)
    assert job.status_text() == "" and job.state == JobState.IDLE
    seen = {}
    job.start()
    while job.active:
        seen.setdefault(job.state, []).append(job.progress)
        assert job.status_text().startswith(job.stage)
        if job.poll() == JobState.RUNNING:
            time.sleep(0.01)
    assert job.state == JobState.DONE, job.message
    assert seen[JobState.PREPARING] == [(0, 0), (1, 4), (2, 4), (3, 4)]  # one slice per poll, then the child starts
    assert seen[JobState.IMPORTING][-1] == (23, 24)                      # 12 slices of the result, 12 of the comparison
    assert job.results["result"].metadata["method"] == "linear"
    assert job.results["comparison"].metadata["method"] == "bspline"
    assert job.results["comparison"].array.shape == job.results["result"].array.shape == (12, 5, 6)
    assert job.results["comparison"].origin == job.results["result"].origin
    assert list(tmp_path.iterdir()) == []


def test_device_probe_reports_devices_backends_and_an_estimate():
    from MedSRLib.engine.backends import backend_availability
    probe = DeviceProbe({"method": "bspline", "shape": [10, 20, 30], "scale": [1, 1, 2], "device": "auto"})
    probe.start()
    while not probe.poll():
        time.sleep(0.02)
    devices, estimate = probe.report["devices"], probe.report["estimate"]
    assert devices["cpu"]["available"] and devices["cpu"]["free_bytes"] > 0
    assert set(devices) == {"cpu", "cuda", "mps"}
    assert probe.report["backends"] == backend_availability()  # OpenVINO offered where the child can import it
    # Interpolation: the float32 output and the normalised input, in the computer's memory.
    assert estimate == {"device": devices["cuda"]["available"] and "cuda" or "cpu",
                        "needs": {"cpu": 4 * (20 * 20 * 30 + 10 * 20 * 30)}, "tiled": False}


def test_memory_estimate_of_a_network_uses_the_engine_estimate():
    from MedSRLib.engine.tiling import TilingOptions, estimate_memory
    from MedSRLib.methods import get_method
    method = get_method("threeplayer")
    on_cpu = estimate_run_memory("threeplayer", (40, 48, 56), 2, patch=16, batch_size=2, device="cpu")
    engine = estimate_memory((40, 48, 56), (2, 2, 2), TilingOptions(
        patch=16, stride=method.default_stride, batch_size=2, activation_factor=method.activation_factor))
    host = 4 * (80 * 96 * 112 + 40 * 48 * 56)
    assert on_cpu == {"needs": {"cpu": host + engine}, "tiled": True}
    assert estimate_run_memory("threeplayer", (40, 48, 56), 2, patch=16, batch_size=2, device="cuda")["needs"] \
        == {"cpu": host, "cuda": engine}


def test_the_estimate_tiles_what_the_method_would_tile():
    from MedSRLib.methods import RunSettings, get_method
    # SMORE: slices through the thick axis of the volume already interpolated onto the output grid, whole by default.
    shape, factors, options = get_method("smore").tiled_pass((10, 24, 20), (1, 1, 3), RunSettings())
    assert shape == (30, 24, 20) and factors == (1, 1, 1)
    assert options.mode == "2d" and options.slice_axis == 1 and options.patch == (30, 20)
    # A 3D network tiles the input itself at the model's window; interpolation tiles nothing.
    shape, factors, options = get_method("threeplayer").tiled_pass((10, 24, 20), (2, 2, 2), RunSettings(patch=(16,)*3))
    assert shape == (10, 24, 20) and factors == (2, 2, 2) and options.patch == (16, 16, 16) and options.mode == "3d"
    assert get_method("bspline").tiled_pass((10, 24, 20), (2, 2, 2), RunSettings()) is None
