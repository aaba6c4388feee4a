"""What the MedSR panel in 3D Slicer decides, without Qt or Slicer, so CI can test it: the method choices, which scale
to show, the options of a run, and what to tell about devices and memory. ``MedSR/MedSR.py`` connects these to the
widgets and the parameter node; the job itself is :class:`MedSRLib.apps.mrml.VolumeNodeJob`.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from MedSRLib.grid.geometry import detect_thick_axis, format_scale

# The scale spin boxes show two decimals; suggestions are rounded alike so that a spin box does not alter them.
SCALE_DECIMALS = 2
DEFAULT_SCALE = (2.0, 2.0, 2.0)
GIB = 2 ** 30

Scale = Tuple[float, float, float]


@dataclass(frozen=True)
class MethodChoice:
    key: str                  # what the parameter node stores: a method name, or a catalog model's name
    label: str
    method: str
    checkpoint: Optional[str]
    description: str
    scale: Optional[Scale]    # the model's own scale, when it has one
    learned: bool             # needs PyTorch


def method_choices() -> List[MethodChoice]:
    """Every registered method, then every catalog model."""
    from MedSRLib.methods import list_methods
    from MedSRLib.models.catalog import list_models
    choices = [MethodChoice(info["name"], info["name"], info["name"], None,
                            f"{info['description']} Scales: {info['scales']}.", None,
                            info["kind"] != "interpolation")
               for info in list_methods()]
    for model in list_models():
        description = (f"{model.description} Modality: {model.modality}, contrast: {model.contrast}, trained on "
                       f"{model.domain}. Scales: {model.scales.describe()}.")
        choices.append(MethodChoice(model.name, f"{model.name} ({model.method})", model.method, model.name,
                                    description, tuple(model.scales.default()), True))
    return choices


def find_choice(choices: Sequence[MethodChoice], key: str) -> Optional[MethodChoice]:
    return next((choice for choice in choices if choice.key == key), None)


def _rounded(scale: Sequence[float]) -> Scale:
    return tuple(round(float(value), SCALE_DECIMALS) for value in scale)


def format_stored_scale(scale: Sequence[float]) -> str:
    return ",".join(f"{value:g}" for value in _rounded(scale))


def parse_stored_scale(text: str) -> Optional[Scale]:
    return tuple(float(value) for value in text.split(",")) if text else None


@dataclass(frozen=True)
class ScaleSuggestion:
    scale: Scale
    reason: str


def suggest_scale(choice: Optional[MethodChoice], spacing: Optional[Sequence[float]]) -> ScaleSuggestion:
    """The model's own scale, else the input's thick axis made isotropic, else 2 on every axis."""
    if choice is not None and choice.scale is not None:
        return ScaleSuggestion(_rounded(choice.scale), f"{choice.key} is trained for ×{format_scale(choice.scale)}.")
    thick = detect_thick_axis(spacing) if spacing is not None else None
    if thick is None:
        reason = "Isotropic input: the same factor on every axis." if spacing is not None else "No input yet."
        return ScaleSuggestion(DEFAULT_SCALE, reason)
    return ScaleSuggestion(_rounded(thick.scale()),
                           f"Thick axis: {'IJK'[thick.axis]}, factor {thick.factor:g} (from spacing).")


@dataclass(frozen=True)
class ScaleUpdate:
    scale: Scale          # what the scale fields show
    suggested: Scale      # remembered as the panel's own suggestion
    note: str


def update_scale(current: Sequence[float], suggested_before: Optional[Sequence[float]],
                 suggestion: ScaleSuggestion) -> ScaleUpdate:
    """The scale after the input or the method changed: a scale the user set (one that differs from what the panel
    suggested before) is kept; otherwise the new suggestion replaces it. So the model's scale and the thick-axis guess
    no longer overwrite each other, or the user, whatever the order of the clicks."""
    current = _rounded(current)
    if suggested_before is not None and current != _rounded(suggested_before):
        return ScaleUpdate(current, tuple(suggested_before),
                           f"{suggestion.reason} Suggested ×{format_scale(suggestion.scale)}; your scale is kept.")
    return ScaleUpdate(suggestion.scale, suggestion.scale, suggestion.reason)


def run_options(patch: int, stride: int, blend: str, batch_size: int, device: str) -> dict:
    """:func:`MedSRLib.super_resolve` options from the panel's fields; a patch or stride of 0 means the method's."""
    options = {"blend": blend, "batch_size": batch_size, "device": device}
    if patch > 0:
        options["patch"] = patch
    if stride > 0:
        options["stride"] = stride
    return options


def estimate_request(choice: MethodChoice, shape_kji: Sequence[int], scale: Sequence[float], options: dict) -> dict:
    """What the background probe needs to estimate a run's memory (``worker probe --estimate``)."""
    return {"method": choice.method, "checkpoint": choice.checkpoint, "shape": [int(n) for n in shape_kji],
            "scale": [float(v) for v in scale], "patch": options.get("patch"), "stride": options.get("stride"),
            "batch_size": options.get("batch_size", 4), "device": options.get("device", "auto")}


def unavailable_devices(report: dict) -> Dict[str, str]:
    """Device → why it cannot be chosen, from a probe report."""
    return {name: device["detail"] for name, device in report["devices"].items() if not device["available"]}


def memory_advice(report: Optional[dict]) -> Tuple[str, bool]:
    """(text, whether it is a warning) about a run's memory, from a probe report with an estimate."""
    if report is None or (report["estimate"] is None and report["estimate_error"] is None):
        return "Estimating…", False
    if report["estimate"] is None:
        return f"No estimate: {report['estimate_error']}", False
    device = report["estimate"]["device"]
    parts, short = [], []
    for pool, needed in report["estimate"]["needs"].items():
        free = report["devices"][pool]["free_bytes"]
        where = "the computer's memory" if pool == "cpu" else f"the {pool} GPU"
        parts.append(f"about {needed / GIB:.1f} GiB of {where}"
                     + (f" ({free / GIB:.1f} GiB free)" if free is not None else ""))
        if free is not None and needed > free:
            short.append(where)
    text = f"Needs {' and '.join(parts)}, running on {device}."
    if not short:
        return text, False
    fixes = ["choose a smaller patch size or batch"] if report["estimate"]["tiled"] else ["choose a lower scale"]
    if device != "cpu":
        fixes.append("run on the CPU")
    fixes.append("crop the volume to the region of interest with the Crop Volume module first")
    return f"{text} That is more than {' and '.join(short)} has free: {', '.join(fixes[:-1])} or {fixes[-1]}.", True
