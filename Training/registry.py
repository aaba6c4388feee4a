"""Registries keyed by name, as BasicSR keeps them: a config names its recipe, sampler, validator and exporter, and the
trainer looks each one up here.

A component registers itself where it is defined (``@RECIPES.register("paired-3d")``); :mod:`Training.components`
imports the built-in ones so that every name is known before a config is read.
"""
from typing import Callable, Dict, List, TypeVar

from MedSRLib.errors import InputError

Component = TypeVar("Component", bound=Callable)


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Component], Component]:
        """Class decorator: ``name`` is what configs write."""
        def decorator(component: Component) -> Component:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = component
            return component
        return decorator

    def get(self, name: str) -> Callable:
        if name not in self._entries:
            raise InputError(f"Unknown {self.kind} '{name}'; choose one of {', '.join(self.names())}.")
        return self._entries[name]

    def names(self) -> List[str]:
        return sorted(self._entries)


RECIPES = Registry("recipe")
SAMPLERS = Registry("sampler")
VALIDATORS = Registry("validator")
EXPORTERS = Registry("exporter")
