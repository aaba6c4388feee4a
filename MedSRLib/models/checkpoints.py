"""Checkpoints: one .safetensors file holding the weights and, in its header, MedSR's JSON metadata.

The metadata says everything needed to rebuild, run and trust the network without running any code from the file:
the architecture name and hyper-parameters (see ``MedSRLib.nn.build_network``), the inference settings (method, scales
or scale range, axes, conditioning, patch, normalisation: :mod:`MedSRLib.models.inference_settings`), training
provenance, held-out metrics, and a SHA-256 of the weights that loading verifies. Files are never unpickled, so a
checkpoint from anywhere is safe to open.
"""
import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import catalog
from MedSRLib._version import __version__
from MedSRLib.errors import CheckpointError
from MedSRLib.files import is_sha256_hex, temporary_sibling
from MedSRLib.nn.registry import build_network
from MedSRLib.progress import CancelCheck, ProgressCallback
from .inference_settings import InferenceSettings

METADATA_KEY = "medsr"
CHECKPOINT_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")

StateDict = Dict[str, torch.Tensor]


def save_checkpoint(path: Union[str, Path], model_or_state_dict: Union[torch.nn.Module, StateDict], metadata: dict,
                    half: bool = False) -> dict:
    """Write weights and metadata to one .safetensors file, atomically; return the metadata as stored.

    ``medsr_version`` and ``created`` are filled in when absent; ``weights_sha256`` is always computed here.
    ``half=True`` stores floating-point weights as float16 (half the size); loading returns them as float32.
    """
    path = Path(path)
    if path.suffix != CHECKPOINT_SUFFIX:
        raise CheckpointError(f"Checkpoint path '{path}' must end in {CHECKPOINT_SUFFIX}.")
    state = model_or_state_dict.state_dict() if isinstance(model_or_state_dict, torch.nn.Module) \
        else model_or_state_dict
    tensors = _tensors_for_storage(state, half)

    stored = dict(metadata)
    stored.setdefault("medsr_version", __version__)
    stored.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    stored["weights_sha256"] = weights_sha256(tensors)
    try:
        header_text = json.dumps(stored, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"Checkpoint metadata cannot be stored as JSON ({error}).") from None
    stored = json.loads(header_text)
    validate_metadata(stored)

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        save_file(tensors, str(temporary), metadata={METADATA_KEY: header_text})
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return stored


def read_metadata(path: Union[str, Path]) -> dict:
    """The validated metadata of a checkpoint file, without reading its weights (whose checksum is not checked)."""
    path = _existing_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as reader:
            header = reader.metadata() or {}
    except SafetensorError as error:
        raise CheckpointError(f"Checkpoint '{path}' is truncated or not a safetensors file ({error}).") from None
    return _parse_header(header, path)


def load_checkpoint(path: Union[str, Path]) -> Tuple[StateDict, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`: (float32 state dict on CPU, validated metadata)."""
    path = _existing_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as reader:
            header = reader.metadata() or {}
            tensors = {name: reader.get_tensor(name) for name in reader.keys()}
    except SafetensorError as error:
        raise CheckpointError(f"Checkpoint '{path}' is truncated or not a safetensors file ({error}).") from None
    metadata = _parse_header(header, path)
    if weights_sha256(tensors) != metadata["weights_sha256"]:
        raise CheckpointError(f"Checkpoint '{path}' is corrupt: its weights do not match the checksum in its metadata.")

    state = {name: tensor.float() if tensor.dtype == torch.float16 else tensor for name, tensor in tensors.items()}
    return state, metadata


def _existing_checkpoint(path: Union[str, Path]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file '{path}' does not exist.")
    _refuse_pickle(path)
    return path


def _parse_header(header: dict, path: Path) -> dict:
    if METADATA_KEY not in header:
        raise CheckpointError(f"Checkpoint '{path}' has no MedSR metadata; write it with MedSR's save_checkpoint.")
    try:
        metadata = json.loads(header[METADATA_KEY])
    except json.JSONDecodeError:
        raise CheckpointError(f"Checkpoint '{path}' has unreadable MedSR metadata (invalid JSON).") from None
    validate_metadata(metadata, source=str(path))
    return metadata


def checkpoint_path(name_or_path: Union[str, Path], catalog_path: Union[str, Path, None] = None,
                    progress: Optional[ProgressCallback] = None, cancel: Optional[CancelCheck] = None) -> Path:
    """The local file of a checkpoint path or catalog model name (a catalog model is downloaded when needed)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if catalog.find_model(str(name_or_path), catalog_path) is None:
        names = ", ".join(entry.name for entry in catalog.list_models(catalog_path)) or "none yet"
        raise CheckpointError(f"'{name_or_path}' is neither a checkpoint file nor a catalog model "
                              f"(catalog models: {names}).")
    return catalog.resolve_model(str(name_or_path), catalog_path, progress, cancel)


def load_model(name_or_path: Union[str, Path], device: Union[str, torch.device] = "cpu",
               catalog_path: Union[str, Path, None] = None, progress: Optional[ProgressCallback] = None,
               cancel: Optional[CancelCheck] = None) -> Tuple[torch.nn.Module, dict]:
    """Build the network a checkpoint describes and load its weights: (module in eval mode on ``device``, metadata).

    ``name_or_path`` is a checkpoint file, or else the name of a catalog model, downloaded into the cache if needed
    (``progress`` and ``cancel`` then follow the download).
    """
    path = checkpoint_path(name_or_path, catalog_path, progress, cancel)
    state, metadata = load_checkpoint(path)
    architecture = metadata["architecture"]
    network = build_network(architecture["name"], architecture["params"])
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as error:
        # torch's message is a heading line followed by one line per mismatch; the first mismatch says enough.
        lines = str(error).strip().splitlines()
        first_mismatch = lines[1].strip() if len(lines) > 1 else lines[0]
        raise CheckpointError(f"Checkpoint '{path}' does not fit architecture '{architecture['name']}' with its stored "
                              f"hyper-parameters ({first_mismatch}).") from None
    return network.to(device).eval(), metadata


def check_compatible(metadata: dict, method_name: str, scale_xyz: Iterable[float]) -> None:
    """Raise CheckpointError unless the checkpoint was trained for ``method_name`` and serves ``scale_xyz``."""
    InferenceSettings.from_metadata(metadata).for_run(method_name, scale_xyz)


def weights_sha256(tensors: StateDict) -> str:
    """SHA-256 over the tensors in name order, each as name, dtype, shape and raw little-endian bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}\0{str(tensor.dtype).removeprefix('torch.')}\0{list(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def validate_metadata(metadata: dict, source: str = "checkpoint metadata") -> None:
    """Raise CheckpointError naming the first missing or malformed field of the metadata schema."""
    def fail(field, expected):
        raise CheckpointError(f"In {source}, field '{field}' is missing or is not {expected}.")

    def require(mapping, field, kind, expected, prefix=""):
        value = mapping.get(field) if isinstance(mapping, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool) or (isinstance(value, str) and not value):
            fail(prefix + field, expected)
        return value

    if not isinstance(metadata, dict):
        raise CheckpointError(f"In {source}, the metadata is not a JSON object.")
    architecture = require(metadata, "architecture", dict, "an object with 'name' and 'params'")
    require(architecture, "name", str, "an architecture name", "architecture.")
    require(architecture, "params", dict, "an object of hyper-parameters", "architecture.")
    InferenceSettings.from_metadata(metadata, source)
    training = require(metadata, "training", dict, "an object with 'data', 'config', 'budget' and 'hardware'")
    require(training, "data", list, "a list of training data sources", "training.")
    require(training, "config", dict, "an object holding the training configuration", "training.")
    for field in ("budget", "hardware"):
        if field not in training:
            raise CheckpointError(f"In {source}, field 'training.{field}' is missing.")
    require(metadata, "metrics", dict, "an object of held-out metrics (may be empty)")
    require(metadata, "medsr_version", str, "a version string")
    try:
        datetime.fromisoformat(require(metadata, "created", str, "an ISO date"))
    except ValueError:
        fail("created", "an ISO date")
    digest = require(metadata, "weights_sha256", str, "a SHA-256 hex digest")
    if not is_sha256_hex(digest):
        fail("weights_sha256", "a SHA-256 hex digest")


def _tensors_for_storage(state: dict, half: bool) -> StateDict:
    tensors = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"State dict entry '{name}' is not a tensor and cannot be stored in a checkpoint.")
        # A private copy: safetensors refuses tensors that share memory (views, tied weights).
        tensor = value.detach().to("cpu", copy=True).contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        tensors[name] = tensor
    return tensors


def _refuse_pickle(path: Path) -> None:
    with open(path, "rb") as stream:
        start = stream.read(9)
    # A safetensors file starts with an 8-byte header length and then its JSON header; torch.save writes a zip archive
    # or, in its legacy format, a pickle stream (protocol byte 0x80).
    looks_like_safetensors = start[8:9] == b"{"
    looks_pickled = start.startswith(b"PK\x03\x04") or start[:1] == b"\x80" or path.suffix.lower() in PICKLE_SUFFIXES
    if looks_pickled and not looks_like_safetensors:
        raise CheckpointError(f"'{path}' looks like a pickled PyTorch file, which MedSR never opens because it can run "
                              f"code; convert it to a {CHECKPOINT_SUFFIX} checkpoint with MedSR's save_checkpoint.")
