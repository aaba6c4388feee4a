"""Which torch device runs a network."""
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
