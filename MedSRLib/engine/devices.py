"""Which torch device runs a network, and in which precision and memory layout."""
import contextlib
from typing import Iterator

import torch

from MedSRLib.errors import InputError

DEVICES = ("auto", "cuda", "mps", "cpu")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; an explicit device that is not available is refused."""
    if name not in DEVICES:
        raise InputError(f"Unknown device '{name}'; choose one of {', '.join(DEVICES)}.")
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        return torch.device(next(device for device in ("cuda", "mps", "cpu") if available[device]))
    if not available[name]:
        raise InputError(f"Device '{name}' is not available on this computer; use 'auto' or 'cpu'.")
    return torch.device(name)


def device_type(name: str) -> str:
    """The kind of device ("cuda", "mps", "cpu") a run with this ``--device`` choice uses; an explicit choice is taken
    as it is (``resolve_device`` refuses it later if it is not available)."""
    if name not in DEVICES:
        raise InputError(f"Unknown device '{name}'; choose one of {', '.join(DEVICES)}.")
    return resolve_device("auto").type if name == "auto" else name



def autocast_dtype(device: torch.device):
    """The reduced precision the engine's autocast runs a network in on ``device``, or None for float32: on CUDA
    bfloat16 where the GPU supports it (float32's exponent range, so large activations do not overflow as they can in
    float16), float16 otherwise; the CPU and MPS run float32."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def memory_format(device: torch.device, window_dims: int):
    """The layout for a network's weights and input windows on ``device``, or None to keep the default: on CUDA
    channels-last (NDHWC for 3D windows, NHWC for 2D ones), the layout cuDNN's tensor-core convolutions use without
    transposing each layer's input."""
    if device.type != "cuda":
        return None
    return torch.channels_last_3d if window_dims == 3 else torch.channels_last


@contextlib.contextmanager
def weights_in_layout(module: torch.nn.Module, layout) -> Iterator[None]:
    """Within the block, ``module``'s weights of the layout's rank (5 for channels_last_3d, 4 for channels_last) are
    stored in ``layout``; afterwards in the default layout again, so a network being trained (a validator's) keeps its
    own. Weights of other ranks (a 2D layer in a 3D network), which ``Module.to`` would refuse, are left alone; with
    ``layout`` None nothing changes."""
    if layout is None:
        yield
        return
    rank = 5 if layout == torch.channels_last_3d else 4
    converted = [tensor for tensor in [*module.parameters(), *module.buffers()] if tensor.dim() == rank]
    for tensor in converted:
        tensor.data = tensor.data.contiguous(memory_format=layout)
    try:
        yield
    finally:
        for tensor in converted:
            tensor.data = tensor.data.contiguous()
