"""Run MedSR in a background process and follow it without blocking (Qt-free, no Slicer import).

The background process is ``python -m MedSRLib.apps.worker`` (PythonSlicer inside 3D Slicer). Parent and child share a
job folder (:class:`JobFolder`: the request as JSON, each volume as a ``.npy`` array beside a JSON header) and the
child's stdout, where protocol lines report progress (``MEDSR-PROGRESS <done>/<total>``), the current stage
(``MEDSR-STAGE <text>``) and device probes (``MEDSR-PROBE <json>``); every other line is log text.

:class:`SuperResolveJob` is one super-resolution advanced by :meth:`SuperResolveJob.poll`: each call does one bounded
step (a slab of the input written, the child's new output lines read, or a slab of the result read back), so a GUI
timer can drive it without a nested event loop, and :meth:`SuperResolveJob.cancel` works between any two steps.
:class:`JobSeries` runs several such jobs one after another as one job, a failed one not stopping the rest.
:class:`DeviceProbe` asks a child which devices exist, their free memory and what a run would need.
:class:`ProcessRunner` starts a child in its own process group, reads its output in threads and cancels it with its
children.
"""
import collections
import json
import logging
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
from enum import Enum
from pathlib import Path
from typing import Callable, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np

from MedSRLib.errors import Cancelled, MedSRError
from MedSRLib.io.volume import Volume
from MedSRLib.progress import CancelCheck, ProgressCallback

PROGRESS_PREFIX = "MEDSR-PROGRESS"
STAGE_PREFIX = "MEDSR-STAGE"
PROBE_PREFIX = "MEDSR-PROBE"
_PROGRESS_PATTERN = re.compile(r"^MEDSR-PROGRESS (\d+)/(\d+)\s*$")
_CLI_ERROR_PREFIX = re.compile(r"^medsr: (error|warning): ")
_OUT_OF_MEMORY_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "CUBLAS_STATUS_ALLOC_FAILED",
                          "MPS backend out of memory")
OUT_OF_MEMORY_ADVICE = ("The GPU ran out of memory; choose a smaller patch size or batch, run on the CPU, or crop the "
                        "volume to the region of interest with the Crop Volume module first.")
# How long a cancelled child gets to exit after SIGTERM before it and its children are killed.
TERMINATE_GRACE_S = 3.0
STDERR_LINES_KEPT = 50
WORKER_MODULE = "MedSRLib.apps.worker"
# One poll copies at most this much of the input or of the result, so a GUI timer driving a job stays responsive.
STEP_BYTES = 16 << 20
CANCELLED_MESSAGE = "Cancelled; nothing was added."

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


def protocol_payload(prefix: str, line: str) -> Optional[str]:
    """What follows ``prefix`` on a ``prefix payload`` protocol line, else None."""
    head, _, payload = line.partition(" ")
    return payload.strip() if head == prefix and payload.strip() else None


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
    """One child process: start it, follow its protocol and log lines, poll or wait for it, or cancel it with its
    children."""

    def __init__(self, command: Sequence[str], progress: Optional[ProgressCallback] = None,
                 log: Optional[LogCallback] = None, env: Optional[dict] = None, cwd: Optional[str] = None):
        self.command = [str(part) for part in command]
        self.progress = progress
        self.log = log
        self.env = env
        self.cwd = cwd
        self.process: Optional[subprocess.Popen] = None
        self.last_progress: Optional[Tuple[int, int]] = None
        self.stage: Optional[str] = None
        self.probe: Optional[dict] = None
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
        """Take in every line read so far (on the calling thread): progress, stage and probe lines update this
        runner and call ``progress``; log lines go to ``log``."""
        while True:
            try:
                kind, line = self._events.get_nowait()
            except queue.Empty:
                return
            if kind == "stdout" and self._take_protocol_line(line):
                continue
            if kind == "stderr":
                self._stderr_tail.append(line)
            if self.log is not None and line.strip():
                self.log(line)

    def _take_protocol_line(self, line: str) -> bool:
        progress = parse_progress_line(line)
        if progress is not None:
            self.last_progress = progress
            if self.progress is not None:
                self.progress(*progress)
            return True
        stage = protocol_payload(STAGE_PREFIX, line)
        if stage is not None:
            self.stage, self.last_progress = stage, None
            return True
        probe = protocol_payload(PROBE_PREFIX, line)
        if probe is not None:
            self.probe = json.loads(probe)
            return True
        return False

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def poll(self) -> Optional[ProcessResult]:
        """Take in the lines read so far; the result once the child has exited and all its output is read, else
        None. Never blocks."""
        self.deliver_events()
        if self.process is None or self.process.poll() is None:
            return None
        if any(reader.is_alive() for reader in self._readers):
            # Still reading, or a process the child left behind holds the pipes open: end those too.
            self._signal_group(signal.SIGKILL)
            return None
        self.deliver_events()
        return self.result()

    def wait(self, cancel: Optional[CancelCheck] = None, poll_interval_s: float = 0.05) -> ProcessResult:
        """Block until the child exits (scripts and tests; a GUI calls :meth:`poll` from a timer instead); cancel it
        when ``cancel()`` says so."""
        if self.process is None:
            self.start()
        while True:
            outcome = self.poll()
            if outcome is not None:
                return outcome
            if cancel is not None and not self.cancelled and cancel():
                self.cancel()
            time.sleep(poll_interval_s)

    def result(self) -> ProcessResult:
        returncode = self.process.returncode if self.process is not None else None
        if self.cancelled:
            return ProcessResult(returncode, True, CANCELLED_MESSAGE)
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
        if os.name == "nt":
            return
        # The child leads its own session, so its process group id is its pid (even after it exited).
        try:
            os.killpg(self.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def options_from_json(options: dict) -> dict:
    """super_resolve's keyword options as read from JSON, whose arrays become the tuples they were (patch, window)."""
    return {name: tuple(value) if isinstance(value, list) else value for name, value in options.items()}


def library_root() -> str:
    """The folder that contains the MedSRLib package (put on the child's PYTHONPATH)."""
    return str(Path(__file__).resolve().parents[2])


def worker_command(python: Optional[str], *arguments: str) -> Tuple[List[str], dict]:
    """The command line and environment of a background worker run with ``python`` (default: this one)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [library_root(), env.get("PYTHONPATH")]))
    return [python or sys.executable, "-m", WORKER_MODULE, *arguments], env


class JobFolder:
    """The files a job's parent and child share: the request, each volume (``input``, ``reference``, ``result``,
    ``comparison``, ``difference``) as a ``.npy`` array beside a JSON header with its geometry and metadata, and the
    scores against the reference."""
    REQUEST = "request.json"
    METRICS = "metrics.json"   # {"scores": {method: compare's scores}} or {"error": one sentence}

    def __init__(self, path):
        self.path = Path(path)

    @classmethod
    def create(cls) -> "JobFolder":
        return cls(tempfile.mkdtemp(prefix="medsr-"))

    def array_path(self, name: str) -> Path:
        return self.path / f"{name}.npy"

    def write_json(self, name: str, document: dict) -> None:
        (self.path / name).write_text(json.dumps(document), encoding="utf-8")

    def read_json(self, name: str) -> dict:
        return json.loads((self.path / name).read_text(encoding="utf-8"))

    def write_header(self, name: str, volume: Volume) -> None:
        self.write_json(f"{name}.json", {"spacing": volume.spacing, "origin": volume.origin,
                                         "direction": volume.direction, "metadata": volume.metadata})

    def volume(self, name: str, array: np.ndarray) -> Volume:
        """``array`` with the geometry and metadata of volume ``name``'s header."""
        return Volume(array, **self.read_json(f"{name}.json"))

    def save_volume(self, name: str, volume: Volume) -> None:
        np.save(self.array_path(name), np.ascontiguousarray(volume.array))
        self.write_header(name, volume)

    def load_volume(self, name: str) -> Volume:
        return self.volume(name, np.load(self.array_path(name)))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class SlabCopy:
    """Copies a (k, j, i) array into another, whole k-slices at a time, at most about ``step_bytes`` per step."""

    def __init__(self, source: np.ndarray, target: np.ndarray, step_bytes: int):
        self.source, self.target = source, target
        self.slices_per_step = max(1, step_bytes // max(source[:1].nbytes, 1))
        self.done = 0

    @property
    def total(self) -> int:
        return len(self.source)

    def step(self) -> None:
        end = min(self.done + self.slices_per_step, self.total)
        self.target[self.done:end] = self.source[self.done:end]
        self.done = end


class JobState(str, Enum):
    IDLE = "idle"
    PREPARING = "preparing"   # writing the input for the child, a slab per poll
    RUNNING = "running"       # the child super-resolves (and computes the B-spline comparison and the metrics)
    IMPORTING = "importing"   # reading the child's results back, a slab per poll
    DONE = "done"
    CANCELLED = "cancelled"
    FAILED = "failed"


ACTIVE_STATES = frozenset({JobState.PREPARING, JobState.RUNNING, JobState.IMPORTING})
_logger = logging.getLogger(__name__)


def failure_sentence(error: Exception) -> str:
    """The one sentence a job ends with when a step raised ``error`` (call it in the ``except`` block): a MedSRError's
    own; anything else (a bug, an OS error) is logged with its traceback and named."""
    if isinstance(error, MedSRError):
        return str(error)
    _logger.exception("MedSR job step failed")
    return f"The processing failed unexpectedly ({type(error).__name__}: {error})."


RESULT, COMPARISON, DIFFERENCE, REFERENCE = "result", "comparison", "difference", "reference"


class ActiveWhileWorking:
    """``active``: True while the job is preparing, running or importing (its ``state`` in ACTIVE_STATES)."""
    state: JobState

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class SuperResolveJob(ActiveWhileWorking):
    """One :func:`MedSRLib.super_resolve` call in a background process, advanced one bounded step per :meth:`poll`.

    ``start()`` enters PREPARING; polls write the input (and the ``reference``), run the child (RUNNING), read the
    result back (IMPORTING) and end in DONE (``results`` holds ``"result"``, with ``compare_bspline`` the cubic
    B-spline ``"comparison"`` on the same grid, with ``difference_to_bspline`` the ``"difference"`` result −
    B-spline), FAILED or CANCELLED, with one sentence in ``message``. With a ``reference`` the child also scores the
    result and B-spline against it (:func:`MedSRLib.apps.compare.scores_against_reference`): ``metrics`` maps each
    method to its scores, or ``metrics_error`` says in one sentence why there are none (the result still comes).
    Whatever the end, the child is gone and the job folder removed. ``stage`` and ``progress`` describe the current
    step for a progress bar. A subclass that reads its volumes only when the job starts passes ``volume=None`` (and
    ``score_against_reference``) and sets ``volume`` and ``reference`` in ``_begin``.
    """
    def __init__(self, volume: Optional[Volume], method: str = "bspline", scale=2, options: Optional[dict] = None, *,
                 compare_bspline: bool = False, difference_to_bspline: bool = False,
                 reference: Optional[Volume] = None, score_against_reference: Optional[bool] = None,
                 python: Optional[str] = None, log: Optional[LogCallback] = None, step_bytes: int = STEP_BYTES):
        self.volume = volume
        self.reference = reference
        self.method = method
        self.request = {"method": method, "scale": scale if scale is None or isinstance(scale, (str, int, float)) else
                        [float(value) for value in scale],
                        "options": dict(options or {}), "compare_bspline": compare_bspline and method != "bspline",
                        "difference_to_bspline": difference_to_bspline and method != "bspline",
                        "score_against_reference": reference is not None if score_against_reference is None
                        else score_against_reference}
        self.python = python
        self.log = log
        self.step_bytes = step_bytes
        self.state = JobState.IDLE
        self.message = ""
        self.stage = ""
        self.stage_started = time.monotonic()
        self.progress: Tuple[int, int] = (0, 0)
        self.results: Dict[str, Volume] = {}
        self.metrics: Optional[Dict[str, dict]] = None
        self.metrics_error: Optional[str] = None
        self._folder: Optional[JobFolder] = None
        self._runner: Optional[ProcessRunner] = None
        self._copies: List[SlabCopy] = []

    @property
    def child_pid(self) -> Optional[int]:
        """The background process's id once it was started (it may have ended since)."""
        return self._runner.process.pid if self._runner is not None and self._runner.process is not None else None

    @property
    def output_names(self) -> List[str]:
        requested = {COMPARISON: self.request["compare_bspline"], DIFFERENCE: self.request["difference_to_bspline"]}
        return [RESULT] + [name for name, wanted in requested.items() if wanted]

    def start(self) -> JobState:
        if self.state != JobState.IDLE:
            raise RuntimeError("a job starts only once")
        self._guarded(self._begin)
        return self.state

    def poll(self) -> JobState:
        """Do the next step of an active job; the state after it."""
        steps = {JobState.PREPARING: self._write_input, JobState.RUNNING: self._follow_child,
                 JobState.IMPORTING: self._read_results}
        if self.active:
            self._guarded(steps[self.state])
        return self.state

    def cancel(self, message: str = CANCELLED_MESSAGE) -> None:
        """Stop an active job now (the child and its children are killed); ``message`` says why."""
        if self.active:
            self._end(JobState.CANCELLED, message)

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as error:  # even a bug ends the job cleanly, with one message
            self._end(JobState.FAILED, failure_sentence(error))

    def _enter(self, state: JobState, stage: str) -> None:
        self.state = state
        self._set_stage(stage)

    def _set_stage(self, stage: str) -> None:
        self.stage, self.stage_started, self.progress = stage, time.monotonic(), (0, 0)

    def _begin(self) -> None:
        self._folder = JobFolder.create()
        self._folder.write_json(JobFolder.REQUEST, self.request)
        sent = {"input": self.volume, REFERENCE: self.reference if self.request["score_against_reference"] else None}
        self._copies = [self._copy_into_folder(name, volume) for name, volume in sent.items() if volume is not None]
        self._enter(JobState.PREPARING, "Writing the input volume for the background process")

    def _copy_into_folder(self, name: str, volume: Volume) -> SlabCopy:
        self._folder.write_header(name, volume)
        target = np.lib.format.open_memmap(self._folder.array_path(name), mode="w+", dtype=volume.array.dtype,
                                           shape=volume.array.shape)
        return SlabCopy(volume.array, target, self.step_bytes)

    def _copy_step(self) -> bool:
        """Copy the next slab; True once every copy is complete."""
        pending = next((copy for copy in self._copies if copy.done < copy.total), None)
        if pending is not None:
            pending.step()
        self.progress = (sum(copy.done for copy in self._copies), sum(copy.total for copy in self._copies))
        return self.progress[0] == self.progress[1]

    def _write_input(self) -> None:
        if not self._copy_step():
            return
        for copy in self._copies:
            copy.target.flush()
        self._copies = []
        command, env = worker_command(self.python, "run", str(self._folder.path))
        self._runner = ProcessRunner(command, log=self.log, env=env)
        self._runner.start()
        self._enter(JobState.RUNNING, "Starting the background process")

    def _follow_child(self) -> None:
        outcome = self._runner.poll()
        if self._runner.stage is not None and self._runner.stage != self.stage:
            self._set_stage(self._runner.stage)
        self.progress = self._runner.last_progress or (0, 0)
        if outcome is None:
            return
        if not outcome.succeeded:
            raise MedSRError(outcome.error)
        self._copies = [SlabCopy(source, np.empty(source.shape, source.dtype), self.step_bytes)
                        for source in (np.load(self._folder.array_path(name), mmap_mode="r")
                                       for name in self.output_names)]
        self._enter(JobState.IMPORTING, "Reading the result")

    def _read_results(self) -> None:
        if not self._copy_step():
            return
        self.results = {name: self._folder.volume(name, copy.target)
                        for name, copy in zip(self.output_names, self._copies)}
        if self.request["score_against_reference"]:
            metrics = self._folder.read_json(JobFolder.METRICS)
            self.metrics, self.metrics_error = metrics.get("scores"), metrics.get("error")
        self._deliver()
        self._end(JobState.DONE, self.done_message())

    def _deliver(self) -> None:
        """Hand over ``results`` (last step of IMPORTING; an error here fails the job). Subclasses add them to a
        scene."""

    def done_message(self) -> str:
        return "Done."

    def status_text(self) -> str:
        """One line for a progress label: the stage, how far it is and the time left; the message once ended."""
        if not self.active:
            return self.message
        done, total = self.progress
        if total <= 0:
            return f"{self.stage}…"
        remaining = estimate_remaining_seconds(time.monotonic() - self.stage_started, done, total)
        return f"{self.stage}: {done}/{total}, about {format_duration(remaining)} left"

    def _end(self, state: JobState, message: str) -> None:
        if self._runner is not None and self._runner.is_running():
            self._runner.cancel()
        self._copies = []  # drop the memory maps first, so the folder can be removed on every platform
        if self._folder is not None:
            self._folder.remove()
            self._folder = None
        self.state, self.message = state, message


@dataclass(frozen=True)
class ItemOutcome:
    """How one volume of a :class:`JobSeries` ended: DONE, FAILED or CANCELLED, or IDLE when it never ran."""
    name: str
    state: JobState
    message: str

    @property
    def line(self) -> str:
        return f"{self.name}: {'failed: ' if self.state == JobState.FAILED else ''}{self.message}"


NOT_RUN_MESSAGE = "not run."


class JobSeries(ActiveWhileWorking):
    """Several jobs (:class:`SuperResolveJob` or a subclass), one background process at a time, driven like one job:
    ``start()``, then ``poll()`` until ``active`` is False; ``cancel()`` stops the running one and skips the rest.

    ``make_job(n)`` builds the job of item ``n`` (named ``names[n]``) when its turn comes. An item that fails does not
    stop the others: ``outcomes`` gets its line and the next item starts. While active, ``state``, ``stage`` and
    ``child_pid`` are the current item's and ``progress`` counts the items ended; at the end ``state`` is DONE when at
    least one item is done (``_deliver`` then hands over what they made), FAILED when none is, or CANCELLED, with a
    summary in ``message``. ``child_pids`` lists every background process the series started.
    """
    item_word = "volume"

    def __init__(self, names: Sequence[str], make_job: Callable[[int], SuperResolveJob]):
        self.names = list(names)
        self._make_job = make_job
        self.state = JobState.IDLE
        self.message = ""
        self.outcomes: List[ItemOutcome] = []
        self.current: Optional[SuperResolveJob] = None
        self.child_pids: List[int] = []

    @property
    def progress(self) -> Tuple[int, int]:
        return len(self.outcomes), len(self.names)

    @property
    def stage(self) -> str:
        return self.current.stage if self.active else ""

    @property
    def child_pid(self) -> Optional[int]:
        return self.current.child_pid if self.current is not None else None

    @property
    def lines(self) -> List[str]:
        """One line per item ended so far: its name and how it ended."""
        return [outcome.line for outcome in self.outcomes]

    @property
    def done_items(self) -> List[int]:
        return [n for n, outcome in enumerate(self.outcomes) if outcome.state == JobState.DONE]

    def start(self) -> JobState:
        if self.state != JobState.IDLE:
            raise RuntimeError("a job starts only once")
        self._begin()
        if self.state == JobState.IDLE:
            self._start_next()
        return self.state

    def _begin(self) -> None:
        """Before the first item (subclasses check their input and watch the scene); may end the series."""

    def poll(self) -> JobState:
        if self.active:
            self.current.poll()
            self._record_pid()
            if self.current.active:
                self.state = self.current.state
            else:
                self._item_ended()
                self._start_next()
        return self.state

    def _record_pid(self) -> None:
        pid = self.current.child_pid
        if pid is not None and pid not in self.child_pids:
            self.child_pids.append(pid)

    def _item_ended(self) -> None:
        job, index = self.current, len(self.outcomes)
        state, message = job.state, job.message
        if state == JobState.DONE:
            try:
                self._take_item(index, job)
            except Exception as error:  # only this item fails
                state, message = JobState.FAILED, failure_sentence(error)
        self.outcomes.append(ItemOutcome(self.names[index], state, message))

    def _take_item(self, index: int, job: SuperResolveJob) -> None:
        """Keep what item ``index``'s finished ``job`` made (an error fails that item only)."""

    def _start_next(self) -> None:
        while len(self.outcomes) < len(self.names):
            index = len(self.outcomes)
            try:
                self.current = self._make_job(index)
            except Exception as error:  # e.g. an item that is no scalar volume: only it fails
                self.outcomes.append(ItemOutcome(self.names[index], JobState.FAILED, failure_sentence(error)))
                continue
            self.current.start()
            self._record_pid()
            if self.current.active:
                self.state = self.current.state
                return
            self._item_ended()
        self._finish()

    def _finish(self) -> None:
        done = len(self.done_items)
        if done == 0:
            self._end(JobState.FAILED, f"No {self.item_word} was super-resolved; the lines say why.")
            return
        failed = len(self.names) - done
        try:
            self._deliver()
        except Exception as error:
            self._end(JobState.FAILED, failure_sentence(error))
            return
        self._end(JobState.DONE, f"Done: {done} of {len(self.names)} {self.item_word}s super-resolved"
                                 + (f", {failed} failed." if failed else "."))

    def _deliver(self) -> None:
        """Hand over what the items made, once all have ended and at least one is done (an error fails the
        series)."""

    def cancel(self, message: Optional[str] = None) -> None:
        """Stop the running item now (its child is killed) and skip the rest; ``message`` says why, by default that
        the user cancelled, naming what the items done before left behind."""
        if not self.active:
            return
        position = len(self.outcomes) + 1
        self.current.cancel(CANCELLED_MESSAGE if message is None else message)
        self._item_ended()
        self.outcomes.extend(ItemOutcome(name, JobState.IDLE, NOT_RUN_MESSAGE)
                             for name in self.names[len(self.outcomes):])
        if message is None:
            message = (f"Cancelled at {self.item_word} {position} of {len(self.names)}; "
                       f"{self.kept_after_cancel()}")
        self._end(JobState.CANCELLED, message)

    def kept_after_cancel(self) -> str:
        """What a cancel leaves of the items done before it (a sentence's end)."""
        return "nothing was added."

    def status_text(self) -> str:
        """The current item and its stage while active; the summary once ended."""
        if not self.active:
            return self.message
        position = len(self.outcomes) + 1
        return (f"{self.item_word.capitalize()} {position} of {len(self.names)} ({self.names[position - 1]}): "
                f"{self.current.status_text()}")

    def _end(self, state: JobState, message: str) -> None:
        self.state, self.message = state, message


def super_resolve_in_subprocess(volume: Volume, method: str = "bspline", scale=2, *, python: Optional[str] = None,
                                progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None,
                                log: Optional[LogCallback] = None, poll_interval_s: float = 0.05, **options) -> Volume:
    """:func:`MedSRLib.super_resolve` in a background process (``python``, default this one), blocking until it ends.

    For scripts and tests; a GUI drives a :class:`SuperResolveJob` from a timer instead. ``progress`` gets the
    super-resolution's own progress. Raises :class:`Cancelled` when ``cancel()`` became true, :class:`MedSRError` with
    one readable sentence on failure; the temporary files are removed whatever happens.
    """
    job = SuperResolveJob(volume, method, scale, options, python=python, log=log)
    job.start()
    reported = None
    while job.active:
        if cancel is not None and cancel():
            job.cancel()
            break
        if job.poll() == JobState.RUNNING:
            if progress is not None and job.progress != reported and job.progress[1] > 0:
                reported = job.progress
                progress(*reported)
            time.sleep(poll_interval_s)
    if job.state == JobState.CANCELLED:
        raise Cancelled(job.message)
    if job.state == JobState.FAILED:
        raise MedSRError(job.message)
    return job.results[RESULT]


class DeviceProbe:
    """Asks a background process which devices it can use and their free memory, and, given ``estimate`` (the
    worker's ``probe --estimate`` request), how much memory that run would need; torch stays out of this process.

    ``start()``, then ``poll()`` until it returns True; ``report`` is the worker's JSON (None if the probe failed,
    ``error`` says why)."""

    def __init__(self, estimate: Optional[dict] = None, python: Optional[str] = None):
        arguments = ["probe"] + (["--estimate", json.dumps(estimate)] if estimate is not None else [])
        command, env = worker_command(python, *arguments)
        self._runner = ProcessRunner(command, env=env)
        self.report: Optional[dict] = None
        self.error: Optional[str] = None

    def start(self) -> None:
        self._runner.start()

    def poll(self) -> bool:
        outcome = self._runner.poll()
        if outcome is None:
            return False
        self.report = self._runner.probe if outcome.succeeded else None
        self.error = outcome.error
        return True

    def cancel(self) -> None:
        if self._runner.is_running():
            self._runner.cancel()
