"""What every recipe shares: its trainable networks (each wrapped for DDP), one Adam and one AMP scaler per optimiser,
the per-step random generator, and the resumable state of all of them.

A recipe is what one training step does with a batch. It names the sampler and exporter that fit it and, for each model
layout (``axes``) it trains, a validator (a config may choose others); ``train_step(batch, step)`` returns the losses
as floats for the log. Randomness inside a step comes from :meth:`Recipe.step_generator`, seeded by (seed, step, rank)
like the batches, so a resumed run repeats an uninterrupted one exactly.
"""
import contextlib
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from MedSRLib.errors import InputError
from MedSRLib.models.checkpoints import load_model
from MedSRLib.nn.registry import build_network

from ..distributed import Distributed
from ..state import flatten_optimiser, unflatten_optimiser


def set_trainable(network: Optional[torch.nn.Module], trainable: bool) -> None:
    if network is not None:
        for parameter in network.parameters():
            parameter.requires_grad_(trainable)


def start_from_checkpoint(network: torch.nn.Module, spec: dict) -> None:
    """Load the weights of the MedSR checkpoint ``spec["checkpoint"]`` into ``network``, refusing one made for another
    architecture or other hyper-parameters (strict loading would catch most, not a changed skip or scale)."""
    trained, metadata = load_model(spec["checkpoint"])
    architecture = metadata["architecture"]
    if architecture["name"] != spec["name"] or architecture["params"] != spec["params"]:
        raise InputError(f"Checkpoint '{spec['checkpoint']}' holds a '{architecture['name']}' with "
                         f"{architecture['params']}, not the configured '{spec['name']}' with {spec['params']}.")
    network.load_state_dict(trained.state_dict())


class Recipe:
    sampler: str = "paired"
    exporter: str = "checkpoint"
    # The model layouts (config ``axes``) it trains, the first by default, each with its default validator.
    validators: Dict[str, str] = {}
    conditioning: str = "none"             # "coordinates": the network is called model(x, coordinates, scale)
    headline: str = "loss/pixel"           # the loss the progress bar shows

    def __init__(self, config: dict, dist: Distributed):
        self.config, self.dist = config, dist
        self.networks: Dict[str, torch.nn.Module] = {}
        self.optimisers: Dict[str, torch.optim.Optimizer] = {}
        self.use_amp = bool(config["training"]["amp"]) and dist.device.type == "cuda"
        decay_at = config["optimiser"]["decay_at"]
        if not all(isinstance(at, int) and not isinstance(at, bool) and at > 0 for at in decay_at):
            raise InputError(f"optimiser.decay_at must list positive whole step numbers, not {decay_at!r}.")

    def build(self, spec: dict) -> torch.nn.Module:
        """A registered architecture from a config's {name, params}, on the training device, starting from the
        weights of ``spec["checkpoint"]`` when the config names one (a pre-training stage's model)."""
        network = build_network(spec["name"], spec["params"])
        if spec.get("checkpoint"):
            start_from_checkpoint(network, spec)
        return network.to(self.dist.device)

    def adam(self, *networks: torch.nn.Module) -> torch.optim.Adam:
        settings = self.config["optimiser"]
        parameters = [parameter for network in networks for parameter in network.parameters()]
        return torch.optim.Adam(parameters, lr=settings["lr"], betas=tuple(settings["betas"]))

    def learning_rate(self, step: int) -> float:
        """``optimiser.lr`` times ``decay_factor`` for every ``decay_at`` step already reached."""
        settings = self.config["optimiser"]
        passed = sum(step >= at for at in settings["decay_at"])
        return settings["lr"] * settings["decay_factor"] ** passed

    def set_learning_rate(self, step: int) -> None:
        """Every optimiser at :meth:`learning_rate` for ``step`` (from the step alone, so a resumed run agrees)."""
        rate = self.learning_rate(step)
        for optimiser in self.optimisers.values():
            for group in optimiser.param_groups:
                group["lr"] = rate

    def finish_setup(self) -> None:
        """Wrap every network for DDP and give every optimiser its AMP scaler; call once networks and optimisers
        are in place."""
        self.wrapped = {name: self.dist.wrap(network) for name, network in self.networks.items()}
        self.scalers = {name: torch.amp.GradScaler("cuda", enabled=self.use_amp) for name in self.optimisers}

    def autocast(self):
        return torch.autocast("cuda") if self.use_amp else contextlib.nullcontext()

    def update(self, name: str, loss: torch.Tensor) -> None:
        """One step of optimiser ``name`` on ``loss`` (scaled under AMP)."""
        optimiser, scaler = self.optimisers[name], self.scalers[name]
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()

    def step_generator(self, step: int) -> torch.Generator:
        """The CPU generator of this step's randomness (instance noise, gradient-penalty mixing)."""
        return torch.Generator().manual_seed(int(np.random.default_rng(
            [self.config["seed"], step, self.dist.rank, 1]).integers(2 ** 62)))

    def train_step(self, batch: Dict[str, torch.Tensor], step: int) -> Dict[str, float]:
        raise NotImplementedError

    @property
    def exported(self) -> Tuple[torch.nn.Module, dict]:
        """The network an exporter writes and its architecture ({name, params})."""
        raise NotImplementedError

    def architecture(self, role: str) -> dict:
        """The {name, params} the config gives ``networks.<role>``: what a checkpoint needs to rebuild it."""
        spec = self.config["networks"][role]
        return {"name": spec["name"], "params": spec["params"]}

    @property
    def validation_network(self) -> torch.nn.Module:
        """The network the validator scores."""
        return self.exported[0]

    def state(self) -> Tuple[Dict[str, torch.Tensor], dict]:
        tensors, document = {}, {"optimisers": {}, "scalers": {}}
        for name, network in self.networks.items():
            tensors.update({f"{name}/weights/{key}": value for key, value in network.state_dict().items()})
        for name, optimiser in self.optimisers.items():
            optimiser_tensors, document["optimisers"][name] = flatten_optimiser(f"{name}/optimiser",
                                                                                optimiser.state_dict())
            tensors.update(optimiser_tensors)
            document["scalers"][name] = self.scalers[name].state_dict()
        return tensors, document

    def load_state(self, tensors: Dict[str, torch.Tensor], document: dict) -> None:
        for name, network in self.networks.items():
            prefix = f"{name}/weights/"
            network.load_state_dict({key[len(prefix):]: value for key, value in tensors.items()
                                     if key.startswith(prefix)})
        for name, optimiser in self.optimisers.items():
            optimiser.load_state_dict(unflatten_optimiser(f"{name}/optimiser", tensors, document["optimisers"][name]))
            if document["scalers"][name]:
                self.scalers[name].load_state_dict(document["scalers"][name])
