"""A grid search over config values: one short run per combination, ranked by validation.select.

``python -m Training.search --config Training/configs/clade-cpu.yaml --grid losses.gradient_mapping=1,5,10
--grid losses.identity=0,1 --steps 500 [--set key=value …]`` is CLADE's loss-weight search (its paper's Table 3).

Every combination of the ``--grid`` values (each a config key and comma-separated YAML values; applied after ``--set``)
trains one short run from scratch with the config's seed, in ``<output>/search/<combination>``. The runs' final
validation scores are ranked by the config's ``validation.select`` with the trainer's own rule (a run whose PSNR is below
the validator's B-spline PSNR plus ``min_psnr_gain`` is not eligible), printed as a table and written, with the winner,
to ``<output>/search/search.json`` (rewritten after every run, so an interrupted search keeps what it finished).
Every combination's config and data are checked before the first run trains.
"""
import argparse
import itertools
import json
import logging
import re
import shutil
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple

import yaml

from MedSRLib.errors import InputError, MedSRError

from .config import load_config, parse_override
from .samplers.windows import resolve_volume_path
from .trainer import MODEL_FILE, selection_rank, train

logger = logging.getLogger(__name__)

SEARCH_FOLDER = "search"
RESULT_FILE = "search.json"
# The table's score columns (the selection metric is added when it is not one of them) and their formats.
TABLE_SCORES = {"psnr": ".2f", "ssim": ".4f", "piqe": ".2f", "edge_sharpness": ".3f"}


class Combination(NamedTuple):
    name: str        # "key=value,key=value", in the order of the --grid options
    values: dict     # {config key: value}
    config: dict     # the run's full config


def parse_grid(text: str) -> Tuple[str, list]:
    """``"losses.identity=0.5,1"`` → ``("losses.identity", [0.5, 1])``; the values are read as one YAML flow list, so a
    value may be a list itself (``data.planes=[0],[1,2]``)."""
    key, separator, values = text.partition("=")
    if not separator or not key or not values:
        raise InputError(f"Grid '{text}' must look like key.path=value,value,….")
    try:
        parsed = yaml.safe_load(f"[{values}]")
    except yaml.YAMLError:
        raise InputError(f"Grid '{text}': the values must be comma-separated YAML values.") from None
    return key, parsed


def value_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def check_kind(config: dict, key: str, value) -> None:
    """Refuse a grid value of another kind than the config's value at ``key`` (a number for a number, a list for a
    list); a null config value takes anything."""
    current = config
    for part in key.split("."):
        if not isinstance(current, dict) or part not in current:
            return  # inside a network's params, whose keys the network itself checks
        current = current[part]
    if current is None or kind(value) == kind(current):
        return
    raise InputError(f"Grid value {value!r} of '{key}' must be a {kind(current)} like the config's {current!r}.")


def kind(value) -> str:
    """What a config value is, numbers being one kind: "number", "bool", "str", "list", "dict"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return type(value).__name__


def plan(config_path: Optional[str], settings: Sequence[str], grid: Sequence[Tuple[str, list]],
         steps: Optional[int]) -> Tuple[Path, List[Combination]]:
    """(the search folder, every combination with its validated config); raises InputError before any training."""
    keys = [key for key, _ in grid]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise InputError(f"Grid key '{repeated[0]}' is given more than once; list all its values in one --grid.")
    if any(key.startswith("validation.select") for key in keys):
        raise InputError("validation.select ranks the search's runs, so it cannot be one of the grid's keys.")
    settings = [*settings, *([f"training.steps={steps}"] if steps is not None else [])]
    base = load_config(config_path, settings)
    if not base["validation"]["select"]:
        raise InputError("The search ranks its runs by validation.select, which this config leaves null; set it, e.g. "
                         "--set 'validation.select={metric: psnr, lower_is_better: false, min_psnr_gain: null}'.")
    folder = Path(base["output"]) / SEARCH_FOLDER
    combinations = []
    for chosen in itertools.product(*(values for _, values in grid)):
        values = dict(zip(keys, chosen))
        for key, value in values.items():
            check_kind(base, key, value)
        name = ",".join(f"{key}={value_text(value)}" for key, value in values.items())
        overrides = [parse_override(f"{key}={json.dumps(value)}") for key, value in values.items()]
        output = folder / re.sub(r"[^\w.=,+-]", "-", name)
        config = load_config(config_path, [*settings, *overrides, {"output": str(output)}])
        for volume in [*config["data"]["train"], config["validation"]["volume"]]:
            resolve_volume_path(volume)  # a held-out dataset is refused here, before any run trains
        combinations.append(Combination(name, values, config))
    if len({combination.config["output"] for combination in combinations}) < len(combinations):
        raise InputError("Two grid combinations would share a run folder; use values that differ in letters or digits.")
    return folder, combinations


def run_combination(combination: Combination) -> dict:
    """Train the combination from scratch; its final validation scores, whether they are eligible and their rank
    value (lower is better; null when not eligible)."""
    shutil.rmtree(combination.config["output"], ignore_errors=True)
    trainer = train(combination.config)
    final = dict(trainer.history[-1])
    floor = trainer.selection_floor()
    rank_value = selection_rank(combination.config["validation"]["select"], final, floor)
    bspline = trainer.baseline_scores.get("bspline")
    return {"name": combination.name, "values": combination.values, "output": combination.config["output"],
            "steps": final.pop("step"), "scores": final, "bspline_psnr": bspline["psnr"] if bspline else None,
            "psnr_floor": None if floor == -float("inf") else floor, "eligible": rank_value is not None,
            "rank_value": rank_value}


def ranked(runs: List[dict]) -> List[dict]:
    """The eligible runs best first, then the others in grid order."""
    eligible = sorted((run for run in runs if run["eligible"]), key=lambda run: run["rank_value"])
    return eligible + [run for run in runs if not run["eligible"]]


def search(config_path: Optional[str], settings: Sequence[str], grid: Sequence[Tuple[str, list]],
           steps: Optional[int] = None) -> dict:
    """Run the whole search; returns what ``search.json`` holds."""
    folder, combinations = plan(config_path, settings, grid, steps)
    select = combinations[0].config["validation"]["select"]
    result = {"config": config_path, "settings": list(settings), "grid": dict(grid), "select": select,
              "combinations": len(combinations), "runs": [], "winner": None, "winner_model": None}
    for number, combination in enumerate(combinations, 1):
        logger.info("Search run %d of %d: %s", number, len(combinations), combination.name)
        result["runs"] = ranked([*result["runs"], run_combination(combination)])
        winner = result["runs"][0] if result["runs"][0]["eligible"] else None
        result["winner"] = winner and winner["name"]
        result["winner_model"] = winner and str(Path(winner["output"]) / MODEL_FILE)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def table(result: dict) -> str:
    metric = result["select"]["metric"]
    columns = {**TABLE_SCORES, **({} if metric in TABLE_SCORES else {metric: ".4g"})}
    header = ["#", "combination", "steps", *columns, "eligible"]
    rows = []
    for place, run in enumerate(result["runs"], 1):
        scores = [format(run["scores"][name], spec) if name in run["scores"] else "—" for name, spec in columns.items()]
        rows.append([str(place) if run["eligible"] else "—", run["name"], str(run["steps"]), *scores,
                     "yes" if run["eligible"] else "no"])
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows])


def verdict(result: dict) -> str:
    select, first = result["select"], result["runs"][0]
    order = "lowest" if select["lower_is_better"] else "highest"
    rule = f"ranked by the {order} final validation {select['metric']}"
    if first["psnr_floor"] is not None:
        rule += (f", eligible when PSNR ≥ {first['psnr_floor']:.2f} dB (B-spline's {first['bspline_psnr']:.2f} dB "
                 f"with min_psnr_gain {select['min_psnr_gain']:+g} dB)")
    if result["winner"] is None:
        return f"{rule}.\nNo combination is eligible, so there is no winner."
    return f"{rule}.\nWinner: {result['winner']} ({result['winner_model']})"


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m Training.search", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML config (Training/configs/*.yaml); defaults are in Training/config.py")
    parser.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,…",
                        help="a config key and the values to try, e.g. --grid losses.identity=0,1 (repeatable: every "
                             "combination is trained)")
    parser.add_argument("--steps", type=int, help="training.steps of every run (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value of every run, e.g. --set data.batch=2 (repeatable)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = search(arguments.config, arguments.set, [parse_grid(text) for text in arguments.grid],
                        arguments.steps)
    except MedSRError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    folder = Path(result["runs"][0]["output"]).parent
    print(f"{table(result)}\n{verdict(result)}\n{folder / RESULT_FILE}")


if __name__ == "__main__":
    main()
