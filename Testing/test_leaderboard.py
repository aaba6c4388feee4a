"""The leaderboard (python -m MedSRLib.evaluation --all): which rows each contestant gets, and a --quick run on crops."""
import subprocess
import sys

from conftest import cached_dataset
from MedSRLib.evaluation.leaderboard import Entry, entries, run_leaderboard, select_entries, supports
from MedSRLib.evaluation.protocol import Degradation


def evaluation(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "MedSRLib.evaluation", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_every_interpolation_and_every_shipped_model_takes_part():
    labels = [entry.label for entry in entries()]
    assert {"nearest", "linear", "bspline", "lanczos"} <= set(labels)
    assert {"threeplayer-x2", "esrgan3d-psnr-x2", "arssr-cpu", "miassr-cpu"} <= set(labels)


def test_a_contestant_gets_the_rows_its_method_or_model_serves():
    def rows(entry):
        return [key for key in ("isotropic-2", "isotropic-2.5", "inplane-4", "thick-4", "thick-8")
                if supports(entry, Degradation.from_key(key).scale_xyz())]
    assert rows(Entry("bspline", "bspline")) == ["isotropic-2", "isotropic-2.5", "inplane-4", "thick-4", "thick-8"]
    assert rows(Entry("threeplayer-x2", "threeplayer", "threeplayer-x2")) == ["isotropic-2"]
    assert rows(Entry("miassr-cpu", "miassr", "miassr-cpu")) == ["inplane-4"]
    assert rows(Entry("arssr-cpu", "arssr", "arssr-cpu")) == ["isotropic-2", "isotropic-2.5", "inplane-4", "thick-4"]


def test_quick_run_writes_the_results_page_with_its_command(tmp_path):
    cached_dataset("colin27")
    results = tmp_path / "results.md"
    arguments = ["--all", "--quick", "--methods", "lanczos", "threeplayer-x2", "--rows", "isotropic-2",
                 "--volumes", "colin27", "--backend", "torch", "--results", results]
    completed = evaluation(*arguments)
    assert completed.returncode == 0, completed.stderr
    page = results.read_text(encoding="utf-8")
    command = "python -m MedSRLib.evaluation " + " ".join(map(str, arguments))
    assert f"Regenerate with `{command}`" in page.splitlines()[2]
    rows = [line for line in page.splitlines() if line.startswith("| isotropic ×2 |")]
    assert [row.split(" | ")[1] for row in rows] == ["bspline", "lanczos", "threeplayer-x2"]
    bspline, lanczos, threeplayer = (row.split(" | ") for row in rows)
    assert bspline[3] == "+0.00" and float(threeplayer[3]) > 1  # the gain over B-spline on the 48³ crop
    assert threeplayer[-2] == "1,357,409" and threeplayer[-1].startswith("389")  # parameters, kFLOP per voxel
    assert results.with_suffix(".png").is_file() or "No plot: matplotlib is not installed" in page


def test_an_unknown_contestant_is_one_clear_error():
    completed = evaluation("--all", "--methods", "bicubic", "--volumes", "colin27")
    assert completed.returncode == 2
    choices = ", ".join(entry.label for entry in entries())
    assert completed.stderr.strip().splitlines() == [
        f"error: 'bicubic' is neither an interpolation method nor a shipped model; choose from {choices}."]


def test_update_merges_a_contestants_rows_into_the_earlier_page_and_keeps_its_command(tmp_path):
    cached_dataset("colin27")
    results = tmp_path / "results.md"
    common = ["--all", "--quick", "--rows", "isotropic-2", "--volumes", "colin27", "--results", results]
    refused = evaluation(*common, "--update", "--methods", "nearest")
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: --update needs the scores of an earlier run in {results.with_suffix('.json')}")
    first = ["--methods", "lanczos", *common]
    assert evaluation(*first).returncode == 0
    uncropped = evaluation(*[argument for argument in common if argument != "--quick"], "--update", "--methods",
                           "nearest")
    assert uncropped.returncode == 2
    assert uncropped.stderr.strip() == (f"error: The page in {results} scores 48³ crops (--quick); update it with "
                                        "--quick, so its rows stay comparable.")
    update = ["--update", "--methods", "nearest", *common]
    completed = evaluation(*update)
    assert completed.returncode == 0, completed.stderr
    page = results.read_text(encoding="utf-8")
    assert "Regenerate with `python -m MedSRLib.evaluation " + " ".join(map(str, first)) + "`" in page
    assert "Updated by `python -m MedSRLib.evaluation " + " ".join(map(str, update)) + "`: " in page
    rows = [line.split(" | ")[1] for line in page.splitlines() if line.startswith("| isotropic ×2 |")]
    assert rows == ["bspline", "lanczos", "nearest"]  # B-spline rescored in place, nearest added after


def test_rows_that_no_named_contestant_serves_are_not_run_for_the_baseline_alone():
    cached_dataset("colin27")
    selected = select_entries(["threeplayer-x2"])  # B-spline is added beside it
    assert [entry.label for entry in selected] == ["bspline", "threeplayer-x2"]
    thick = [Degradation.from_key("thick-2")]  # a row threeplayer-x2 does not serve
    assert run_leaderboard(selected, thick, ["colin27"], quick=True, asked=["threeplayer-x2"]) == {}
    unnamed = run_leaderboard(selected, thick, ["colin27"], quick=True)
    assert list(unnamed["colin27"][thick[0].label]) == ["bspline"]
