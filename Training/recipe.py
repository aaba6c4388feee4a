"""One GAN recipe for every 3D patch method: a generator, optionally a critic (RaGAN or WGAN-GP) and a feature network
(none, trained jointly on L_perc, sharing the generator's optimiser, or frozen), each with its Adam and AMP scaler.

Per iteration (Algorithm 1 of the three-player paper): feature extractor → generator → critic. Instance noise, one ε
per iteration shared by the real and fake critic inputs, is drawn from a generator seeded by (seed, step, rank) like the
patches, so a resumed run repeats an uninterrupted one exactly. Each trainable network runs through its DDP wrapper
exactly once per iteration (real and fake go through together, concatenated on the batch axis); forwards that only
carry gradients to another player use the plain module with its parameters frozen.
"""
import contextlib
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from MedSRLib.models.checkpoints import load_model
from MedSRLib.errors import InputError
from MedSRLib.methods import RunSettings, get_method
from MedSRLib.nn.registry import build_network
from MedSRLib.engine.tiling import TilingOptions, run_tiled

from .distributed import Distributed
from .losses import (InstanceNoise, gradient_penalty, interpolate, perceptual_loss, pixel_loss, ragan_critic_loss,
                     ragan_generator_loss, wgan_critic_loss, wgan_generator_loss)
from .state import flatten_optimiser, unflatten_optimiser

FEATURE_MODES = ("none", "joint", "shared", "frozen")
ADVERSARIAL_TYPES = ("ragan", "wgan-gp")


def _set_trainable(network: Optional[torch.nn.Module], trainable: bool) -> None:
    if network is not None:
        for parameter in network.parameters():
            parameter.requires_grad_(trainable)


class GanRecipe:
    def __init__(self, config: dict, dist: Distributed):
        self.config, self.dist = config, dist
        losses = config["losses"]
        if losses["feature_extractor"] not in FEATURE_MODES:
            raise InputError(f"Unknown feature_extractor mode '{losses['feature_extractor']}'; choose one of "
                             f"{', '.join(FEATURE_MODES)}.")
        if losses["adversarial_type"] not in ADVERSARIAL_TYPES:
            raise InputError(f"Unknown adversarial loss '{losses['adversarial_type']}'; choose one of "
                             f"{', '.join(ADVERSARIAL_TYPES)}.")
        self.losses = losses
        self.feature_mode = losses["feature_extractor"] if losses["perceptual"] > 0 else "none"
        device = dist.device
        specs = config["networks"]
        self.networks: Dict[str, torch.nn.Module] = {
            "generator": build_network(specs["generator"]["name"], specs["generator"]["params"]).to(device)}
        if losses["adversarial"] > 0:
            self.networks["critic"] = build_network(specs["critic"]["name"], specs["critic"]["params"]).to(device)
        if self.feature_mode == "frozen":
            self.frozen_features = self._load_frozen_features(specs["feature_extractor"]).to(device)
        elif self.feature_mode != "none":
            spec = specs["feature_extractor"]
            self.networks["feature_extractor"] = build_network(spec["name"], spec["params"]).to(device)
        self.wrapped = {name: dist.wrap(network) for name, network in self.networks.items()}

        optimiser = config["optimiser"]
        def adam(*networks):
            parameters = [p for network in networks for p in network.parameters()]
            return torch.optim.Adam(parameters, lr=optimiser["lr"], betas=tuple(optimiser["betas"]))
        shared = self.feature_mode == "shared"
        self.optimisers = {"generator": adam(self.networks["generator"],
                                             *([self.networks["feature_extractor"]] if shared else []))}
        if self.feature_mode == "joint":
            self.optimisers["feature_extractor"] = adam(self.networks["feature_extractor"])
        if "critic" in self.networks:
            self.optimisers["critic"] = adam(self.networks["critic"])
        self.use_amp = bool(config["training"]["amp"]) and device.type == "cuda"
        self.scalers = {name: torch.amp.GradScaler("cuda", enabled=self.use_amp) for name in self.optimisers}
        noise = losses["instance_noise"]
        self.noise = InstanceNoise(noise["start"], config["training"]["steps"], noise["per"],
                                   noise["steps_per_epoch"]) if noise["start"] > 0 else None

    @staticmethod
    def _load_frozen_features(spec: dict) -> torch.nn.Module:
        if not spec.get("checkpoint"):
            raise InputError("A frozen feature network needs networks.feature_extractor.checkpoint, a MedSR "
                             "checkpoint of a pre-trained 3D feature network.")
        network, _ = load_model(spec["checkpoint"])
        _set_trainable(network, False)
        return network.eval()

    @property
    def generator(self) -> torch.nn.Module:
        return self.networks["generator"]

    def _autocast(self):
        return torch.autocast("cuda") if self.use_amp else contextlib.nullcontext()

    def _update(self, name: str, loss: torch.Tensor) -> None:
        optimiser, scaler = self.optimisers[name], self.scalers[name]
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimiser)
        scaler.update()

    def _features(self, sr: torch.Tensor, hr: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        sr_features, hr_features = network(torch.cat([sr, hr])).chunk(2)
        return perceptual_loss(sr_features, hr_features)

    def _feature_network_for_generator(self) -> torch.nn.Module:
        """Shared: the DDP wrapper (the FE learns from the generator's loss); joint: the plain module, frozen here
        (it learned from L_perc already); frozen: the pre-trained network."""
        if self.feature_mode == "shared":
            return self.wrapped["feature_extractor"]
        if self.feature_mode == "joint":
            return self.networks["feature_extractor"]
        return self.frozen_features

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor, step: int) -> Dict[str, float]:
        """One iteration; returns the losses as floats for logging."""
        losses, weights = {}, self.losses
        random = torch.Generator().manual_seed(int(np.random.default_rng(
            [self.config["seed"], step, self.dist.rank, 1]).integers(2 ** 62)))
        for network in self.networks.values():
            network.train()
        with self._autocast():
            sr = self.wrapped["generator"](inputs)

        if self.feature_mode == "joint":
            _set_trainable(self.networks["feature_extractor"], True)
            with self._autocast():
                feature_loss = self._features(sr.detach(), targets, self.wrapped["feature_extractor"])
            self._update("feature_extractor", feature_loss)
            losses["loss/feature_extractor"] = feature_loss.item()

        critic = self.networks.get("critic")
        _set_trainable(critic, False)
        if self.feature_mode == "joint":
            _set_trainable(self.networks["feature_extractor"], False)
        with self._autocast():
            pixel = pixel_loss(sr, targets)
            generator_loss = weights["pixel"] * pixel
            losses["loss/pixel"] = pixel.item()
            if self.feature_mode != "none":
                perceptual = self._features(sr, targets, self._feature_network_for_generator())
                generator_loss = generator_loss + weights["perceptual"] * perceptual
                losses["loss/perceptual"] = perceptual.item()
            if critic is not None:
                noisy_real, noisy_fake = self.noise.apply(targets, sr, step, random) if self.noise else (targets, sr)
                real_logits, fake_logits = critic(torch.cat([noisy_real, noisy_fake])).chunk(2)
                if weights["adversarial_type"] == "ragan":
                    adversarial = ragan_generator_loss(real_logits, fake_logits, weights["ragan_fake_term_only"])
                else:
                    adversarial = wgan_generator_loss(fake_logits)
                generator_loss = generator_loss + weights["adversarial"] * adversarial
                losses["loss/adversarial"] = adversarial.item()
        self._update("generator", generator_loss)
        losses["loss/generator"] = generator_loss.item()

        if critic is not None:
            _set_trainable(critic, True)
            real, fake = noisy_real.detach(), noisy_fake.detach()
            if weights["adversarial_type"] == "ragan":
                with self._autocast():
                    real_logits, fake_logits = self.wrapped["critic"](torch.cat([real, fake])).chunk(2)
                    critic_loss = ragan_critic_loss(real_logits, fake_logits)
            else:  # the penalty's double backward runs in float32
                mixed = interpolate(real, fake, random)
                real_logits, fake_logits, mixed_logits = self.wrapped["critic"](torch.cat([real, fake, mixed])).chunk(3)
                critic_loss = (wgan_critic_loss(real_logits, fake_logits)
                               + weights["gradient_penalty"] * gradient_penalty(mixed_logits, mixed))
            self._update("critic", critic_loss)
            losses["loss/critic"] = critic_loss.item()
        if self.noise is not None:
            losses["instance_noise_sigma"] = self.noise.sigma(step)
        return losses

    def predict(self, image: np.ndarray, patch: int) -> np.ndarray:
        """The generator applied like ``medsr super-resolve`` does (the method's input preparation, tiled with
        Gaussian blending); the generator is back in training mode afterwards."""
        scale = float(self.config["scale"])
        network_image, factors = get_method(self.config["method"]).network_input(image, (scale,) * 3, RunSettings())
        options = TilingOptions(patch=patch, device=self.dist.device.type, autocast=self.use_amp)
        try:
            return run_tiled(self.generator, network_image, factors, options)
        finally:
            self.generator.train()

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
