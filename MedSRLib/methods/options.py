"""A method's own options, declared once (``Method.options``): ``super_resolve`` checks values against the declaration,
and the command line's flags and the Slicer panel's "Method options" fields are generated from it.
"""
import math
import numbers
import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from MedSRLib.errors import InputError

KINDS = ("float", "int", "bool", "choice", "path")
# How an option is named to the caller: the Python keyword by default, the command line's flag on the command line.
Spelling = Callable[[str], str]


@dataclass(frozen=True)
class MethodOption:
    """One keyword option of ``super_resolve`` for a method. ``default`` None: the method decides (``help`` says how);
    ``flag`` is the command line's spelling where it is not ``--name-with-dashes``; ``label`` the panel's where it is
    not the flag's words."""
    name: str
    kind: str
    help: str
    default: object = None
    choices: Tuple[str, ...] = ()
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    flag: str = ""
    unit: str = ""
    label: str = ""

    def __post_init__(self):
        if self.kind not in KINDS or (self.kind == "choice") != bool(self.choices):
            raise ValueError(f"option {self.name!r}: kind must be one of {KINDS}, with choices exactly for 'choice'")
        if self.kind in ("bool", "choice") and self.default is None:
            raise ValueError(f"option {self.name!r}: a switch or a choice needs a default (a panel field shows one)")

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def panel_label(self) -> str:
        label = self.label or self.cli_flag.lstrip("-").replace("-", " ").capitalize()
        return f"{label} ({self.unit})" if self.unit else label

    def requirement(self) -> str:
        """What a value must be, as the end of a sentence: "an integer of at least 4"."""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        noun = {"float": "a number", "int": "an integer", "bool": "True or False", "path": "a file path"}[self.kind]
        if self.minimum is not None and self.maximum is not None:
            return f"{noun} from {self.minimum:g} to {self.maximum:g}"
        if self.minimum is not None:
            return f"{noun} of at least {self.minimum:g}"
        if self.maximum is not None:
            return f"{noun} of at most {self.maximum:g}"
        return noun

    def allows(self, value) -> bool:
        if self.kind == "choice":
            return value in self.choices
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "path":
            return isinstance(value, (str, os.PathLike)) and str(value) != ""
        number = numbers.Integral if self.kind == "int" else numbers.Real
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            return False
        return ((self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum))

    def from_text(self, text: str):
        """A value written as text (``true``, ``4``, ``gaussian``) as this option's kind; unchecked (see ``check``)."""
        if self.kind == "bool":
            return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}.get(
                text.strip().lower(), text)
        try:
            return {"float": float, "int": int}.get(self.kind, str)(text)
        except ValueError:
            return text

    def check(self, value, spelt: str) -> None:
        """Refuse a value the declaration does not allow, in one sentence naming the option as ``spelt``."""
        if not self.allows(value):
            raise InputError(f"The option '{spelt}' must be {self.requirement()}, not {value!r}.")

    def describe(self) -> dict:
        """The declaration as ``medsr methods --json`` lists it."""
        return {"name": self.name, "kind": self.kind, "help": self.help, "default": self.default,
                "choices": list(self.choices), "minimum": self.minimum, "maximum": self.maximum, "unit": self.unit,
                "flag": self.cli_flag, "label": self.panel_label}


def check_option_values(method_name: str, declared: Sequence[MethodOption], given: Dict[str, object],
                        spell: Spelling = str) -> None:
    """Refuse an option ``method_name`` does not declare, or a value its declaration does not allow; a value of None
    is no value (the default)."""
    by_name = {option.name: option for option in declared}
    unknown = sorted(set(given) - set(by_name))
    if unknown:
        accepted = ", ".join(f"'{spell(option.name)}'" for option in declared) or "none"
        raise InputError(f"Method '{method_name}' has no option '{spell(unknown[0])}' (its options: {accepted}).")
    for name, value in given.items():
        if value is not None:
            by_name[name].check(value, spell(name))


def options_by_name(declarations: Dict[str, Sequence[MethodOption]]) -> Dict[str, List[Tuple[str, MethodOption]]]:
    """Method name → its options, regrouped as option name → [(method name, declaration)]: one command-line flag or
    panel field per name. Methods may differ in an option's default, not in its kind, choices or spelling."""
    grouped: Dict[str, List[Tuple[str, MethodOption]]] = {}
    for method_name, options in declarations.items():
        for option in options:
            grouped.setdefault(option.name, []).append((method_name, option))
    for name, entries in grouped.items():
        first = entries[0][1]
        for method_name, option in entries[1:]:
            if (option.kind, option.choices, option.cli_flag) != (first.kind, first.choices, first.cli_flag):
                raise ValueError(f"option {name!r} of {method_name!r} differs in kind, choices or flag from "
                                 f"{entries[0][0]!r}'s")
    return grouped
