"""Resumable training state: every network's weights, every optimiser's state, AMP scalers, the step and the curve.

One ``.safetensors`` file holds all tensors; its header holds the rest as JSON (never a pickle). Optimiser state dicts
are flattened: tensors as ``<name>/state/<param index>/<key>``, everything else (param groups, plain numbers) in JSON.
The file is written under a temporary name and renamed, so a run killed at any moment leaves the previous state intact.
"""
import json
import os
from pathlib import Path
from typing import Dict, Tuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from MedSRLib.errors import CheckpointError
from MedSRLib.files import temporary_sibling

STATE_KEY = "medsr_training_state"


def flatten_optimiser(prefix: str, state_dict: dict) -> Tuple[Dict[str, torch.Tensor], dict]:
    tensors, plain = {}, {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}/state/{index}/{key}"] = value.detach().cpu().contiguous().clone()
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "plain_state": plain}


def unflatten_optimiser(prefix: str, tensors: Dict[str, torch.Tensor], document: dict) -> dict:
    state: Dict[int, dict] = {}
    for name, tensor in tensors.items():
        if name.startswith(prefix + "/state/"):
            index, key = name[len(prefix) + len("/state/"):].split("/", 1)
            state.setdefault(int(index), {})[key] = tensor
    for index, values in document["plain_state"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": document["param_groups"]}


def save_state(path: Path, tensors: Dict[str, torch.Tensor], document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        save_file({name: tensor.detach().cpu().contiguous().clone() for name, tensor in tensors.items()},
                  str(temporary), metadata={STATE_KEY: json.dumps(document, allow_nan=False)})
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def load_state(path: Path) -> Tuple[Dict[str, torch.Tensor], dict]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as reader:
            header = reader.metadata() or {}
            tensors = {name: reader.get_tensor(name) for name in reader.keys()}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"Training state '{path}' is unreadable ({error}); delete it to start afresh.") from None
    if STATE_KEY not in header:
        raise CheckpointError(f"'{path}' is not a MedSR training state; delete it to start afresh.")
    return tensors, json.loads(header[STATE_KEY])
