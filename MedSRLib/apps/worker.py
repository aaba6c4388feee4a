"""The background process of :mod:`MedSRLib.apps.process`: ``python -m MedSRLib.apps.worker run FOLDER | probe``.

``run FOLDER`` super-resolves the job folder's input as its request says (and, if asked, computes the cubic B-spline
comparison on the same grid, the result's difference to it and the scores of both against the folder's reference),
writing the volumes and the scores (JSON) back into the folder. ``probe``
reports the devices torch can use, their free memory, the inference backends that can be imported and, with
``--estimate``, the memory a run would need; it is how the Slicer panel learns about GPUs and OpenVINO without
importing torch into Slicer. Progress, stages and probe reports are protocol lines on stdout; user errors end with
``medsr: error: <one sentence>`` on stderr and exit code 2, as in the ``medsr`` command.

``MEDSR_EXTRA_METHODS`` (paths separated by ``os.pathsep``) names Python files to run before anything else, so the
methods they register exist in this process too (the tests use it for methods that wait or fail on purpose).
"""
import argparse
import json
import math
import os
import runpy
import sys
import warnings
from typing import Dict, Optional, Sequence

from MedSRLib.errors import InputError, MedSRError
from .process import (PROBE_PREFIX, RESULT, COMPARISON, DIFFERENCE, REFERENCE, STAGE_PREFIX, JobFolder,
                      format_progress_line, options_from_json)

EXIT_USER_ERROR = 2
EXTRA_METHODS_VARIABLE = "MEDSR_EXTRA_METHODS"
# Where each device's memory comes from: Apple GPUs share the computer's memory.
MEMORY_POOL = {"cpu": "cpu", "mps": "cpu", "cuda": "cuda"}


def say(line: str) -> None:
    print(line, flush=True)


def report_progress(done: int, total: int) -> None:
    say(format_progress_line(done, total))


def run_job(folder: JobFolder) -> None:
    from MedSRLib.api import super_resolve

    request = folder.read_json(JobFolder.REQUEST)
    say(f"{STAGE_PREFIX} Reading the input")
    volume = folder.load_volume("input")
    options = options_from_json(request["options"])
    say(f"{STAGE_PREFIX} Super-resolving with {request['method']}")
    result = super_resolve(volume, request["method"], request["scale"], progress=report_progress, **options)
    folder.save_volume(RESULT, result)
    scored = {result.metadata["method"]: result}
    if request["method"] != "bspline" and (request["compare_bspline"] or request["difference_to_bspline"]
                                           or request["score_against_reference"]):
        say(f"{STAGE_PREFIX} Computing the cubic B-spline comparison")
        scored["bspline"] = comparison = super_resolve(volume, "bspline", result.metadata["scale"],
                                                       progress=report_progress,
                                                       output_dtype=options.get("output_dtype", "float32"))
        if request["compare_bspline"]:
            folder.save_volume(COMPARISON, comparison)
        if request["difference_to_bspline"]:
            from .compare import difference_to_bspline
            folder.save_volume(DIFFERENCE, difference_to_bspline(result, comparison))
    if request["score_against_reference"]:
        say(f"{STAGE_PREFIX} Scoring against the reference (PSNR, SSIM, NRMSE)")
        folder.write_json(JobFolder.METRICS, score_against_reference(scored, folder.load_volume(REFERENCE)))


def score_against_reference(scored, reference) -> dict:
    """The METRICS document: each volume's scores against ``reference``, or the sentence why there are none (a
    reference on another grid does not fail the run)."""
    from .compare import scores_against_reference
    try:
        scores = scores_against_reference(scored, reference, progress=report_progress)
    except InputError as error:
        return {"error": str(error)}
    return {"scores": {method: {key: float(value) for key, value in values.items()}
                       for method, values in scores.items()}}


def available_memory_bytes() -> Optional[int]:
    """The computer's memory free for a new allocation, or None where it cannot be told."""
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def probe_devices() -> Dict[str, dict]:
    """``{device: {"available", "free_bytes", "detail"}}`` for cpu, cuda and mps; GPUs need torch."""
    devices = {"cpu": {"available": True, "free_bytes": available_memory_bytes(), "detail": "the computer's memory"},
               "cuda": {"available": False, "free_bytes": None, "detail": "PyTorch is not installed"},
               "mps": {"available": False, "free_bytes": None, "detail": "PyTorch is not installed"}}
    try:
        import torch
    except ImportError:
        return devices
    devices["cuda"]["detail"] = devices["mps"]["detail"] = "not present on this computer"
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        devices["cuda"] = {"available": True, "free_bytes": int(free), "detail": torch.cuda.get_device_name(0)}
    if torch.backends.mps.is_available():
        devices["mps"] = {"available": True, "free_bytes": devices["cpu"]["free_bytes"],
                          "detail": "Apple GPU (shares the computer's memory)"}
    return devices


def resolve_device(choice: str, devices: Dict[str, dict]) -> str:
    """The device a run with ``choice`` uses: 'auto' is CUDA, then MPS, then the CPU, as the engine picks."""
    if choice != "auto":
        return choice
    return next(name for name in ("cuda", "mps", "cpu") if devices[name]["available"])


def estimate_run_memory(method: str, shape: Sequence[int], scale, checkpoint: Optional[str] = None,
                        patch=None, stride=None, batch_size: int = 4, device: str = "cpu") -> dict:
    """``{"needs": bytes per memory pool ("cpu", "cuda"), "tiled": whether a network is tiled}``: what a run would need
    at its peak for a (k, j, i) input ``shape``.

    The host part is what :func:`MedSRLib.super_resolve` itself requires (the float32 output and normalised input);
    for networks the engine's :func:`~MedSRLib.engine.tiling.estimate_memory` of the tiled pass is added, with the
    tiling the method would use (the model's inference settings from its checkpoint header).
    """
    from MedSRLib.grid.geometry import output_shape, parse_scale

    scale_xyz = parse_scale(scale)
    out_shape = output_shape(shape, scale_xyz)
    needs = {"cpu": 4 * (math.prod(out_shape) + math.prod(shape))}
    tiled = _tiled_pass(method, shape, scale_xyz, checkpoint, patch, stride, batch_size)
    if tiled is not None:
        from MedSRLib.engine.tiling import estimate_memory
        image_shape, factors, options = tiled
        pool = MEMORY_POOL[device]
        needs[pool] = needs.get(pool, 0) + estimate_memory(image_shape, factors, options)
    return {"needs": needs, "tiled": tiled is not None}


def _tiled_pass(method_name, shape, scale_xyz, checkpoint, patch, stride, batch_size):
    """(image shape, factors, TilingOptions) of the network pass the method would tile, or None (interpolation)."""
    from MedSRLib.methods import RunSettings, get_method
    settings = RunSettings(checkpoint=checkpoint, patch=patch, stride=stride, batch_size=batch_size)
    return get_method(method_name).tiled_pass(tuple(shape), scale_xyz, settings)


def probe(estimate: Optional[dict]) -> dict:
    from MedSRLib.engine.backends import backend_availability
    report = {"devices": probe_devices(), "backends": backend_availability(), "estimate": None,
              "estimate_error": None}
    if estimate is not None:
        device = resolve_device(estimate.pop("device", "auto"), report["devices"])
        try:
            report["estimate"] = {"device": device, **estimate_run_memory(device=device, **estimate)}
        except MedSRError as error:
            report["estimate_error"] = str(error)
    return report


def load_extra_methods() -> None:
    for path in filter(None, os.environ.get(EXTRA_METHODS_VARIABLE, "").split(os.pathsep)):
        runpy.run_path(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MedSRLib.apps.worker")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the job in FOLDER").add_argument("folder")
    probe_parser = commands.add_parser("probe", help="report devices, free memory, backends and a run's memory "
                                                     "estimate")
    probe_parser.add_argument("--estimate", type=json.loads,
                              help='JSON: {"method", "shape" (k, j, i), "scale", "checkpoint", "patch", "stride", '
                                   '"batch_size", "device"}')
    args = parser.parse_args(argv)
    load_extra_methods()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, *rest: print(f"medsr: warning: {message}", file=sys.stderr)
        try:
            if args.command == "run":
                run_job(JobFolder(args.folder))
            else:
                say(f"{PROBE_PREFIX} {json.dumps(probe(args.estimate))}")
        except MedSRError as error:
            print(f"medsr: error: {error}", file=sys.stderr)
            return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
