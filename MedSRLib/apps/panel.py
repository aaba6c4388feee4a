"""What the MedSR panel in 3D Slicer decides, without Qt or Slicer, so CI can test it: the method choices, which scale
to show, the scale or target spacing and the options of a run, the "Method options" fields, and what to tell about
devices, backends and memory.
``MedSR/MedSR.py`` connects these to the widgets and the parameter node; the job itself is
:class:`MedSRLib.apps.mrml.VolumeNodeJob`.
"""
import json
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

from MedSRLib.engine.backends import OPTIONAL_BACKENDS
from MedSRLib.errors import InputError
from MedSRLib.grid.geometry import detect_thick_axis, format_scale, target_spacing_scale

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


def scale_or_target_spacing(scale: Sequence[float], target_spacing: float) -> Tuple[Optional[Scale], dict]:
    """The job's scale and the option that replaces it: the scale fields, or, with a target spacing (mm, above 0;
    0 leaves it unset), no scale and ``target_spacing``; super_resolve takes one or the other, never both."""
    if target_spacing > 0:
        return None, {"target_spacing": float(target_spacing)}
    return _rounded(scale), {}


def run_scale(scale: Sequence[float], target_spacing: float, spacing: Sequence[float]) -> Scale:
    """The (x, y, z) scale a run will use (for the memory estimate and the note under the scale): the scale fields',
    or what the target spacing makes of the input's ``spacing`` (InputError when no axis is coarser than it)."""
    if target_spacing > 0:
        return _rounded(target_spacing_scale(spacing, target_spacing))
    return _rounded(scale)


def target_spacing_note(target_spacing: float, spacing: Optional[Sequence[float]]) -> str:
    """What the note under the scale says while a target spacing replaces the scale fields."""
    if spacing is None:
        return f"Target spacing {target_spacing:g} mm replaces the scale; choose an input volume."
    try:
        scale = run_scale(DEFAULT_SCALE, target_spacing, spacing)
    except InputError as error:
        return str(error)
    return f"Target spacing {target_spacing:g} mm replaces the scale: ×{format_scale(scale)} for this input."


def run_options(patch: int, stride: int, blend: str, batch_size: int, device: str, backend: str) -> dict:
    """:func:`MedSRLib.super_resolve` options from the panel's fields; a patch or stride of 0 means the method's."""
    options = {"blend": blend, "batch_size": batch_size, "device": device, "backend": backend}
    if patch > 0:
        options["patch"] = patch
    if stride > 0:
        options["stride"] = stride
    return options


# A number field whose option has no upper bound stops here.
OPTION_FIELD_MAXIMUM = 1_000_000
FLOAT_FIELD_DECIMALS = 2


@dataclass(frozen=True)
class OptionField:
    """One field of the "Method options" section, from the method's declaration (``methods.options.MethodOption``):
    a spin box (int, float), check box (bool), combo box (choice) or line edit (path). ``value`` is what the field
    shows while the option is left to the method; a number option without a default of its own gets one more step
    below its minimum, shown as ``default_text`` (Qt's special value text)."""
    name: str               # the super_resolve keyword, and the option's key in the parameter node's JSON
    kind: str
    label: str
    tooltip: str
    value: object
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    decimals: int = 0
    choices: Tuple[str, ...] = ()
    default_text: str = ""

    def shown(self, stored: Dict[str, object]):
        """The stored value if this field's widget can show it, else the method's default."""
        value = stored.get(self.name)
        if self.kind in ("int", "float"):
            number = int if self.kind == "int" else (int, float)
            fits = isinstance(value, number) and not isinstance(value, bool) and self.minimum <= value <= self.maximum
        else:
            fits = {"bool": isinstance(value, bool), "choice": value in self.choices,
                    "path": isinstance(value, str)}[self.kind]
        return value if fits else self.value


def option_fields(method: str) -> List[OptionField]:
    """The fields of ``method``'s "Method options" section, in its declaration's order."""
    from MedSRLib.methods import get_method
    return [_option_field(option) for option in get_method(method).options]


def _option_field(option) -> OptionField:
    field = OptionField(option.name, option.kind, option.panel_label, option.help[0].upper() + option.help[1:] + ".",
                        option.default, choices=option.choices)
    if option.kind == "path":
        return replace(field, value=option.default or "", default_text="none")
    if option.kind not in ("int", "float"):
        return field
    number = int if option.kind == "int" else float
    minimum = number(-OPTION_FIELD_MAXIMUM if option.minimum is None else option.minimum)
    maximum = number(OPTION_FIELD_MAXIMUM if option.maximum is None else option.maximum)
    field = replace(field, minimum=minimum, maximum=maximum,
                    decimals=0 if option.kind == "int" else FLOAT_FIELD_DECIMALS)
    if option.default is None:
        return replace(field, value=minimum - 1, minimum=minimum - 1, default_text="the method's")
    return replace(field, value=number(option.default))


def parse_stored_options(text: str) -> Dict[str, object]:
    """The option values the parameter node keeps (a JSON object, one value per option name, shared by the methods
    that take it); anything unreadable counts as none set."""
    try:
        values = json.loads(text or "{}")
    except ValueError:
        return {}
    return values if isinstance(values, dict) else {}


def store_option(text: str, name: str, value) -> str:
    """The parameter node's JSON with option ``name`` set to ``value``."""
    return json.dumps({**parse_stored_options(text), name: value}, sort_keys=True)


def method_run_options(method: str, stored: Dict[str, object]) -> dict:
    """super_resolve's keyword options for ``method`` from the stored values, as its fields show them: only those
    that differ from the method's default, checked against the declaration (one sentence naming the field's label)."""
    from MedSRLib.methods import get_method
    fields = option_fields(method)
    shown = {field.name: field.shown(stored) for field in fields}
    options = {field.name: shown[field.name] for field in fields if shown[field.name] != field.value}
    labels = {field.name: field.label for field in fields}
    get_method(method).check_options(options, spell=labels.__getitem__)
    return options


def estimate_request(choice: MethodChoice, shape_kji: Sequence[int], scale: Sequence[float], options: dict) -> dict:
    """What the background probe needs to estimate a run's memory (``worker probe --estimate``)."""
    return {"method": choice.method, "checkpoint": choice.checkpoint, "shape": [int(n) for n in shape_kji],
            "scale": [float(v) for v in scale], "patch": options.get("patch"), "stride": options.get("stride"),
            "batch_size": options.get("batch_size", 4), "device": options.get("device", "auto")}


def unavailable_devices(report: dict) -> Dict[str, str]:
    """Device → why it cannot be chosen, from a probe report."""
    return _unavailable(report["devices"])


def unavailable_backends(report: Optional[dict]) -> Dict[str, str]:
    """Backend → why it is not offered, from a probe report; before one has come, every backend that needs an
    optional package, since only the background process can tell whether that package imports."""
    if report is None:
        return {name: "not probed yet" for name in OPTIONAL_BACKENDS}
    return _unavailable(report["backends"])


def _unavailable(entries: Dict[str, dict]) -> Dict[str, str]:
    return {name: entry["detail"] for name, entry in entries.items() if not entry["available"]}


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
