"""Inference backends: what runs a network's forward pass on the tiling engine's windows.

- ``torch``: the module itself, eagerly, on any device (the default where nothing faster is installed).
- ``openvino``: the module exported with ``torch.export`` (batch size dynamic, window shape fixed), converted to
  OpenVINO's format and run by OpenVINO's CPU plugin in float32 (``pip install "medsr[openvino]"``). CPU only.
- ``auto``: OpenVINO where it can run the network and repays its conversion (the rule below); torch otherwise.

Measured by ``Testing/Benchmarks/bench_backends.py`` (threeplayer-x2 ×2, 32³ windows in batches of 4, 2 threads,
the backends taking turns in one process on 2 CPU cores shared with training jobs, load average 7–9, so absolute times
are several times the idle ones): a 64³ input took 161.8 s with torch and 106.9 s with OpenVINO (1.51×), a 128³ input
785.4 s and 476.6 s (1.65×), that is 16–17 against 26–27 GFLOP/s, about half and four fifths of the 31.8 GFLOP/s a
dense matrix product reached on the same threads; outputs within 2.4e-7 of each other. ``torch.compile`` (inductor)
cost 109 s before its first batch and then ran like eager (56 vs 50 s, 20 vs 22 s per batch of 4), so it is not
offered. Converting (``torch.export``, then OpenVINO) took 40 s the first time under that load, about what OpenVINO
saved on the 64³ input (55 s); hence the rule for ``auto``, with a margin: OpenVINO where it is installed, the network
runs on the CPU and takes one image input, and either its conversion is already cached or the output has at least 256³
voxels (a 128³ input at ×2). On CUDA torch runs the network (bfloat16 autocast where the GPU
supports it, channels-last: ``engine.devices``); OpenVINO's GPU plugin is not used.

Coordinate-conditioned networks (ArSSR, MIASSR: ``model(x, coordinates, scale)``) run with torch: converting them
was not tried, and their coordinate input's shape changes with the scale factor, which one cached conversion per
window shape does not cover.

Converting costs seconds to a minute, so the converted model is cached on disk, keyed by the checkpoint's sha256 (the
engine's ``model_key``), the window's input shape and the OpenVINO version: ``$MEDSR_BACKEND_CACHE_DIR``, default
``~/.cache/medsr/backends``. Without a ``model_key`` (a module passed in from Python) the conversion is not cached.
A backend that cannot be used (not installed, conversion failed) gives one warning and the torch result.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence, Set, Tuple

from MedSRLib.errors import InputError

if TYPE_CHECKING:  # torch is imported where a network runs, not when the library (or `medsr methods`) starts
    import torch

BACKENDS = ("auto", "torch", "openvino")
# Backends that need an optional package (whether it is importable is for a process that may import it to tell).
OPTIONAL_BACKENDS = ("openvino",)
# auto converts (tens of seconds, once) only for outputs of at least a 128³ input at ×2, where the first run already
# saves more than the conversion costs (measured: see the module docstring).
AUTO_MIN_OUTPUT_VOXELS = 256 ** 3
OPENVINO_EXTRA = 'pip install "medsr[openvino]"'

Forward = Callable[..., "torch.Tensor"]


def backend_cache_dir() -> Path:
    return Path(os.environ.get("MEDSR_BACKEND_CACHE_DIR") or Path.home() / ".cache" / "medsr" / "backends")


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def backend_availability() -> Dict[str, dict]:
    """``{backend: {"available", "detail"}}``, as the background process reports it to the Slicer panel (importing
    OpenVINO, never torch)."""
    openvino = openvino_available()
    return {"auto": {"available": True, "detail": "OpenVINO where it is installed and pays off, else torch"},
            "torch": {"available": True, "detail": "PyTorch, eagerly"},
            "openvino": {"available": openvino,
                         "detail": "OpenVINO on the CPU" if openvino else f"not installed ({OPENVINO_EXTRA})"}}


def check_backend(name: str) -> None:
    if name not in BACKENDS:
        raise InputError(f"Unknown backend '{name}'; choose one of {', '.join(BACKENDS)}.")


def choose_backend(name: str, device: torch.device, conditioned: bool, output_voxels: int,
                   already_converted: bool) -> str:
    """The backend that will run: ``auto`` resolved by the measured rule (OpenVINO where it can run this network and
    either a conversion is cached or the output is large enough to repay converting); a requested backend that cannot
    run this network here warns once and becomes ``torch``."""
    check_backend(name)
    reason = _why_not_openvino(device, conditioned)
    if name == "auto":
        worth_converting = already_converted or output_voxels >= AUTO_MIN_OUTPUT_VOXELS
        return "openvino" if reason is None and worth_converting else "torch"
    if name == "openvino" and reason:
        warnings.warn(f"The OpenVINO backend cannot run this network: {reason}; running it with torch.")
        return "torch"
    return name


def _why_not_openvino(device: torch.device, conditioned: bool) -> Optional[str]:
    if device.type != "cpu":
        return f"MedSR runs OpenVINO on the CPU only, and the device is {device.type}"
    if conditioned:
        return "it takes output coordinates beside the image (an arbitrary-scale network)"
    if not openvino_available():
        return f"OpenVINO is not installed ({OPENVINO_EXTRA})"
    return None


# (checkpoint sha256, window shape) whose conversion failed in this process: not tried (nor warned about) again, since
# a failed torch.export costs seconds and a through-plane run asks once per orientation.
_FAILED_CONVERSIONS: Set[Tuple[str, tuple]] = set()


def inference_forward(model: torch.nn.Module, backend: str, device: torch.device, window_shape: Sequence[int],
                      output_voxels: int, model_key: Optional[str] = None, conditioned: bool = False) -> Forward:
    """A callable that takes the engine's input batch (B, 1, *window_shape) (and, for a conditioned network, its
    coordinates and scale) and returns the network's output as a torch tensor on ``device``. ``output_voxels``, the
    size of the whole output, is what ``auto`` weighs against the cost of a conversion."""
    window_shape = tuple(window_shape)
    cached = _cache_path(model_key, window_shape)
    chosen = choose_backend(backend, device, conditioned, output_voxels, cached is not None and cached.is_file())
    failure_key = (model_key, window_shape) if model_key else None
    if chosen == "torch" or failure_key in _FAILED_CONVERSIONS:
        return model
    try:
        return _openvino_forward(model, window_shape, cached)
    except Exception as error:  # noqa: BLE001 - an exporter or converter can fail in any way; torch still works
        summary = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(f"OpenVINO could not convert the model ({summary[:200]}); running it with torch.")
        if failure_key:
            _FAILED_CONVERSIONS.add(failure_key)
        return model


def _openvino_forward(model: torch.nn.Module, window_shape: tuple, cached: Optional[Path]) -> Forward:
    import openvino

    core = openvino.Core()
    if cached is None:
        converted = _convert_to_openvino(model, window_shape)
    else:
        if not cached.is_file():
            _save_atomically(_convert_to_openvino(model, window_shape), cached)
        converted = core.read_model(str(cached))
    # float32 everywhere: on CPUs with bf16 support OpenVINO would otherwise lower the precision by default.
    import torch

    compiled = core.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                                     "INFERENCE_NUM_THREADS": torch.get_num_threads()})

    def forward(batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(compiled(batch.numpy())[0])
    return forward


def _cache_path(model_key: Optional[str], window_shape: tuple) -> Optional[Path]:
    """Where the conversion of this checkpoint for this window shape is cached (None without a key or OpenVINO)."""
    if model_key is None or not openvino_available():
        return None
    from importlib.metadata import version
    return backend_cache_dir() / f"{model_key}-{'x'.join(map(str, window_shape))}-openvino{version('openvino')}.xml"


def _convert_to_openvino(model: torch.nn.Module, window_shape: tuple):
    """The network as an OpenVINO model for (B, 1, *window_shape) inputs, any B."""
    import openvino
    import torch

    example = torch.rand(2, 1, *window_shape)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about constants: the window shape is fixed on purpose
        exported = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
        converted = openvino.convert_model(exported)
    converted.reshape([openvino.Dimension(), 1, *window_shape])
    return converted


def _save_atomically(converted, path: Path) -> None:
    """Write the model (.xml and its .bin) under a temporary folder and move it into place, .xml last, so a reader
    never sees half a model."""
    import openvino

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=".partial-"))
    try:
        staged = staging / path.name
        openvino.save_model(converted, str(staged), compress_to_fp16=False)  # keep the weights in float32
        os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
        os.replace(staged, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
