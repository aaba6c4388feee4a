"""Publish a trained checkpoint: score it on the held-out volumes, record the scores in its metadata, ship it.

    python -m Training.publish runs/threeplayer-x2-cpu/model.safetensors --name threeplayer-x2 \\
        --description "…" [--volumes colin27 heudiconv-epi] [--rows isotropic-2] [--gate psnr|perceptual] \\
        [--offered-first-on cpu] [--scale-range 1,1,4 1,1,6] [--catalog MedSRLib/models/catalog.json]

Each (volume, row) goes through the evaluation protocol (docs/protocol.md, ``MedSRLib.evaluation``) with the
checkpoint's float16 weights (what ships) and with B-spline and Lanczos for comparison. The checkpoint is rewritten
beside the catalog as ``<name>.safetensors`` with ``metrics.heldout`` filled in (and ``metrics.validation_curve`` from
the run's ``metrics.jsonl`` when it lies beside the checkpoint, and ``cost``: FLOPs per output voxel at each row's
scale), and the catalog entry of that name is added or replaced
(sha256, method, scales or scale range, the gate it passed). The catalog lists models in order and a method's default is
its first entry at a scale, so a re-published model keeps its place; ``--offered-first-on cpu`` makes a model the
default on that kind of device ahead of earlier entries (a fast variant that wins on time at nearly equal quality).
``--scale-range MIN MAX`` narrows what a model with a scale range serves to the factors its validation supports (CLADE
trained on factors 3–8 but validated better than B-spline only from 4 to 6, say); it is recorded in the shipped
checkpoint and its catalog entry, so a scale outside it is not served by this model. A model that fails its gate is refused unless
``--force``: the shipped default of a learned method must be worth choosing over interpolation. The ``psnr`` gate (the
default) asks for 0.05 dB PSNR more than every interpolation baseline on every scored row; the ``perceptual`` gate, for
models whose claim is perceptual (CLADE), asks on every row for PSNR at most 0.5 dB below B-spline's, PIQE below
B-spline's and edge sharpness above B-spline's (the protocol's no-reference scores, recorded beside PSNR for the model
and the baselines).
"""
import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from MedSRLib.engine.cost import flops_per_output_voxel
from MedSRLib.models.catalog import DEFAULT_CATALOG, DEVICE_TYPES, PUBLISH_GATES, list_models
from MedSRLib.models.inference_settings import InferenceSettings
from MedSRLib.nn.registry import build_network
from MedSRLib.models.checkpoints import load_checkpoint, save_checkpoint
from MedSRLib.models.scales import ScaleSupport
from MedSRLib.errors import InputError, MedSRError
from MedSRLib.evaluation.protocol import (Degradation, heldout_volume, markdown_table, no_reference_table,
                                         reference_table)
from MedSRLib.files import file_sha256
from MedSRLib.grid.geometry import parse_scale

from .board import CURVE_FILE

BASELINES = ("bspline", "lanczos")
# The protocol's reproducibility tolerance (docs/protocol.md): a smaller PSNR gain is not a gain.
MIN_GAIN_DB = 0.05
# The perceptual gate: the PSNR a model may give up to B-spline for lower PIQE and sharper edges.
PERCEPTUAL_BASELINE = "bspline"
PERCEPTUAL_PSNR_MARGIN_DB = 0.5
MAX_SHIPPED_BYTES = 15 * 2 ** 20
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def score_heldout(checkpoint: str, method: str, volumes: Sequence[str], rows: Sequence[str],
                  no_reference: bool = False) -> Dict[str, dict]:
    """{volume: {row label: {method: scores}}} for the checkpoint and the interpolation baselines; ``no_reference``
    adds the protocol's PIQE and edge sharpness."""
    degradations = [Degradation.from_key(key) for key in rows]
    return {volume: reference_table([*BASELINES, method], degradations, heldout_volume(volume),
                                    checkpoints={method: checkpoint}, no_reference=no_reference)
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


def flops_per_row(state: dict, metadata: dict, rows: Sequence[str]) -> Dict[str, float]:
    """{row label: FLOPs per output voxel} of the network over its inference window at each published row's scale."""
    settings = InferenceSettings.from_metadata(metadata)
    network = build_network(metadata["architecture"]["name"], metadata["architecture"]["params"])
    network.load_state_dict({key: value.float() for key, value in state.items()})
    window = settings.inference_patch or settings.patch
    costs = {}
    for key in rows:
        degradation = Degradation.from_key(key)
        factors = degradation.factors()  # per array axis (k, j, i)
        if settings.axes == "2d-in-plane":
            factors = tuple(f for axis, f in enumerate(factors) if axis != settings.slice_axis)
        costs[degradation.label] = round(flops_per_output_voxel(network, window, settings.conditioning, factors))
    return costs


def rows_not_beaten(scores: Dict[str, dict], method: str) -> List[str]:
    """Each row the PSNR gate fails, with the model's and the baselines' PSNR."""
    def psnrs(row: dict) -> str:
        return ", ".join(f"{name} {row[name]['psnr']:.2f} dB" for name in (method, *BASELINES))
    return [f"{volume} {label} ({psnrs(row)})" for volume, table in scores.items() for label, row in table.items()
            if any(row[method]["psnr"] < row[baseline]["psnr"] + MIN_GAIN_DB for baseline in BASELINES)]


def perceptual_shortfalls(model: dict, baseline: dict) -> List[str]:
    """The perceptual gate's criteria that one row's scores miss, each with its numbers."""
    name = PERCEPTUAL_BASELINE
    missed = []
    if model["psnr"] < baseline["psnr"] - PERCEPTUAL_PSNR_MARGIN_DB:
        missed.append(f"PSNR {model['psnr']:.2f} dB is more than {PERCEPTUAL_PSNR_MARGIN_DB} dB below {name}'s "
                      f"{baseline['psnr']:.2f}")
    if not model["piqe"] < baseline["piqe"]:
        missed.append(f"PIQE {model['piqe']:.2f} is not below {name}'s {baseline['piqe']:.2f}")
    if not model["edge_sharpness"] > baseline["edge_sharpness"]:
        missed.append(f"edge sharpness {model['edge_sharpness']:.3f} mm⁻¹ is not above {name}'s "
                      f"{baseline['edge_sharpness']:.3f}")
    return missed


def gate_refusal(scores: Dict[str, dict], method: str, gate: str) -> Optional[str]:
    """Why ``gate`` refuses the model with these held-out scores ({volume: {row label: {method: scores}}}, with the
    baselines), in one sentence naming every failing row; None when it passes."""
    if gate == "psnr":
        failing = rows_not_beaten(scores, method)
        return (f"The model does not beat {' and '.join(BASELINES)} by {MIN_GAIN_DB} dB on {', '.join(failing)}"
                if failing else None)
    failing = []
    for volume, table in scores.items():
        for label, row in table.items():
            missed = perceptual_shortfalls(row[method], row[PERCEPTUAL_BASELINE])
            if missed:
                failing.append(f"{volume} {label}: {', '.join(missed)}")
    return (f"The model fails the perceptual gate (on every row PSNR at most {PERCEPTUAL_PSNR_MARGIN_DB} dB below "
            f"{PERCEPTUAL_BASELINE}'s, PIQE below it and edge sharpness above it) on {'; '.join(failing)}"
            if failing else None)


def narrowed_scale_range(metadata: dict, served: Sequence[str], where: str) -> dict:
    """The ``scale_range`` document for ``served`` = (min, max), each "x,y,z" or one factor; refused unless the
    checkpoint has a scale range that holds both ends."""
    if metadata.get("scale_range") is None:
        raise InputError(f"{where} serves listed scales, not a scale range; --scale-range narrows a range.")
    trained = ScaleSupport.from_document(metadata, where)
    low, high = (parse_scale(end) for end in served)
    if any(a > b for a, b in zip(low, high)):
        raise InputError(f"The scale range's minimum {_triple(low)} is above its maximum {_triple(high)} on some axis.")
    if not (trained.contains(low) and trained.contains(high)):
        own = metadata["scale_range"]
        raise InputError(f"The scale range {_triple(low)} to {_triple(high)} is not within the checkpoint's own, "
                         f"{_triple(own['min'])} to {_triple(own['max'])}.")
    return {"min": list(low), "max": list(high)}


def _triple(factors) -> str:
    return ",".join(f"{float(factor):g}" for factor in factors)


def publish(checkpoint: str, name: str, description: str, modality: str, contrast: str, domain: str,
            volumes: Sequence[str], rows: Sequence[str], catalog: Path, force: bool = False,
            gate: str = "psnr", offered_first_on: Sequence[str] = (),
            scale_range: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    if gate not in PUBLISH_GATES:
        raise InputError(f"Unknown gate '{gate}'; choose {' or '.join(PUBLISH_GATES)}.")
    unknown = sorted(set(offered_first_on) - set(DEVICE_TYPES))
    if unknown:
        raise InputError(f"Unknown device type(s) {', '.join(unknown)}; choose from {', '.join(DEVICE_TYPES)}.")
    if not MODEL_NAME.fullmatch(name):
        raise InputError(f"Model name '{name}' must be letters, digits, '.', '_' or '-', starting with a letter or digit.")
    list_models(catalog)  # a missing or malformed catalog is refused before any work
    state, metadata = load_checkpoint(checkpoint)
    if scale_range is not None:
        metadata = {**metadata, "scale_range": narrowed_scale_range(metadata, scale_range, checkpoint)}
    method = metadata["method"]
    shipped = catalog.parent / f"{name}.safetensors"
    # Everything is prepared beside the catalog and moved into place only when it has all passed, so a refusal or a
    # failure leaves the catalog and any earlier file of this name untouched.
    with tempfile.TemporaryDirectory(dir=catalog.parent, prefix=".publish-") as folder:
        candidate = Path(folder) / shipped.name
        save_checkpoint(candidate, state, metadata, half=True)
        if candidate.stat().st_size > MAX_SHIPPED_BYTES:
            raise InputError(f"The model is larger than {MAX_SHIPPED_BYTES >> 20} MiB even in float16; not published.")
        # Scored: the float16 weights that ship, not the run's float32 ones.
        scores = score_heldout(str(candidate), method, volumes, rows, no_reference=gate == "perceptual")
        refusal = gate_refusal(scores, method, gate)
        if refusal and not force:
            raise InputError(f"{refusal}; not published (use --force to publish anyway).")
        metadata = {key: value for key, value in metadata.items() if key not in ("weights_sha256", "created")}
        metadata["metrics"] = {**metadata.get("metrics", {}), "heldout": {
            "protocol": "docs/protocol.md (MedSRLib.evaluation)",
            "scores": {volume: {label: row[method] for label, row in table.items()}
                       for volume, table in scores.items()},
            "baselines": {volume: {label: {b: row[b] for b in BASELINES} for label, row in table.items()}
                          for volume, table in scores.items()}}}
        metadata["cost"] = {"flops_per_output_voxel": flops_per_row(state, metadata, rows)}
        curve = validation_curve(checkpoint)
        if curve:
            metadata["metrics"]["validation_curve"] = curve
        save_checkpoint(candidate, state, metadata, half=True)

        document = json.loads(catalog.read_text(encoding="utf-8"))
        entry = {"name": name, "file": shipped.name, "sha256": file_sha256(candidate), "description": description,
                 "method": method, "modality": modality, "contrast": contrast, "domain": domain, "gate": gate,
                 **ScaleSupport.from_document(metadata, checkpoint).to_document()}
        if offered_first_on:
            entry["offered_first_on"] = sorted(set(offered_first_on))
        models = document["models"]
        index = next((i for i, model in enumerate(models) if model["name"] == name), len(models))
        models[index:index + 1] = [entry]
        new_catalog = Path(folder) / catalog.name
        new_catalog.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.chmod(candidate, 0o644)  # mkstemp-style temporary files are private; a shipped model is not
        os.replace(candidate, shipped)
        os.replace(new_catalog, catalog)
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
    parser.add_argument("--gate", choices=PUBLISH_GATES, default="psnr",
                        help="what the model must reach: psnr (default), 0.05 dB over B-spline and Lanczos on every "
                             "row; perceptual, PSNR within 0.5 dB of B-spline's with lower PIQE and sharper edges")
    parser.add_argument("--offered-first-on", nargs="+", default=[], choices=DEVICE_TYPES, metavar="DEVICE",
                        help="device types (cpu, cuda, mps) on which this model is its method's default ahead of "
                             "earlier catalog entries")
    parser.add_argument("--scale-range", nargs=2, metavar=("MIN", "MAX"),
                        help="serve only these factors, e.g. 1,1,4 1,1,6 (x,y,z): a narrower range than the "
                             "checkpoint's, the one its validation supports")
    parser.add_argument("--force", action="store_true", help="publish even if it fails its gate")
    arguments = parser.parse_args(argv)
    try:
        scores = publish(arguments.checkpoint, arguments.name, arguments.description, arguments.modality,
                         arguments.contrast, arguments.domain, arguments.volumes, arguments.rows, arguments.catalog,
                         arguments.force, arguments.gate, arguments.offered_first_on, arguments.scale_range)
    except MedSRError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    for volume, table in scores.items():
        print(f"{volume}:\n{markdown_table(table)}\n")
        if arguments.gate == "perceptual":
            print(f"{volume}, no-reference scores:\n{no_reference_table(table)}\n")


if __name__ == "__main__":
    main()
