"""Run MedSR in a separate process and follow its progress (Qt-free, no Slicer import).

The child (``python -m MedSRLib.cli super-resolve ... --progress-lines``) prints one line per progress step on stdout in
the form ``MEDSR-PROGRESS <done>/<total>``; every other line is log text. The 3D Slicer module runs the child with
PythonSlicer so that Slicer stays responsive, shows the progress, and can cancel: :class:`ProcessRunner` starts the child
in its own process group, reads its output in threads, and hands progress and log lines to callbacks on the thread that
waits (so a Qt panel can update its widgets there).
"""
import collections
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Deque, List, Optional, Sequence, Tuple

from MedSRLib.errors import Cancelled, InputError, MedSRError
from MedSRLib.progress import CancelCheck, ProgressCallback

PROGRESS_PREFIX = "MEDSR-PROGRESS"
_PROGRESS_PATTERN = re.compile(r"^MEDSR-PROGRESS (\d+)/(\d+)\s*$")
# The CLI prefixes its one-sentence errors with this; the panel shows the sentence alone.
_CLI_ERROR_PREFIX = re.compile(r"^medsr: (error|warning): ")
_OUT_OF_MEMORY_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "CUBLAS_STATUS_ALLOC_FAILED",
                          "MPS backend out of memory")
OUT_OF_MEMORY_ADVICE = ("The GPU ran out of memory; choose a smaller patch size or batch, run on the CPU, or crop the "
                        "volume to the region of interest with the Crop Volume module first.")
# How long a cancelled child gets to exit after SIGTERM before it and its children are killed.
TERMINATE_GRACE_S = 3.0
STDERR_LINES_KEPT = 50

LogCallback = Callable[[str], None]


def format_progress_line(done: int, total: int) -> str:
    """The stdout line (without newline) that reports ``done`` of ``total`` units."""
    return f"{PROGRESS_PREFIX} {int(done)}/{int(total)}"


def parse_progress_line(line: str) -> Optional[Tuple[int, int]]:
    """``(done, total)`` if ``line`` is a progress line, else None."""
    match = _PROGRESS_PATTERN.match(line.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def estimate_remaining_seconds(elapsed_s: float, done: int, total: int) -> Optional[float]:
    """Seconds left at the rate so far, or None before the first unit is done."""
    if done <= 0 or total <= 0:
        return None
    return elapsed_s / done * max(total - done, 0)


def format_duration(seconds: Optional[float]) -> str:
    """'1 h 02 min', '3 min 05 s', '12 s', or '…' when unknown."""
    if seconds is None:
        return "…"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def readable_error(returncode: int, stderr_lines: Sequence[str]) -> str:
    """One sentence that tells the user why the child failed (with advice for running out of memory)."""
    text = "\n".join(stderr_lines)
    if any(marker in text for marker in _OUT_OF_MEMORY_MARKERS):
        return OUT_OF_MEMORY_ADVICE
    errors = [line for line in stderr_lines if line.startswith("medsr: error: ")]
    if errors:
        return _CLI_ERROR_PREFIX.sub("", errors[-1]).strip()
    if returncode < 0:
        return (f"The processing was stopped by signal {-returncode}, often because the computer ran out of memory; "
                "choose a smaller patch size or crop the volume with the Crop Volume module.")
    last = next((line.strip() for line in reversed(stderr_lines) if line.strip()), "no message")
    return f"The processing failed with exit code {returncode} ({last})."


@dataclass
class ProcessResult:
    returncode: Optional[int]
    cancelled: bool
    error: Optional[str]   # one readable sentence when the run failed, else None

    @property
    def succeeded(self) -> bool:
        return not self.cancelled and self.returncode == 0


class ProcessRunner:
    """One child process: start it, follow progress and log lines, wait for it or cancel it with its children."""

    def __init__(self, command: Sequence[str], progress: Optional[ProgressCallback] = None,
                 log: Optional[LogCallback] = None, env: Optional[dict] = None, cwd: Optional[str] = None):
        self.command = [str(part) for part in command]
        self.progress = progress
        self.log = log
        self.env = env
        self.cwd = cwd
        self.process: Optional[subprocess.Popen] = None
        self.last_progress: Optional[Tuple[int, int]] = None
        self.cancelled = False
        self._events: "queue.Queue[Tuple[str, str]]" = queue.Queue()
        self._stderr_tail: Deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._readers: List[threading.Thread] = []

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("this runner was already started")
        if os.name == "nt":
            group = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
        else:
            group = {"start_new_session": True}
        self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, encoding="utf-8", errors="replace",
                                        bufsize=1, env=self.env, cwd=self.cwd, **group)
        for stream, kind in ((self.process.stdout, "stdout"), (self.process.stderr, "stderr")):
            reader = threading.Thread(target=self._read, args=(stream, kind), daemon=True)
            reader.start()
            self._readers.append(reader)

    def _read(self, stream, kind: str) -> None:
        for line in stream:
            self._events.put((kind, line.rstrip("\r\n")))
        stream.close()

    def deliver_events(self) -> None:
        """Call the progress and log callbacks for every line read so far (on the calling thread)."""
        while True:
            try:
                kind, line = self._events.get_nowait()
            except queue.Empty:
                return
            parsed = parse_progress_line(line) if kind == "stdout" else None
            if parsed is not None:
                self.last_progress = parsed
                if self.progress is not None:
                    self.progress(*parsed)
                continue
            if kind == "stderr":
                self._stderr_tail.append(line)
            if self.log is not None and line.strip():
                self.log(line)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait(self, cancel: Optional[CancelCheck] = None, idle: Optional[Callable[[], None]] = None,
             poll_interval_s: float = 0.05) -> ProcessResult:
        """Deliver events until the child exits; cancel it when ``cancel()`` says so; call ``idle()`` between polls
        (the Slicer module passes ``slicer.app.processEvents`` so the application stays responsive)."""
        if self.process is None:
            self.start()
        while self.process.poll() is None:
            self.deliver_events()
            if cancel is not None and not self.cancelled and cancel():
                self.cancel()
            if idle is not None:
                idle()
            time.sleep(poll_interval_s)
        for reader in self._readers:
            reader.join()
        self.deliver_events()
        return self.result()

    def result(self) -> ProcessResult:
        returncode = self.process.returncode if self.process is not None else None
        if self.cancelled:
            return ProcessResult(returncode, True, "Cancelled by the user; nothing was added.")
        if returncode == 0:
            return ProcessResult(0, False, None)
        return ProcessResult(returncode, False, readable_error(returncode, list(self._stderr_tail)))

    def cancel(self) -> None:
        """Stop the child and every process it started, politely first, then by force."""
        self.cancelled = True
        if self.process is None:
            return
        if os.name == "nt":
            # taskkill /T is the only way to reach the grandchildren on Windows.
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], capture_output=True, check=False)
        else:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(TERMINATE_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            self._signal_group(signal.SIGKILL)  # also reaches children that outlived or ignored SIGTERM
        self.process.wait()

    def _signal_group(self, signum) -> None:
        # The child leads its own session, so its process group id is its pid (even after it exited).
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:
            pass


def library_root() -> str:
    """The folder that contains the MedSRLib package (put on the child's PYTHONPATH)."""
    return str(Path(__file__).resolve().parents[2])


def cli_arguments(method: str, scale, patch=None, stride=None, blend=None, batch_size=None, device=None,
                  checkpoint=None, memory_budget_gb=None, normalisation=None, window=None,
                  output_dtype=None, **method_options) -> List[str]:
    """The ``medsr super-resolve`` options that reproduce a :func:`MedSRLib.super_resolve` call."""
    if method_options:
        raise InputError(f"The option(s) {', '.join(sorted(method_options))} cannot be passed to a background run; "
                         "call MedSRLib.super_resolve in this process instead.")

    def joined(values):
        return ",".join(str(v) for v in (values if isinstance(values, (list, tuple)) else [values]))

    arguments = ["--method", method, "--scale", joined(scale)]
    for flag, value in (("--patch", patch), ("--stride", stride), ("--blend", blend), ("--batch", batch_size),
                        ("--device", device), ("--checkpoint", checkpoint), ("--memory-budget", memory_budget_gb),
                        ("--normalisation", normalisation), ("--window", window), ("--output-dtype", output_dtype)):
        if value is not None:
            arguments += [flag, joined(value)]
    return arguments


def super_resolve_in_subprocess(volume, method: str = "bspline", scale=2, *, python: Optional[str] = None,
                                progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
                                log: Optional[LogCallback] = None, idle: Optional[Callable[[], None]] = None,
                                **options):
    """:func:`MedSRLib.super_resolve` run by the ``medsr`` CLI in a child Python (``python``, default this one).

    The volume travels through files in a temporary folder that is removed afterwards, whatever happens. Raises
    :class:`Cancelled` when ``cancel()`` became true, :class:`MedSRError` with one readable sentence on failure.
    """
    from MedSRLib.io.volume_files import read_volume, write_volume

    arguments = cli_arguments(method, scale, **options)
    folder = tempfile.mkdtemp(prefix="medsr-")
    try:
        input_path = os.path.join(folder, "input.nrrd")
        output_path = os.path.join(folder, "output.nrrd")
        metadata_path = os.path.join(folder, "metadata.json")
        write_volume(volume, input_path)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [library_root(), env.get("PYTHONPATH")]))
        command = [python or sys.executable, "-m", "MedSRLib.apps.cli", "super-resolve", input_path, output_path,
                   *arguments, "--metadata-json", metadata_path, "--progress-lines"]
        outcome = ProcessRunner(command, progress=progress, log=log, env=env).wait(cancel=cancel, idle=idle)
        if outcome.cancelled:
            raise Cancelled(outcome.error)
        if not outcome.succeeded:
            raise MedSRError(outcome.error)
        result = read_volume(output_path)
        with open(metadata_path, encoding="utf-8") as handle:
            result.metadata = json.load(handle)
        return result
    finally:
        shutil.rmtree(folder, ignore_errors=True)
