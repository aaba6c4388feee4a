"""``medsr batch``: folders, glob patterns, CSV and BIDS inputs, the manifest and resuming, local and Dask workers."""
import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSRLib.apps.batch import MANIFEST_NAME, run_batch
from MedSRLib.io.volume_files import read_volume
from test_cli import medsr

GOOD_SCANS = ("a.nii.gz", "b.nrrd", "deeper/c.mha")


def medsr_batch(*args):
    return medsr("batch", *args)


def write_scan(path: Path, seed: int = 0, shape=(6, 7, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray((np.random.default_rng(seed).random(shape) * 100).astype(np.float32))
    image.SetSpacing((1.0, 1.2, 2.0))
    sitk.WriteImage(image, str(path))
    return path


def write_truncated_nifti(path: Path) -> Path:
    """A .nii.gz cut short, as an interrupted copy leaves it."""
    write_scan(path, seed=9)
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:len(data) // 2])[:-8])
    return path


def scan_folder(folder: Path) -> Path:
    for seed, name in enumerate(GOOD_SCANS):
        write_scan(folder / name, seed)
    return folder


def manifest_records(output_dir: Path):
    return [json.loads(line) for line in (output_dir / MANIFEST_NAME).read_text().splitlines()]


def statuses(summary):
    return sorted((Path(record["input"]).name, record["status"]) for record in summary.records)


def output_bytes(output_dir: Path):
    return {name: (output_dir / name).read_bytes() for name in GOOD_SCANS}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The good scans super-resolved by one local worker: (input folder, output folder)."""
    folder = scan_folder(tmp_path_factory.mktemp("scans"))
    output_dir = tmp_path_factory.mktemp("local") / "out"
    summary = run_batch(folder, output_dir, "bspline", "2", workers=1)
    assert summary.count("done") == len(GOOD_SCANS)
    return folder, output_dir


def test_a_failed_case_is_recorded_and_reruns_resume(tmp_path):
    folder = scan_folder(tmp_path / "scans")
    broken = write_truncated_nifti(folder / "broken.nii.gz")
    output_dir = tmp_path / "out"

    completed = medsr_batch(folder, output_dir, "--method", "bspline", "--scale", "2")
    assert completed.returncode == 1, completed.stderr
    assert "failed cases:" in completed.stdout and "broken.nii.gz" in completed.stdout
    records = manifest_records(output_dir)
    assert sorted(record["status"] for record in records) == ["done", "done", "done", "failed"]
    failure = next(record for record in records if record["status"] == "failed")
    assert failure["input"] == str(broken) and "cut short" in failure["reason"] and "\n" not in failure["reason"]
    assert all(record["seconds"] >= 0 and record["peak_memory_mib"] > 0 for record in records)
    assert sorted(path.name for path in output_dir.rglob("*") if path.is_file()) == sorted(
        [Path(name).name for name in GOOD_SCANS] + [MANIFEST_NAME])
    assert read_volume(output_dir / "deeper" / "c.mha").size == (16, 14, 12)
    modified = {name: os.stat(output_dir / name).st_mtime_ns for name in GOOD_SCANS}

    # A rerun skips what is done and retries the failure, which fails again.
    rerun = run_batch(folder, output_dir, "bspline", "2")
    assert statuses(rerun) == [("a.nii.gz", "skipped"), ("b.nrrd", "skipped"), ("broken.nii.gz", "failed"),
                               ("c.mha", "skipped")]
    assert {name: os.stat(output_dir / name).st_mtime_ns for name in GOOD_SCANS} == modified

    write_scan(broken, seed=9)
    fixed = run_batch(folder, output_dir, "bspline", "2")
    assert statuses(fixed) == [("a.nii.gz", "skipped"), ("b.nrrd", "skipped"), ("broken.nii.gz", "done"),
                               ("c.mha", "skipped")]
    assert {name: os.stat(output_dir / name).st_mtime_ns for name in GOOD_SCANS} == modified
    assert read_volume(output_dir / "broken.nii.gz").size == (16, 14, 12)
    assert len(manifest_records(output_dir)) == 12


def test_two_workers_give_the_outputs_of_one(local_run, tmp_path):
    folder, one_worker = local_run
    summary = run_batch(folder, tmp_path / "out", "bspline", "2", workers=2)
    assert summary.count("done") == 3
    assert output_bytes(tmp_path / "out") == output_bytes(one_worker)


def test_a_dask_cluster_gives_the_outputs_of_a_local_run(local_run, tmp_path):
    distributed = pytest.importorskip("dask.distributed", reason='--scheduler needs Dask: pip install "medsr[batch]"')
    folder, local_output = local_run
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        summary = run_batch(folder, tmp_path / "out", "bspline", "2", scheduler=cluster.scheduler_address)
    assert summary.count("done") == 3
    assert output_bytes(tmp_path / "out") == output_bytes(local_output)


def test_csv_rows_choose_their_method_and_scale(tmp_path):
    write_scan(tmp_path / "scans" / "a.nrrd")
    write_scan(tmp_path / "scans" / "b.nii.gz", seed=1)
    table = tmp_path / "cases.csv"
    table.write_text("input,output,method,scale\n"
                     "scans/a.nrrd,linear/a.nii.gz,linear,\n"
                     f"{tmp_path / 'scans' / 'b.nii.gz'},thick/b.nrrd,,\"1,1,3\"\n")
    summary = run_batch(table, tmp_path / "out", "bspline", "2")
    by_output = {Path(record["output"]).relative_to(tmp_path / "out").as_posix(): record
                 for record in summary.records}
    assert {name: (record["method"], record["scale"], record["status"]) for name, record in by_output.items()} == {
        "linear/a.nii.gz": ("linear", "2", "done"), "thick/b.nrrd": ("bspline", "1,1,3", "done")}
    assert read_volume(tmp_path / "out" / "linear" / "a.nii.gz").size == (16, 14, 12)
    assert read_volume(tmp_path / "out" / "thick" / "b.nrrd").size == (8, 7, 18)


def test_bids_input_makes_a_derivatives_dataset(tmp_path):
    dataset = tmp_path / "bids"
    dataset.mkdir()
    (dataset / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.8.0"}))
    anatomical = ["sub-01/anat/sub-01_T1w.nii.gz", "sub-02/ses-1/anat/sub-02_ses-1_T2w.nii.gz"]
    for name in anatomical:
        write_scan(dataset / name)
    write_scan(dataset / "sub-01" / "func" / "sub-01_task-rest_bold.nii.gz")  # not anatomical: left out

    derivatives = tmp_path / "derivatives" / "medsr"
    summary = run_batch(dataset, derivatives, "linear", "2")
    assert summary.count("done") == 2
    assert sorted(path.relative_to(derivatives).as_posix() for path in derivatives.rglob("*.nii.gz")) == anatomical
    description = json.loads((derivatives / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"] == "1.8.0"
    generated_by = description["GeneratedBy"][0]
    assert generated_by["Name"] == "MedSR" and generated_by["Version"]
    assert "linear" in generated_by["Description"] and "scale 2" in generated_by["Description"]


def test_a_glob_pattern_mirrors_the_matches_below_its_folder(tmp_path):
    folder = scan_folder(tmp_path / "scans")
    summary = run_batch(str(folder / "**" / "*.mha"), tmp_path / "out", "linear", "2")
    assert [Path(record["output"]).relative_to(tmp_path / "out").as_posix() for record in summary.records] == [
        "deeper/c.mha"]


@pytest.mark.parametrize("arguments, fragment", [
    (["missing-folder"], "does not exist"),
    (["scans", "--method", "no-such-method"], "Unknown method 'no-such-method'"),
    (["empty"], "holds no volume file"),
])
def test_bad_arguments_end_with_one_sentence_and_write_nothing(tmp_path, arguments, fragment):
    scan_folder(tmp_path / "scans")
    (tmp_path / "empty").mkdir()
    source, *options = arguments
    completed = medsr_batch(tmp_path / source, tmp_path / "out", *options)
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medsr: error: ") and fragment in lines[0], completed.stderr
    assert not (tmp_path / "out").exists()


def test_a_learned_method_records_its_checkpoint(tmp_path):
    from MedSRLib.models.catalog import find_model
    write_scan(tmp_path / "scans" / "a.nrrd", shape=(8, 8, 8))
    summary = run_batch(tmp_path / "scans", tmp_path / "out", "threeplayer", "2", device="cpu")
    assert summary.count("done") == 1
    # On a CPU the method's default is the fast variant the catalog offers first there.
    assert manifest_records(tmp_path / "out")[0]["checkpoint_sha256"] == find_model("threeplayer-fast-x2").sha256
