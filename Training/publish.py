"""Publish a trained checkpoint: score it on the held-out volumes, record the scores in its metadata, ship it.

    python -m Training.publish runs/threeplayer-x2-cpu/model.safetensors --name threeplayer-x2 \\
        --description "…" [--volumes colin27 heudiconv-epi] [--rows isotropic-2] [--catalog MedSRLib/models/catalog.json]

Each (volume, row) goes through the DATA.md protocol (``MedSRLib.evaluation``) with the checkpoint's float16 weights
(what ships) and with B-spline and Lanczos for comparison. The checkpoint is rewritten beside the catalog as
``<name>.safetensors`` with ``metrics.heldout`` filled in (and ``metrics.validation_curve`` from the run's
``metrics.jsonl`` when it lies beside the checkpoint), and the catalog entry of that name is added or replaced (sha256,
method, scales). The catalog lists models in order and a method's default is its first entry at a scale, so a
re-published model keeps its place. A model that does not beat every interpolation baseline by 0.05 dB PSNR on every
scored row is refused unless ``--force``: the shipped default of a learned method must be worth choosing over
interpolation.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

from MedSRLib.catalog import DEFAULT_CATALOG
from MedSRLib.checkpoints import load_checkpoint, save_checkpoint
from MedSRLib.data import dataset_path
from MedSRLib.errors import MedSRError
from MedSRLib.evaluation import Degradation, markdown_table, reference_table
from MedSRLib.files import file_sha256
from MedSRLib.volume import read_volume

from .board import CURVE_FILE

BASELINES = ("bspline", "lanczos")
# The protocol's reproducibility tolerance (DATA.md): a smaller PSNR gain is not a gain.
MIN_GAIN_DB = 0.05
MAX_SHIPPED_BYTES = 15 * 2 ** 20


def score_heldout(checkpoint: str, method: str, volumes: Sequence[str], rows: Sequence[str]) -> Dict[str, dict]:
    """{volume: {row label: {method: scores}}} for the checkpoint and the interpolation baselines."""
    degradations = [Degradation.from_key(key) for key in rows]
    return {volume: reference_table([*BASELINES, method], degradations, read_volume(dataset_path(volume)).array,
                                    checkpoints={method: checkpoint})
            for volume in volumes}


def validation_curve(checkpoint: str) -> list:
    """[{step, psnr, ssim}] of the validations in the training run's metrics.jsonl beside the checkpoint, if any."""
    log = Path(checkpoint).parent / CURVE_FILE
    if not log.is_file():
        return []
    records = (json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip())
    # A resumed run logs again the steps after its last saved state: the later record of a step wins.
    by_step = {r["step"]: {"step": r["step"], "psnr": r["validation/psnr"], "ssim": r["validation/ssim"]}
               for r in records if "validation/psnr" in r}
    return [by_step[step] for step in sorted(by_step)]


def rows_not_beaten(scores: Dict[str, dict], method: str) -> list:
    return [f"{volume} {label}" for volume, table in scores.items() for label, row in table.items()
            if any(row[method]["psnr"] < row[baseline]["psnr"] + MIN_GAIN_DB for baseline in BASELINES)]


def publish(checkpoint: str, name: str, description: str, modality: str, contrast: str, domain: str,
            volumes: Sequence[str], rows: Sequence[str], catalog: Path, force: bool = False) -> Dict[str, dict]:
    state, metadata = load_checkpoint(checkpoint)
    method = metadata["method"]
    with tempfile.TemporaryDirectory() as folder:
        # Score the float16 weights that will ship, not the run's float32 ones.
        candidate = Path(folder) / "candidate.safetensors"
        save_checkpoint(candidate, state, metadata, half=True)
        scores = score_heldout(str(candidate), method, volumes, rows)
    failing = rows_not_beaten(scores, method)
    if failing and not force:
        raise MedSRError(f"The model does not beat {' and '.join(BASELINES)} by {MIN_GAIN_DB} dB on {', '.join(failing)}; "
                         "not published (use --force to publish anyway).")
    metadata = {key: value for key, value in metadata.items() if key not in ("weights_sha256", "created")}
    metadata["metrics"] = {**metadata.get("metrics", {}), "heldout": {
        "protocol": "DATA.md (MedSRLib.evaluation)",
        "scores": {volume: {label: row[method] for label, row in table.items()} for volume, table in scores.items()},
        "baselines": {volume: {label: {b: row[b] for b in BASELINES} for label, row in table.items()}
                      for volume, table in scores.items()}}}
    curve = validation_curve(checkpoint)
    if curve:
        metadata["metrics"]["validation_curve"] = curve
    shipped = catalog.parent / f"{name}.safetensors"
    save_checkpoint(shipped, state, metadata, half=True)
    if shipped.stat().st_size > MAX_SHIPPED_BYTES:
        shipped.unlink()
        raise MedSRError(f"The model is larger than {MAX_SHIPPED_BYTES >> 20} MiB even in float16; not published.")

    document = json.loads(catalog.read_text(encoding="utf-8"))
    entry = {"name": name, "file": shipped.name, "sha256": file_sha256(shipped), "description": description,
             "method": method, "modality": modality, "contrast": contrast, "domain": domain,
             "scales": metadata["scales"]}
    models = document["models"]
    index = next((i for i, model in enumerate(models) if model["name"] == name), len(models))
    models[index:index + 1] = [entry]
    catalog.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return scores


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m Training.publish", description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="a run's model.safetensors")
    parser.add_argument("--name", required=True, help="catalog name, e.g. threeplayer-x2")
    parser.add_argument("--description", required=True)
    parser.add_argument("--modality", default="MR")
    parser.add_argument("--contrast", default="T1")
    parser.add_argument("--domain", default="adult brain")
    parser.add_argument("--volumes", nargs="+", default=["colin27", "heudiconv-epi"])
    parser.add_argument("--rows", nargs="+", default=["isotropic-2"])
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG)
    parser.add_argument("--force", action="store_true", help="publish even if it does not beat interpolation")
    arguments = parser.parse_args(argv)
    try:
        scores = publish(arguments.checkpoint, arguments.name, arguments.description, arguments.modality,
                         arguments.contrast, arguments.domain, arguments.volumes, arguments.rows, arguments.catalog,
                         arguments.force)
    except MedSRError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    for volume, table in scores.items():
        print(f"{volume}:\n{markdown_table(table)}\n")


if __name__ == "__main__":
    main()
