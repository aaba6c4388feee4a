"""``medsr batch``: super-resolve many scans in one command, resumably, locally or on a Dask cluster.

Inputs (``find_cases``): a folder (every volume file in it, recursively), a glob pattern, a CSV file (columns
``input``, ``output``, optional ``method`` and ``scale`` per row) or a BIDS data set (a folder with
``dataset_description.json``: ``sub-*/[ses-*/]anat/*.nii.gz``); ``pattern`` chooses other files of a folder or data
set. Outputs mirror the input layout under the
output folder; for BIDS the output folder becomes a derivatives data set with its own ``dataset_description.json``.

Every finished case is appended to the manifest ``OUTPUT/medsr-batch.jsonl`` (JSON lines: input, output, method, scale,
status done / failed / skipped, the failure's one-sentence reason, seconds, peak memory, checkpoint SHA-256). A rerun
skips the cases whose latest record is done (same input, method and scale) and whose output exists, and retries the
rest. One failing case never stops the batch; outputs are written atomically by ``write_volume``, so a failed case
leaves no file. Bad arguments raise :class:`MedSRLib.errors.InputError` before anything is written.

Local runs use a ``concurrent.futures.ProcessPoolExecutor`` rather than Dask's local scheduler, so that they need
nothing beyond MedSR's own dependencies (Dask is the optional ``batch`` extra, only for ``scheduler=``). Its workers
are spawned, not forked: a fresh interpreter has no OpenMP thread pool yet (forking one that has can hang) and picks up
the thread limit set at its start.
"""
import csv
import glob
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional

import SimpleITK as sitk

from MedSRLib._version import __version__
from MedSRLib.api import super_resolve
from MedSRLib.errors import InputError, MedSRError
from MedSRLib.files import temporary_sibling
from MedSRLib.grid.geometry import parse_scale
from MedSRLib.io.volume_files import WRITABLE_EXTENSIONS, output_extension, read_volume, write_volume
from MedSRLib.methods import MethodKind, RunSettings, get_method
from MedSRLib.methods.base import DEFAULT_MEMORY_BUDGET_GB

VOLUME_SUFFIXES = WRITABLE_EXTENSIONS + (".nhdr", ".mhd")
# Header + data file formats are written as their one-file forms (write_volume writes .nrrd, .nii, .nii.gz, .mha).
OUTPUT_SUFFIXES = {".nhdr": ".nrrd", ".mhd": ".mha"}
MANIFEST_NAME = "medsr-batch.jsonl"
BIDS_DESCRIPTION = "dataset_description.json"
BIDS_ANATOMICAL = ("sub-*/anat/*.nii.gz", "sub-*/ses-*/anat/*.nii.gz")
GLOB_CHARACTERS = "*?["


@dataclass(frozen=True)
class BatchCase:
    """One volume to super-resolve: absolute input and output paths, the method and the scale as the user wrote it."""
    input: str
    output: str
    method: str
    scale: str


@dataclass(frozen=True)
class CaseOptions:
    """The super_resolve options every case of a batch shares."""
    checkpoint: Optional[str] = None
    device: str = "auto"
    memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB


@dataclass
class BatchSummary:
    """This run's records (one per case, in the order they finished), its wall time and the manifest's path."""
    records: List[dict] = field(default_factory=list)
    seconds: float = 0.0
    manifest: str = ""

    def count(self, status: str) -> int:
        return sum(record["status"] == status for record in self.records)

    @property
    def failed(self) -> List[dict]:
        return [record for record in self.records if record["status"] == "failed"]


def run_batch(source, output_dir, method: str = "bspline", scale: Optional[str] = None, *, workers: int = 1,
              scheduler: Optional[str] = None, checkpoint: Optional[str] = None, device: str = "auto",
              memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB, pattern: Optional[str] = None,
              log: Optional[Callable[[str], None]] = None) -> BatchSummary:
    """Super-resolve every case ``source`` names into ``output_dir``; see the module docstring.

    ``scale`` is written as on the command line ("2", "1,1,3", "auto") and defaults as in ``medsr super-resolve``
    (auto for per-scan methods, else 2). ``workers`` local processes
    run the cases, or the Dask cluster whose scheduler listens at ``scheduler`` (tcp://host:port) does. ``log`` gets one
    line per finished case. Raises InputError, having written nothing, for bad arguments.
    """
    start = time.perf_counter()
    if workers < 1:
        raise InputError(f"--workers must be at least 1, not {workers}.")
    if scheduler and workers != 1:
        raise InputError("--workers sets the local worker processes; with --scheduler the cluster's workers run the "
                         "cases.")
    output_dir = os.path.abspath(output_dir)
    cases = find_cases(source, output_dir, method, scale, pattern)
    options = CaseOptions(checkpoint, device, memory_budget_gb)
    check_cases(cases, options)
    description = derivative_description(source, method, cases[0].scale) if is_bids_dataset(source) else None
    with connect_to_dask(scheduler) if scheduler else nullcontext() as client:
        try:
            os.makedirs(output_dir, exist_ok=True)
        except OSError as error:
            raise InputError(f"Cannot create the output folder '{output_dir}' ({error.strerror}).") from None
        if description:
            write_json_atomically(description, os.path.join(output_dir, BIDS_DESCRIPTION))
        manifest = os.path.join(output_dir, MANIFEST_NAME)
        summary = BatchSummary(manifest=manifest)
        latest = latest_records(manifest)
        done = {case for case in cases if is_done(case, latest.get(case.output))}

        def finish(record: dict) -> None:
            record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            with open(manifest, "a", encoding="utf-8") as stream:
                stream.write(json.dumps(record) + "\n")
            summary.records.append(record)
            if log:
                log(format_progress(record, len(summary.records), len(cases), output_dir))

        for case in cases:
            if case in done:
                finish(case_record(case, "skipped"))
        pending = [case for case in cases if case not in done]
        if client is not None:
            run_on_dask(client, pending, options, finish)
        elif pending:
            run_locally(pending, options, workers, finish)
    summary.seconds = time.perf_counter() - start
    return summary


# --- Finding the cases ---------------------------------------------------------------------------------------------

def find_cases(source, output_dir: str, method: str, scale: Optional[str], pattern: Optional[str]) -> List[BatchCase]:
    """The cases ``source`` (folder, BIDS data set, CSV file or glob pattern) names, outputs under ``output_dir``."""
    source = os.fspath(source)
    if os.path.isdir(source):
        if os.path.abspath(source) == output_dir:
            raise InputError("The output folder is the input folder; MedSR never overwrites its input: choose another "
                             "output folder.")
        patterns = [pattern] if pattern else list(BIDS_ANATOMICAL) if is_bids_dataset(source) else ["**/*"]
        inputs = sorted({path for each in patterns for path in Path(source).glob(each)
                         if is_volume_file(path) and not is_within(path, output_dir)})
        if not inputs:
            raise InputError(f"Folder '{source}' holds no volume file ({', '.join(VOLUME_SUFFIXES)})"
                             + (f" matching '{pattern}'." if pattern else "."))
        return mirrored_cases(inputs, Path(source), output_dir, method, scale)
    if source.lower().endswith(".csv") and os.path.isfile(source):
        return csv_cases(source, output_dir, method, scale)
    if not any(character in source for character in GLOB_CHARACTERS):
        if os.path.isfile(source):  # one volume: a pattern that matches itself
            return mirrored_cases([Path(source)], Path(source).parent, output_dir, method, scale)
        raise InputError(f"Input '{source}' does not exist.")
    inputs = sorted(Path(path) for path in glob.glob(source, recursive=True) if is_volume_file(Path(path)))
    if not inputs:
        raise InputError(f"The pattern '{source}' matches no volume file ({', '.join(VOLUME_SUFFIXES)}).")
    return mirrored_cases(inputs, pattern_root(source), output_dir, method, scale)


def mirrored_cases(inputs: List[Path], root: Path, output_dir: str, method: str,
                   scale: Optional[str]) -> List[BatchCase]:
    """One case per input, its output at the input's place relative to ``root``, under ``output_dir``."""
    chosen_scale = scale or default_scale(method)
    return [BatchCase(os.path.abspath(path), os.path.join(output_dir, output_name(os.path.relpath(path, root))),
                      method, chosen_scale) for path in inputs]


def csv_cases(table: str, output_dir: str, method: str, scale: Optional[str]) -> List[BatchCase]:
    """A case per row; relative inputs are relative to the CSV's folder, relative outputs to ``output_dir``."""
    try:
        with open(table, newline="", encoding="utf-8-sig") as stream:
            reader = csv.DictReader(stream)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"Could not read CSV '{table}' ({error}).") from None
    columns = reader.fieldnames or []
    if not {"input", "output"} <= set(columns):
        raise InputError(f"CSV '{table}' needs the columns input and output (it has: {', '.join(columns) or 'none'}).")
    if not rows:
        raise InputError(f"CSV '{table}' lists no cases.")
    folder = os.path.dirname(os.path.abspath(table))
    cases = []
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        cells = {column: (row.get(column) or "").strip() for column in ("input", "output", "method", "scale")}
        if not cells["input"] or not cells["output"]:
            raise InputError(f"Row {number} of CSV '{table}' lacks an input or an output.")
        row_method = cells["method"] or method
        cases.append(BatchCase(os.path.normpath(os.path.join(folder, cells["input"])),
                               os.path.normpath(os.path.join(output_dir, cells["output"])),
                               row_method, cells["scale"] or scale or default_scale(row_method)))
    return cases


def default_scale(method: str) -> str:
    """As ``medsr super-resolve``: per-scan methods find the thick axis and factor themselves, the others take 2."""
    return "auto" if get_method(method).kind == MethodKind.PER_SCAN else "2"


def is_volume_file(path: Path) -> bool:
    """A file MedSR reads, not hidden (write_volume's temporary files are hidden)."""
    return path.name.lower().endswith(VOLUME_SUFFIXES) and not path.name.startswith(".") and path.is_file()


def is_within(path: Path, folder: str) -> bool:
    return os.path.abspath(path).startswith(os.path.join(folder, ""))


def is_bids_dataset(source) -> bool:
    return os.path.isfile(os.path.join(os.fspath(source), BIDS_DESCRIPTION))


def pattern_root(pattern: str) -> Path:
    """The folder a glob pattern's matches are mirrored from: its leading folders without wildcards."""
    literal = []
    for part in Path(pattern).parts[:-1]:
        if any(character in part for character in GLOB_CHARACTERS):
            break
        literal.append(part)
    return Path(*literal) if literal else Path(".")


def output_name(relative: str) -> str:
    lower = relative.lower()
    for suffix, replacement in OUTPUT_SUFFIXES.items():
        if lower.endswith(suffix):
            return relative[:-len(suffix)] + replacement
    return relative


def check_cases(cases: List[BatchCase], options: CaseOptions) -> None:
    """Refuse, before any work, outputs MedSR cannot write or would write twice, and methods or scales it lacks."""
    inputs_by_output: Dict[str, str] = {}
    for case in cases:
        output_extension(case.output)
        if os.path.realpath(case.output) == os.path.realpath(case.input):
            raise InputError(f"The output of '{case.input}' is the input itself; MedSR never overwrites its input.")
        if case.output in inputs_by_output:
            raise InputError(f"'{inputs_by_output[case.output]}' and '{case.input}' would both be written to "
                             f"'{case.output}'; give each case its own output.")
        inputs_by_output[case.output] = case.input
    settings = RunSettings(checkpoint=options.checkpoint, device=options.device)
    for method, scale in sorted({(case.method, case.scale) for case in cases}):
        chosen = get_method(method)
        if scale != "auto":
            chosen.check_scale(parse_scale(scale), settings)


def derivative_description(source, method: str, scale: str) -> dict:
    """The dataset_description.json of the BIDS derivatives data set that super-resolving ``source`` makes."""
    path = os.path.join(os.fspath(source), BIDS_DESCRIPTION)
    try:
        with open(path, encoding="utf-8") as stream:
            raw = json.load(stream)
    except (OSError, ValueError) as error:
        raise InputError(f"Could not read '{path}' as JSON ({error}).") from None
    raw = raw if isinstance(raw, dict) else {}
    return {
        "Name": f"{raw.get('Name') or Path(source).resolve().name}: MedSR super-resolution",
        "BIDSVersion": raw.get("BIDSVersion", "1.9.0"),
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "MedSR", "Version": __version__,
                         "Description": f"medsr batch with method {method}, scale {scale}."}],
        "SourceDatasets": [{"URL": Path(source).resolve().as_uri()}],
    }


def write_json_atomically(data: dict, path: str) -> None:
    temporary = temporary_sibling(Path(path))
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)


# --- The manifest --------------------------------------------------------------------------------------------------

def latest_records(manifest: str) -> Dict[str, dict]:
    """Each output's latest done or failed record in the manifest of earlier runs (skipped records repeat those)."""
    latest: Dict[str, dict] = {}
    if not os.path.exists(manifest):
        return latest
    with open(manifest, encoding="utf-8") as stream:
        for line in stream:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line an interrupted run cut short
            if isinstance(record, dict) and record.get("status") in ("done", "failed"):
                latest[record.get("output")] = record
    return latest


def is_done(case: BatchCase, record: Optional[dict]) -> bool:
    """Whether an earlier run made this case's output, from the same input with the same method and scale."""
    return (record is not None and record["status"] == "done" and os.path.exists(case.output)
            and [record.get(key) for key in ("input", "method", "scale")] == [case.input, case.method, case.scale])


def case_record(case: BatchCase, status: str, reason: Optional[str] = None, seconds: Optional[float] = None,
                peak_memory: Optional[float] = None, checkpoint_sha256: Optional[str] = None) -> dict:
    return {**asdict(case), "status": status, "reason": reason, "seconds": seconds, "peak_memory_mib": peak_memory,
            "checkpoint_sha256": checkpoint_sha256}


# --- Running the cases ---------------------------------------------------------------------------------------------

def run_locally(cases: List[BatchCase], options: CaseOptions, workers: int, finish: Callable[[dict], None]) -> None:
    """``workers`` spawned processes, each given its share of the cores so that they do not oversubscribe them."""
    workers = min(workers, len(cases))
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=limit_threads,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(process_case, case, options): case for case in cases}
        for future in as_completed(futures):
            finish(worker_result(future, futures[future]))


def connect_to_dask(scheduler: str):
    try:
        from dask.distributed import Client
    except ImportError:
        raise InputError('Running on a Dask cluster needs Dask, which is not installed: pip install "medsr[batch]".') \
            from None
    try:
        return Client(scheduler, timeout=10)
    except (OSError, ValueError) as error:
        raise InputError(f"Could not reach the Dask scheduler at '{scheduler}' ({first_line(error)}).") from None


def run_on_dask(client, cases: List[BatchCase], options: CaseOptions, finish: Callable[[dict], None]) -> None:
    """The cases as tasks of an existing Dask cluster; its workers limit their own threads (Dask's nanny sets
    OMP_NUM_THREADS=1 by default) and must have MedSR installed."""
    from dask.distributed import as_completed as as_completed_on_cluster

    futures = client.map(process_case, cases, options=options, pure=False)
    case_of = dict(zip(futures, cases))
    for future in as_completed_on_cluster(futures):
        finish(worker_result(future, case_of[future]))


def worker_result(future, case: BatchCase) -> dict:
    """The worker's record, or a failed one when the worker itself died running the case (killed, out of memory)."""
    try:
        return future.result()
    except Exception as error:
        return case_record(case, "failed", f"The worker process running it stopped ({type(error).__name__}: "
                                           f"{first_line(error)}); rerun the batch to retry.")


def limit_threads(threads: int) -> None:
    """Worker start: at most ``threads`` threads per library. torch reads OMP_NUM_THREADS when it is first imported,
    which in a fresh worker comes later (methods import torch only when they run)."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = str(threads)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def process_case(case: BatchCase, options: CaseOptions) -> dict:
    """Super-resolve one case in this process and return its manifest record; a failure is recorded, not raised."""
    reset_peak_memory()
    start = time.perf_counter()
    checkpoint_sha256 = None
    try:
        result = super_resolve(read_volume(case.input), case.method, case.scale, checkpoint=options.checkpoint,
                               device=options.device, memory_budget_gb=options.memory_budget_gb)
        os.makedirs(os.path.dirname(case.output), exist_ok=True)
        write_volume(result, case.output)
        status, reason, checkpoint_sha256 = "done", None, result.metadata.get("checkpoint_sha256")
    except MedSRError as error:
        status, reason = "failed", str(error)
    except Exception as error:  # a bug or a library's error fails this case, not the batch
        status, reason = "failed", f"Unexpected {type(error).__name__}: {first_line(error)}"
    return case_record(case, status, reason, round(time.perf_counter() - start, 3), peak_memory_mib(),
                       checkpoint_sha256)


def reset_peak_memory() -> None:
    """Restart the kernel's count of this process's peak resident size (Linux), so that each case gets its own."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass  # elsewhere the peak is the worker's since it started


def peak_memory_mib() -> Optional[float]:
    """This process's peak resident size: VmHWM on Linux, else ru_maxrss; None where neither exists (Windows)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, bytes on macOS
    return round(peak / (2 ** 20 if sys.platform == "darwin" else 2 ** 10), 1)


def first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0].strip() if lines else type(error).__name__


# --- Reporting -----------------------------------------------------------------------------------------------------

def format_progress(record: dict, finished: int, total: int, output_dir: str) -> str:
    """One line per finished case: count, status, output (relative to the output folder), seconds or reason."""
    line = f"[{finished}/{total}] {record['status']:<7} {os.path.relpath(record['output'], output_dir)}"
    if record["status"] == "done":
        return f"{line} ({record['seconds']:.1f} s)"
    return f"{line}: {record['reason']}" if record["reason"] else line


def format_summary(summary: BatchSummary) -> str:
    """The table printed at the end: cases per status, total time, and each failed case with its reason."""
    lines = [f"{'status':<8} {'cases':>6}"]
    lines += [f"{status:<8} {summary.count(status):>6}" for status in ("done", "failed", "skipped")]
    lines.append(f"{'total':<8} {len(summary.records):>6}   in {summary.seconds:.1f} s; manifest {summary.manifest}")
    if summary.failed:
        lines.append("failed cases:")
        lines += [f"  {record['input']}: {record['reason']}" for record in summary.failed]
    return "\n".join(lines)
