"""One leaderboard: every shipped model and every interpolation, on every held-out row it supports, by one command.

``python -m MedSRLib.evaluation --all`` (without ``--all``, the protocol's one table) runs the evaluation protocol (docs/protocol.md) for each catalog model (its
method with that checkpoint) and each interpolation method on the full-reference held-out volumes (Colin27, the EPI
b0), on each protocol row the method serves (its ``check_scale``), and the no-reference scores on the real anisotropic
ITK T1 (its thick axis to the in-plane spacing). Each result records PSNR, fg-PSNR, SSIM and NRMSE (full reference),
PIQE and edge sharpness (no reference, on the output: ``protocol.no_reference_scores``, at the borders of the row's
reference, or of B-spline's output for the ITK T1), seconds, peak memory, parameters and FLOPs, then
``docs/results.md`` and a plot of PSNR gain over B-spline against seconds are written. ``--quick`` crops every volume to
its central 48³ voxels for CI-sized runs.
"""
import copy
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from MedSRLib._version import __version__
from MedSRLib.errors import MedSRError
from MedSRLib.grid.geometry import detect_thick_axis
from MedSRLib.io.volume import Volume
from MedSRLib.methods import MethodKind, RunSettings, get_method, list_methods
from .metrics import compare
from .protocol import (DEGRADATIONS, Degradation, build_parser, heldout_volume, no_reference_scores, reference_borders,
                       run_table, super_resolve_row)

FULL_REFERENCE_VOLUMES = ("colin27", "heudiconv-epi")
NO_REFERENCE_VOLUME = "itk-t1-aniso"
QUICK_CROP = 48
BASELINE = "bspline"


@dataclass(frozen=True)
class Entry:
    """One contestant: a method, and for a learned one the catalog model it runs."""
    label: str
    method: str
    checkpoint: Optional[str] = None


def entries() -> List[Entry]:
    """Every interpolation method, then every catalog model."""
    from MedSRLib.models.catalog import list_models
    interpolations = [Entry(info["name"], info["name"]) for info in list_methods()
                      if info["kind"] == MethodKind.INTERPOLATION.value]
    return interpolations + [Entry(model.name, model.method, model.name) for model in list_models()]


def supports(entry: Entry, scale_xyz) -> bool:
    try:
        get_method(entry.method).check_scale(scale_xyz, RunSettings(checkpoint=entry.checkpoint))
    except MedSRError:
        return False
    return True


@contextmanager
def peak_memory() -> Iterator[dict]:
    """Yields a dict that gets ``peak_memory_mib``: the most resident memory the block added (Linux VmHWM, reset on
    entry, minus the resident size then); None where /proc does not offer it."""
    measured = {"peak_memory_mib": None}
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        before = _status_kib("VmRSS")
    except OSError:
        before = None
    yield measured
    if before is not None:
        measured["peak_memory_mib"] = (_status_kib("VmHWM") - before) / 1024


@contextmanager
def cpu_time() -> Iterator[dict]:
    """Yields a dict that gets ``cpu_seconds``: the CPU time of every thread of this process during the block, which
    other jobs on the same cores do not inflate the way they inflate wall-clock seconds."""
    measured = {}
    started = time.process_time()
    yield measured
    measured["cpu_seconds"] = time.process_time() - started


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1])


def model_cost(entry: Entry, degradation: Degradation, lr_shape) -> dict:
    """Parameters and FLOPs per output voxel of a learned entry (the checkpoint's ``cost`` for this row, else counted
    on one tiling window); empty for an interpolation."""
    if entry.checkpoint is None:
        return {}
    from MedSRLib.engine.cost import flops_per_output_voxel
    from MedSRLib.models.checkpoints import load_model
    model, metadata = load_model(entry.checkpoint)
    flops = metadata.get("cost", {}).get("flops_per_output_voxel", {}).get(degradation.label)
    if flops is None:
        method = get_method(entry.method)
        scale_xyz = degradation.scale_xyz()
        shape, factors, options = method.tiled_pass(lr_shape, scale_xyz, RunSettings(checkpoint=entry.checkpoint))
        window = [min(p, s) for p, s in zip(_window(options), [shape[a] for a in _window_axes(options)])]
        window_factors = [factors[a] for a in _window_axes(options)]
        flops = flops_per_output_voxel(model, window, options.conditioning, window_factors)
    return {"parameters": sum(parameter.numel() for parameter in model.parameters()), "flops_per_voxel": flops}


def _window_axes(options):
    return tuple(a for a in range(3) if options.mode == "3d" or a != options.slice_axis)


def _window(options):
    count = len(_window_axes(options))
    return (options.patch,) * count if isinstance(options.patch, int) else tuple(options.patch)


def central_crop(array: np.ndarray, size: int) -> np.ndarray:
    starts = [max(0, (n - size) // 2) for n in array.shape]
    return array[tuple(slice(start, start + size) for start in starts)]


def run_full_reference(entry: Entry, hr: np.ndarray, lr: np.ndarray, degradation: Degradation, borders: np.ndarray,
                       backend: str) -> dict:
    """One protocol row (``degradation.apply``'s ``hr`` and ``lr``) for one contestant; the no-reference scores are
    measured at ``borders``, the row's :func:`reference_borders`."""
    settings = RunSettings(checkpoint=entry.checkpoint, backend=backend)
    with peak_memory() as memory, cpu_time() as cpu:
        output, seconds = super_resolve_row(entry.method, lr, degradation, settings)
    scores = compare(output, hr)
    scores.update(memory, **cpu, seconds=seconds, **model_cost(entry, degradation, lr.shape))
    scores.update(no_reference_scores(output, degradation, borders))
    return scores


def warm_up(entry: Entry, lr: np.ndarray, degradation: Degradation, backend: str) -> None:
    """One untimed run on a small corner of the row's input (with the same window shape), so that loading the
    libraries and converting the model for a backend (cached on disk) do not count in the first row's seconds."""
    super_resolve_row(entry.method, lr[:16, :16, :16], degradation, RunSettings(checkpoint=entry.checkpoint,
                                                                               backend=backend))


@dataclass(frozen=True)
class NoReferenceScan:
    """A real anisotropic scan scored without a reference: super-resolved along its thick axis to the in-plane
    spacing (or by ``factor``, when given), and scored as that thick row (``row``) at the borders of B-spline's output
    (``borders``)."""
    volume: Volume
    row: Degradation
    borders: np.ndarray

    @classmethod
    def prepare(cls, volume_array: np.ndarray, spacing, factor: Optional[float] = None) -> "NoReferenceScan":
        from MedSRLib.api import super_resolve
        thick = detect_thick_axis(spacing)
        volume = Volume(volume_array, spacing)
        row = Degradation("thick", thick.factor if factor is None else factor, thick.array_axis)
        reference = super_resolve(volume, BASELINE, row.scale_xyz())
        return cls(volume, row, reference_borders(reference.array, row, reference.spacing))


def run_no_reference(entry: Entry, scan: NoReferenceScan, backend: str) -> dict:
    """The scan super-resolved by one contestant; PIQE of the through-plane slices and edge sharpness across the
    slices (:func:`no_reference_scores`)."""
    from MedSRLib.api import super_resolve
    with peak_memory() as memory, cpu_time() as cpu:
        started = time.perf_counter()
        result = super_resolve(scan.volume, entry.method, scan.row.scale_xyz(), checkpoint=entry.checkpoint,
                               backend=backend)
        seconds = time.perf_counter() - started
    return {"seconds": seconds, **cpu, **memory,
            **no_reference_scores(result.array, scan.row, scan.borders, result.spacing)}


def run_leaderboard(selected: Sequence[Entry], degradations: Sequence[Degradation] = DEGRADATIONS,
                    volumes: Sequence[str] = FULL_REFERENCE_VOLUMES + (NO_REFERENCE_VOLUME,), quick: bool = False,
                    backend: str = "auto", log=None, on_row=None, asked: Optional[Sequence[str]] = None) -> dict:
    """{volume: {row label: {entry label: scores}}}; the no-reference volume has one row, its thick axis.
    ``on_row(results)`` is called after each finished row, so a long run can write what it has. ``asked``: the labels
    the user named (None: all); a row none of them serves is not run, so the B-spline baseline added beside them is
    not scored where nothing is compared with it."""
    from MedSRLib.evaluation.datasets import dataset_path
    from MedSRLib.io import read_volume
    log = log or (lambda line: None)
    on_row = on_row or (lambda results: None)
    results: Dict[str, Dict[str, Dict[str, dict]]] = {}
    warmed = set()

    def contestants(scale_xyz) -> List[Entry]:
        served = [entry for entry in selected if supports(entry, scale_xyz)]
        wanted = asked is None or any(entry.label in asked for entry in served)
        return served if wanted else []
    for volume in volumes:
        if volume == NO_REFERENCE_VOLUME:
            scan = read_volume(dataset_path(volume))
            prepared = NoReferenceScan.prepare(central_crop(scan.array, QUICK_CROP) if quick else scan.array,
                                               scan.spacing)
            served = contestants(prepared.row.scale_xyz())
            if served:
                row = results.setdefault(volume, {}).setdefault(f"thick axis ×{prepared.row.scale:g} (no reference)",
                                                                {})
                for entry in served:
                    row[entry.label] = run_no_reference(entry, prepared, backend)
                    log(f"{volume} {entry.label}: {_summary(row[entry.label])}")
                on_row(results)
            continue
        hr_array = heldout_volume(volume)
        if quick:
            hr_array = central_crop(hr_array, QUICK_CROP)
        for degradation in degradations:
            served = contestants(degradation.scale_xyz())
            if not served:
                continue
            hr, lr = degradation.apply(hr_array)
            borders = reference_borders(hr, degradation)
            row = results.setdefault(volume, {}).setdefault(degradation.label, {})
            for entry in served:
                if entry.checkpoint and entry.label not in warmed:
                    warm_up(entry, lr, degradation, backend)
                    warmed.add(entry.label)
                row[entry.label] = run_full_reference(entry, hr, lr, degradation, borders, backend)
                log(f"{volume} {degradation.key} {entry.label}: {_summary(row[entry.label])}")
            on_row(results)
    return results


def _summary(scores: dict) -> str:
    shown = ("psnr", "psnr_foreground", "ssim", "edge_sharpness", "piqe", "seconds")
    return ", ".join(f"{key} {scores[key]:.4g}" for key in shown if scores.get(key) is not None)


COLUMNS = (("psnr", "PSNR", "{:.2f}"), ("gain", "gain over B-spline (dB)", "{:+.2f}"),
           ("psnr_foreground", "fg-PSNR", "{:.2f}"), ("ssim", "SSIM", "{:.4f}"), ("nrmse", "NRMSE", "{:.4f}"),
           ("edge_sharpness", "edge sharpness (mm⁻¹)", "{:.3f}"), ("piqe", "PIQE", "{:.1f}"),
           ("seconds", "seconds", "{:.1f}"), ("cpu_seconds", "CPU seconds", "{:.1f}"), ("peak_memory_mib", "peak memory (MiB)", "{:.0f}"),
           ("parameters", "parameters", "{:,}"), ("flops_per_voxel", "kFLOP / output voxel", "{:.0f}"))


def markdown(results: dict, command: str, header_lines: Sequence[str]) -> str:
    lines = ["# Results: every shipped model and interpolation on the held-out volumes", "",
             f"Regenerate with `{command}` (from the repository root, data from `medsr fetch-data`).", "",
             *header_lines, ""]
    for volume, rows in results.items():
        lines += [f"## {volume}", ""]
        present = [key for key, _, _ in COLUMNS
                   if any(scores.get(key) is not None for row in rows.values() for scores in row.values())
                   or key == "gain" and any(BASELINE in row and "psnr" in row[BASELINE] for row in rows.values())]
        columns = [column for column in COLUMNS if column[0] in present]
        lines += ["| row | method | " + " | ".join(title for _, title, _ in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for label, row in rows.items():
            for entry, scores in row.items():
                cells = []
                for key, _, style in columns:
                    value = _gain(row, entry) if key == "gain" else scores.get(key)
                    if key == "flops_per_voxel" and value is not None:
                        value /= 1000
                    cells.append("—" if value is None else style.format(value))
                lines.append(f"| {label} | {entry} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _gain(row: dict, entry: str) -> Optional[float]:
    if BASELINE not in row or "psnr" not in row[entry]:
        return None
    return row[entry]["psnr"] - row[BASELINE]["psnr"]


def plot(results: dict, path: Path) -> Optional[str]:
    """PSNR gain over B-spline against seconds, one point per method and row of the full-reference volumes; returns
    None when written, else why not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed, so no plot was drawn"
    figure, axes = plt.subplots(figsize=(8, 5))
    markers = dict(zip(FULL_REFERENCE_VOLUMES, "os"))
    for volume, rows in results.items():
        if volume not in markers:
            continue
        for label, row in rows.items():
            for entry, scores in row.items():
                gain = _gain(row, entry)
                if gain is None or entry == BASELINE:
                    continue
                axes.scatter(scores["seconds"], gain, marker=markers[volume])
                axes.annotate(f"{entry}, {label.split(',')[0]}", (scores["seconds"], gain), fontsize=6)
    axes.set_xscale("log")
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.set_xlabel("seconds per volume (log)")
    axes.set_ylabel("PSNR gain over B-spline (dB)")
    axes.set_title("circles: Colin27, squares: EPI b0")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None


def write_results(results: dict, output: Path, command: str, header_lines: Sequence[str],
                  quick: bool = False) -> List[str]:
    """Writes ``output`` (Markdown), its plot beside it (same name, .png) and every score with the page's command,
    header and cropping (same name, .json: what ``--update`` merges into); returns notes for the user."""
    output.parent.mkdir(parents=True, exist_ok=True)
    picture = output.with_suffix(".png")
    output.with_suffix(".json").write_text(json.dumps({"command": command, "header": list(header_lines),
                                                       "quick": quick, "results": results}, indent=1),
                                           encoding="utf-8")
    skipped = plot(results, picture)
    notes = [f"wrote {output}"]
    if skipped:
        notes.append(f"no plot: {skipped}")
        header_lines = [*header_lines, f"No plot: {skipped}."]
    else:
        notes.append(f"wrote {picture}")
        header_lines = [*header_lines, "", f"![PSNR gain over B-spline against seconds]({picture.name})"]
    output.write_text(markdown(results, command, header_lines), encoding="utf-8")
    return notes


def machine_lines(backend: str, quick: bool) -> List[str]:
    import torch
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return [f"MedSR {__version__}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPU cores, "
            f"torch {torch.__version__} with {torch.get_num_threads()} threads, CUDA "
            f"{'available' if torch.cuda.is_available() else 'not available'}; backend {backend}"
            + (" (networks with coordinate input, arssr and miassr, run with torch)" if backend != "torch" else "")
            + (f"; load average at start {load[0]:.1f} (other jobs share the cores: seconds are noisy)" if load else "")
            + ".",
            "Volumes cropped to their central 48³ voxels (--quick)." if quick else
            "Whole volumes. PIQE is the mean over every 4th slice through the degraded axes (through-plane slices for "
            "thick slices; lower is better); edge sharpness in mm⁻¹ (higher is sharper) at the reference's borders "
            "across the degraded axes (docs/protocol.md); peak memory is the resident memory the run added; FLOPs "
            "count a network's convolutions and matrix products per output voxel."]


def select_entries(names: Optional[Sequence[str]]) -> List[Entry]:
    from MedSRLib.errors import InputError
    available = entries()
    if not names:
        return available
    by_label = {entry.label: entry for entry in available}
    unknown = [name for name in names if name not in by_label]
    if unknown:
        raise InputError(f"'{unknown[0]}' is neither an interpolation method nor a shipped model; choose from "
                         f"{', '.join(by_label)}.")
    chosen = [by_label[name] for name in names]
    baseline = by_label[BASELINE]
    return chosen if baseline in chosen else [baseline, *chosen]


def command_line(argv: Sequence[str]) -> str:
    return "python -m MedSRLib.evaluation " + " ".join(argv)


def elapsed_note(started: float) -> str:
    return f"The run took {math.ceil((time.perf_counter() - started) / 60)} min."


def merged(earlier: dict, new: dict) -> dict:
    """``earlier``'s scores with ``new``'s in their place, row by row (a contestant's score replaced, new rows and
    contestants added in ``new``'s order after the ones already there)."""
    combined = copy.deepcopy(earlier)
    for volume, rows in new.items():
        for label, row in rows.items():
            combined.setdefault(volume, {}).setdefault(label, {}).update(row)
    return combined


def previous_page(results_path: Path, quick: bool) -> dict:
    """The scores, command and header a full run left beside ``results_path`` (its .json), for ``--update``; refused
    when that run cropped the volumes and this one does not, or the other way round."""
    from MedSRLib.errors import InputError
    source = results_path.with_suffix(".json")
    try:
        page = json.loads(source.read_text(encoding="utf-8"))
        earlier = {"command": page["command"], "header": list(page["header"]), "quick": bool(page["quick"]),
                   "results": dict(page["results"])}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"--update needs the scores of an earlier run in {source} ({error}); run without --update "
                         "first.") from None
    if earlier["quick"] != quick:
        cropped = "48³ crops (--quick)" if earlier["quick"] else "whole volumes"
        raise InputError(f"The page in {results_path} scores {cropped}; update it with{'' if earlier['quick'] else 'out'} "
                         "--quick, so its rows stay comparable.")
    return earlier


def main_all(arguments, argv: Sequence[str]) -> None:
    """``--all``: the leaderboard (the options --quick, --methods, --rows, --volumes, --backend, --results, --json,
    --update)."""
    started = time.perf_counter()
    earlier = previous_page(Path(arguments.results), arguments.quick) if arguments.update else None
    selected = select_entries(arguments.methods)
    degradations = [Degradation.from_key(key) for key in arguments.rows]
    header = machine_lines(arguments.backend, arguments.quick)
    command = command_line(argv)
    if earlier:
        # The page keeps the full run's command and header; this run's rows are named below them.
        header = [*earlier["header"], "", f"Updated by `{command}`: " + " ".join(header)]
        command = earlier["command"]

    def page_results(results):
        return merged(earlier["results"], results) if earlier else results

    def write_so_far(results):
        note = "Incomplete: the run was still going when this was written (it rewrites the file after each row)."
        write_results(page_results(results), Path(arguments.results), command, [*header, note],
                      arguments.quick)
    results = run_leaderboard(selected, degradations, arguments.volumes, arguments.quick, arguments.backend,
                              lambda line: print(line, file=sys.stderr, flush=True), write_so_far,
                              asked=arguments.methods)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    for note in write_results(page_results(results), Path(arguments.results), command,
                              [*header, elapsed_note(started)], arguments.quick):
        print(note, file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m MedSRLib.evaluation``: the protocol's table, or with ``--all`` the leaderboard."""
    parser = build_parser()
    leaderboard = parser.add_argument_group("--all: every shipped model and interpolation on every held-out row it "
                                            "supports, written to docs/results.md")
    leaderboard.add_argument("--all", action="store_true", help="run the leaderboard instead of one table")
    leaderboard.add_argument("--quick", action="store_true", help="crop every volume to its central 48³ voxels")
    leaderboard.add_argument("--volumes", nargs="+", default=[*FULL_REFERENCE_VOLUMES, NO_REFERENCE_VOLUME],
                             help="held-out volumes (default: all three; itk-t1-aniso gets no-reference scores)")
    leaderboard.add_argument("--backend", default="auto", choices=["auto", "torch", "openvino"],
                             help="what runs the networks (default auto)")
    leaderboard.add_argument("--results", default="docs/results.md", help="the Markdown file to write (default "
                                                                          "docs/results.md; the plot and the scores "
                                                                          "as JSON go beside it)")
    leaderboard.add_argument("--update", action="store_true",
                             help="run only the chosen --methods / --rows / --volumes and merge their scores into the "
                                  "page an earlier run wrote (e.g. after publishing one model), keeping the rest")
    arguments = parser.parse_args(argv)
    if not arguments.all:
        run_table(arguments)
        return
    try:
        main_all(arguments, sys.argv[1:] if argv is None else argv)
    except MedSRError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
