"""The built-in recipes, samplers, validators and exporters, registered by importing them, and the step of
``load_config`` that completes a config's choice among them: ``sampler``, ``validator``, ``exporter`` and ``axes``
left null take the recipe's."""
import copy

from MedSRLib.errors import InputError

from . import exporters, recipes, samplers, validators  # noqa: F401  (registers the built-in components)
from .registry import EXPORTERS, RECIPES, SAMPLERS, VALIDATORS

CHOSEN_BY_RECIPE = ("sampler", "exporter")


def resolve(config: dict) -> dict:
    """A copy of ``config`` with every component named and every name checked against its registry."""
    resolved = copy.deepcopy(config)
    recipe = RECIPES.get(resolved["recipe"])
    for key in CHOSEN_BY_RECIPE:
        if resolved[key] is None:
            resolved[key] = getattr(recipe, key)
    if resolved["axes"] is None:
        resolved["axes"] = next(iter(recipe.validators))
    if resolved["axes"] not in recipe.validators:
        raise InputError(f"Recipe '{resolved['recipe']}' trains {' or '.join(recipe.validators)} models, not axes "
                         f"'{resolved['axes']}'.")
    if resolved["validator"] is None:
        resolved["validator"] = recipe.validators[resolved["axes"]]
    if resolved["slice_axis"] not in (0, 1, 2):
        raise InputError(f"slice_axis must be an array axis 0, 1 or 2, not {resolved['slice_axis']!r}.")
    for registry, key in ((SAMPLERS, "sampler"), (VALIDATORS, "validator"), (EXPORTERS, "exporter")):
        registry.get(resolved[key])
    return resolved
