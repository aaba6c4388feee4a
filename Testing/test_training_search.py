"""The config grid search (CLADE's loss-weight search, Training/search.py) on the toy volumes of
test_training_recipes.py: one fresh run per combination with that combination's config, ranked by validation.select
with the trainer's eligibility rule; bad grids and held-out data are refused before anything trains."""
import json

import pytest

from MedSRLib.models.checkpoints import load_model
from Training.search import RESULT_FILE, main, ranked
from test_training_recipes import CASES, COMMON, synthetic_data  # noqa: F401  (synthetic_data is a fixture)

STEPS = 2
GRADIENT_MAPPING_WEIGHTS = [0.0, 20.0]
MIN_PSNR_GAIN = -0.5


def search_arguments(data, output, *extra, min_psnr_gain=MIN_PSNR_GAIN) -> list:
    """The command line of a search of the toy CLADE run; the output gains start at 0.1, as in clade-cpu.yaml, so that
    the networks behind them learn from the first step and the combinations' scores differ."""
    train_files, validation_file = data
    settings = {**COMMON, **CASES["unpaired-cycle"].overrides, "output": str(output), "data.train": train_files,
                "validation.volume": validation_file,
                "networks.generator": {"name": "clade_resnet2d",
                                       "params": {"features": 4, "blocks": 1, "initial_gain": 0.1}},
                "validation.select": {"metric": "piqe", "lower_is_better": True, "min_psnr_gain": min_psnr_gain}}
    return [argument for key, value in settings.items() for argument in ("--set", f"{key}={json.dumps(value)}")] + [
        *extra]


def test_a_two_by_one_grid_trains_each_combination_and_ranks_by_the_selection_metric(synthetic_data, tmp_path,
                                                                                       capsys):
    weights = ",".join(str(weight) for weight in GRADIENT_MAPPING_WEIGHTS)
    main(search_arguments(synthetic_data, tmp_path, "--grid", f"losses.gradient_mapping={weights}",
                          "--grid", "losses.identity=0.5", "--steps", str(STEPS)))
    result = json.loads((tmp_path / "search" / RESULT_FILE).read_text())
    runs = result["runs"]
    assert sorted(run["values"]["losses.gradient_mapping"] for run in runs) == GRADIENT_MAPPING_WEIGHTS
    for run in runs:
        _, metadata = load_model(f"{run['output']}/model.safetensors")
        losses = metadata["training"]["config"]["losses"]
        assert (losses["gradient_mapping"], losses["identity"]) == (run["values"]["losses.gradient_mapping"], 0.5)
        assert run["steps"] == STEPS and metadata["training"]["budget"]["steps"] == STEPS
        assert run["scores"] == {key: value for key, value in metadata["metrics"]["validation"].items()
                                 if key in run["scores"]}
        curve = [json.loads(line) for line in (tmp_path / "search" / run["name"] / "metrics.jsonl").open()]
        assert run["bspline_psnr"] == next(record["validation_bspline/psnr"] for record in curve
                                           if "validation_bspline/psnr" in record)
        assert run["psnr_floor"] == pytest.approx(run["bspline_psnr"] + MIN_PSNR_GAIN)
        assert run["eligible"] and run["rank_value"] == run["scores"]["piqe"]
    assert runs[0]["scores"]["piqe"] <= runs[1]["scores"]["piqe"] and result["winner"] == runs[0]["name"]
    printed = capsys.readouterr().out
    assert all(run["name"] in printed for run in runs) and f"Winner: {runs[0]['name']}" in printed


def test_a_run_below_the_psnr_floor_is_not_eligible_and_then_there_is_no_winner(synthetic_data, tmp_path, capsys):
    main(search_arguments(synthetic_data, tmp_path, "--grid", "losses.identity=0.5", "--steps", "1",
                          min_psnr_gain=100.0))
    result = json.loads((tmp_path / "search" / RESULT_FILE).read_text())
    assert [run["eligible"] for run in result["runs"]] == [False] and result["winner"] is None
    assert "no winner" in capsys.readouterr().out


def test_ineligible_runs_rank_after_every_eligible_one_in_grid_order():
    runs = [{"name": "a", "eligible": False, "rank_value": None}, {"name": "b", "eligible": True, "rank_value": 3.0},
            {"name": "c", "eligible": False, "rank_value": None}, {"name": "d", "eligible": True, "rank_value": -1.0}]
    assert [run["name"] for run in ranked(runs)] == ["d", "b", "a", "c"]


@pytest.mark.parametrize("grid, extra, message", [
    ("losses.identity=0,1", ["--set", 'data.train=["colin27"]'], "held out"),
    ("losses.idnetity=0,1", [], "Unknown training config key 'losses.idnetity'"),
    ("losses.identity=abc,1", [], "must be a number"),
])
def test_a_held_out_volume_an_unknown_key_or_a_value_of_the_wrong_kind_is_refused_before_training(
        synthetic_data, tmp_path, capsys, grid, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main(search_arguments(synthetic_data, tmp_path, "--grid", grid, *extra))
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "search").exists()


def test_selecting_by_a_score_the_validator_does_not_give_is_refused_before_training(synthetic_data, tmp_path):
    from MedSRLib.errors import InputError
    from Training.config import load_config
    from Training.trainer import Trainer
    arguments = search_arguments(synthetic_data, tmp_path)
    overrides = [value for flag, value in zip(arguments[::2], arguments[1::2]) if flag == "--set"]
    config = load_config(overrides=overrides + ['validation.select={"metric": "piq", "lower_is_better": true, '
                                                '"min_psnr_gain": null}'])
    with pytest.raises(InputError, match="picks by 'piq', which the 'simulated-thick-slices' validator does not score"):
        Trainer(config)
    assert not (tmp_path / "model.safetensors").exists()
