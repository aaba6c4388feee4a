"""Network interpolation (ESRGAN, Wang et al. 2018, §3.4): the weights of a GAN-stage model blended with those of the
PSNR-oriented model it started from, θ = (1 − α)·θ_PSNR + α·θ_GAN, to trade the GAN stage's sharpness against
fidelity without training again.

    python -m Training.interpolate runs/esrgan3d-psnr-x2-cpu/model.safetensors runs/esrgan3d-x2-cpu/model.safetensors \\
        --config Training/configs/esrgan3d-x2-cpu.yaml --alphas 0 0.25 0.5 0.75 1 \\
        [--write 0.5 --output runs/esrgan3d-x2-interpolated/model.safetensors]

Every α is scored by the config's validator (a training-split volume; the held-out volumes are never used to choose
α), 3D or 2D, with its PSNR, SSIM and, on the same region, the protocol's no-reference scores: edge sharpness (mm⁻¹, higher is
sharper) and mean PIQE over the slices (lower is better). ``--write α`` saves that blend as a checkpoint with the GAN
model's inference settings and both parents recorded in ``training.network_interpolation``; publish it as any other.
"""
import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from MedSRLib.errors import InputError, MedSRError
from MedSRLib.evaluation.metrics import edge_sharpness, piqe_slicewise
from MedSRLib.models.checkpoints import load_checkpoint, load_model, save_checkpoint

from .config import load_config
from .registry import VALIDATORS

UNIT_SPACING = (1.0, 1.0, 1.0)  # the validation crop is on the HR grid; edge sharpness per voxel


def interpolated_state(psnr_state: Dict[str, torch.Tensor], gan_state: Dict[str, torch.Tensor],
                       alpha: float) -> Dict[str, torch.Tensor]:
    """(1 − α)·PSNR + α·GAN for every floating-point tensor; integer buffers (counters) are taken from the GAN model."""
    if not 0 <= alpha <= 1:
        raise InputError(f"The interpolation weight α must be between 0 and 1, not {alpha:g}.")
    if set(psnr_state) != set(gan_state):
        raise InputError("The two checkpoints hold different tensors; network interpolation needs one architecture.")
    blended = {}
    for name, gan in gan_state.items():
        psnr = psnr_state[name]
        if psnr.shape != gan.shape:
            raise InputError(f"Tensor '{name}' has shape {tuple(psnr.shape)} in one checkpoint and "
                             f"{tuple(gan.shape)} in the other; network interpolation needs one architecture.")
        blended[name] = torch.lerp(psnr, gan, alpha) if gan.is_floating_point() else gan.clone()
    return blended


@dataclass(frozen=True)
class Stages:
    """The two checkpoints of one model, loaded once: the PSNR-oriented stage and the GAN stage trained from it."""
    psnr_path: str
    gan_path: str
    psnr_state: Dict[str, torch.Tensor]
    gan_state: Dict[str, torch.Tensor]
    psnr_metadata: dict
    gan_metadata: dict

    def blend(self, alpha: float) -> Dict[str, torch.Tensor]:
        return interpolated_state(self.psnr_state, self.gan_state, alpha)


def load_stages(psnr_path: str, gan_path: str) -> Stages:
    """Both checkpoints; refused unless they are two stages of one network (architecture, method, scales,
    normalisation)."""
    psnr_state, psnr_metadata = load_checkpoint(psnr_path)
    gan_state, gan_metadata = load_checkpoint(gan_path)
    for key in ("architecture", "method", "scales", "normalisation"):
        if psnr_metadata.get(key) != gan_metadata.get(key):
            raise InputError(f"The two checkpoints differ in '{key}'; network interpolation blends two stages of one "
                             "model.")
    return Stages(str(psnr_path), str(gan_path), psnr_state, gan_state, psnr_metadata, gan_metadata)


def score_alphas(stages: Stages, config_path: str, alphas: Sequence[float],
                 overrides: Sequence[str] = ()) -> List[dict]:
    """The validator's scores and the no-reference scores of every blend, plus B-spline's, as table rows; a validator
    that measures edge sharpness or PIQE itself (across the thick axis, for through-plane models) keeps its own."""
    if not alphas:
        raise InputError("Give at least one interpolation weight α to score.")
    config = load_config(config_path, overrides)
    validator = VALIDATORS.get(config["validator"])(config, torch.device("cpu"))
    network, _ = load_model(stages.gan_path)
    rows = []
    for alpha in alphas:
        network.load_state_dict(stages.blend(alpha))
        scores, arrays = validator.scored_arrays(network)
        rows.append({"model": f"α = {alpha:g}", "alpha": alpha, **no_reference(arrays["prediction"]), **scores})
    bspline = {"model": "bspline", **no_reference(arrays["bspline"]), **validator.baselines()["bspline"]}
    return [bspline, *rows]


def no_reference(volume) -> dict:
    """Edge sharpness per voxel and mean PIQE over the slices along array axis 0 (a 2D model's slice stack)."""
    return {"edge_sharpness": edge_sharpness(volume, UNIT_SPACING), "piqe": piqe_slicewise(volume, axis=0)}


def write_blend(stages: Stages, alpha: float, output: Path, validation: Optional[dict]) -> Path:
    """Saves the blend with the GAN stage's inference settings and both parents in ``training.network_interpolation``;
    ``validation`` (its scores) goes into ``metrics.validation``."""
    gan_metadata = stages.gan_metadata
    metadata = {key: value for key, value in gan_metadata.items() if key not in ("weights_sha256", "created")}
    metadata["training"] = {**gan_metadata["training"], "network_interpolation": {
        "alpha": alpha,
        "psnr_model": {"path": stages.psnr_path, "weights_sha256": stages.psnr_metadata["weights_sha256"]},
        "gan_model": {"path": stages.gan_path, "weights_sha256": gan_metadata["weights_sha256"]}}}
    if validation is not None:
        metadata["metrics"] = {**gan_metadata.get("metrics", {}), "validation": {
            **gan_metadata.get("metrics", {}).get("validation", {}), **validation}}
    output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(output, stages.blend(alpha), metadata)
    return output


def format_rows(rows: Sequence[dict]) -> str:
    lines = ["| model | PSNR dB | fg-PSNR dB | SSIM | edge sharpness mm⁻¹ | PIQE |", "|---|---|---|---|---|---|"]
    lines += [f"| {row['model']} | {row['psnr']:.2f} | {row['psnr_foreground']:.2f} | {row['ssim']:.4f} | "
              f"{row['edge_sharpness']:.3f} | {row['piqe']:.1f} |" for row in rows]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m Training.interpolate", description=__doc__.splitlines()[0])
    parser.add_argument("psnr_model", help="the PSNR-oriented stage's model.safetensors")
    parser.add_argument("gan_model", help="the GAN stage's model.safetensors, trained from the PSNR-oriented one")
    parser.add_argument("--config", required=True, help="the GAN stage's config (its validator scores each blend)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set validation.crop=32")
    parser.add_argument("--alphas", nargs="+", type=float, default=[0, 0.25, 0.5, 0.75, 1])
    parser.add_argument("--write", type=float, metavar="ALPHA", help="save the blend with this α")
    parser.add_argument("--output", type=Path, help="where --write saves it")
    arguments = parser.parse_args(argv)
    try:
        if (arguments.write is None) != (arguments.output is None):
            raise InputError("--write ALPHA and --output FILE go together.")
        alphas = sorted(set(arguments.alphas) | ({arguments.write} if arguments.write is not None else set()))
        stages = load_stages(arguments.psnr_model, arguments.gan_model)
        rows = score_alphas(stages, arguments.config, alphas, arguments.set)
        print(format_rows(rows))
        if arguments.write is not None:
            chosen = next(row for row in rows if row.get("alpha") == arguments.write)
            validation = {key: value for key, value in chosen.items() if key not in ("model", "alpha")}
            print(write_blend(stages, arguments.write, arguments.output, validation))
    except MedSRError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
