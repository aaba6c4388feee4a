"""The paired GAN step shared by the paired recipes (3D patches, 2D slices, arbitrary scale): a generator, optionally a
critic (RaGAN or WGAN-GP) and a feature network for a perceptual loss (none, trained jointly on L_perc, sharing the
generator's optimiser, or frozen), each with its Adam and AMP scaler. Nothing in it depends on the dimension: the
networks the config names decide whether windows are 2D or 3D.

Per iteration (Algorithm 1 of the three-player paper): feature extractor → generator → critic. Instance noise, one ε
per iteration shared by the real and fake critic inputs, comes from the step's generator. Each trainable network runs
through its DDP wrapper exactly once per iteration (real and fake go through together, concatenated on the batch
axis); forwards that only carry gradients to another player use the plain module with its parameters frozen.
"""
from typing import Dict, Optional, Tuple

import torch

from MedSRLib.errors import InputError
from MedSRLib.models.checkpoints import load_model

from ..distributed import Distributed
from ..losses import (PERCEPTUAL_FORMS, PIXEL_NORMS, InstanceNoise, feature_loss, gradient_penalty, halve_by_area,
                      interpolate, pixel_loss, ragan_critic_loss, ragan_generator_loss, wgan_critic_loss,
                      wgan_generator_loss)
from .base import Recipe, set_trainable

FEATURE_MODES = ("none", "joint", "shared", "frozen")
ADVERSARIAL_TYPES = ("ragan", "wgan-gp")


class PairedGanRecipe(Recipe):
    def __init__(self, config: dict, dist: Distributed):
        super().__init__(config, dist)
        losses = config["losses"]
        if losses["feature_extractor"] not in FEATURE_MODES:
            raise InputError(f"Unknown feature_extractor mode '{losses['feature_extractor']}'; choose one of "
                             f"{', '.join(FEATURE_MODES)}.")
        if losses["adversarial_type"] not in ADVERSARIAL_TYPES:
            raise InputError(f"Unknown adversarial loss '{losses['adversarial_type']}'; choose one of "
                             f"{', '.join(ADVERSARIAL_TYPES)}.")
        if losses["pixel_norm"] not in PIXEL_NORMS:
            raise InputError(f"Unknown pixel loss norm '{losses['pixel_norm']}'; choose one of {', '.join(PIXEL_NORMS)}.")
        if losses["perceptual_form"] not in PERCEPTUAL_FORMS:
            raise InputError(f"Unknown perceptual loss form '{losses['perceptual_form']}'; choose one of "
                             f"{', '.join(PERCEPTUAL_FORMS)}.")
        self.losses = losses
        self.feature_mode = losses["feature_extractor"] if losses["perceptual"] > 0 else "none"
        specs = config["networks"]
        self.networks["generator"] = self.build(specs["generator"])
        if losses["adversarial"] > 0:
            self.networks["critic"] = self.build(specs["critic"])
        if self.feature_mode == "frozen":
            self.frozen_features = self._load_frozen_features(specs["feature_extractor"]).to(dist.device)
        elif self.feature_mode != "none":
            self.networks["feature_extractor"] = self.build(specs["feature_extractor"])
        shared = self.feature_mode == "shared"
        self.optimisers["generator"] = self.adam(self.networks["generator"],
                                                 *([self.networks["feature_extractor"]] if shared else []))
        if self.feature_mode == "joint":
            self.optimisers["feature_extractor"] = self.adam(self.networks["feature_extractor"])
        if "critic" in self.networks:
            self.optimisers["critic"] = self.adam(self.networks["critic"])
        self.finish_setup()
        noise = losses["instance_noise"]
        self.noise = InstanceNoise(noise["start"], config["training"]["steps"], noise["per"],
                                   noise["steps_per_epoch"]) if noise["start"] > 0 else None

    @staticmethod
    def _load_frozen_features(spec: dict) -> torch.nn.Module:
        if not spec.get("checkpoint"):
            raise InputError("A frozen feature network needs networks.feature_extractor.checkpoint, a MedSR "
                             "checkpoint of a pre-trained feature network.")
        network, _ = load_model(spec["checkpoint"])
        set_trainable(network, False)
        return network.eval()

    @property
    def generator(self) -> torch.nn.Module:
        return self.networks["generator"]

    @property
    def exported(self) -> Tuple[torch.nn.Module, dict]:
        return self.generator, self.architecture("generator")

    def generate(self, generator: torch.nn.Module, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """The super-resolved batch; recipes whose networks take more than the input override this."""
        return generator(batch["input"])

    def generate_with_intermediate(self, generator: torch.nn.Module,
                                   batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(the super-resolved batch, a two-stage generator's ×2 output when ``losses.intermediate`` supervises it)."""
        if self.losses["intermediate"] > 0:
            return generator(batch["input"], intermediate=True)
        return self.generate(generator, batch), None

    def _features(self, sr: torch.Tensor, hr: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        """``losses.perceptual_form`` of the feature network's map (or list of maps, e.g. one per stage)."""
        maps = network(torch.cat([sr, hr]))
        pairs = [both.chunk(2) for both in ([maps] if isinstance(maps, torch.Tensor) else maps)]
        return feature_loss([sr_map for sr_map, _ in pairs], [hr_map for _, hr_map in pairs],
                            self.losses["perceptual_form"])

    def _feature_network_for_generator(self) -> torch.nn.Module:
        """Shared: the DDP wrapper (the FE learns from the generator's loss); joint: the plain module, frozen here
        (it learned from L_perc already); frozen: the pre-trained network."""
        if self.feature_mode == "shared":
            return self.wrapped["feature_extractor"]
        if self.feature_mode == "joint":
            return self.networks["feature_extractor"]
        return self.frozen_features

    def train_step(self, batch: Dict[str, torch.Tensor], step: int) -> Dict[str, float]:
        losses, weights = {}, self.losses
        targets = batch["target"]
        random = self.step_generator(step)
        for network in self.networks.values():
            network.train()
        with self.autocast():
            sr, halfway = self.generate_with_intermediate(self.wrapped["generator"], batch)

        if self.feature_mode == "joint":
            set_trainable(self.networks["feature_extractor"], True)
            with self.autocast():
                feature_loss = self._features(sr.detach(), targets, self.wrapped["feature_extractor"])
            self.update("feature_extractor", feature_loss)
            losses["loss/feature_extractor"] = feature_loss.item()

        critic = self.networks.get("critic")
        set_trainable(critic, False)
        if self.feature_mode == "joint":
            set_trainable(self.networks["feature_extractor"], False)
        with self.autocast():
            pixel = pixel_loss(sr, targets, weights["pixel_norm"])
            generator_loss = weights["pixel"] * pixel
            losses["loss/pixel"] = pixel.item()
            if halfway is not None:
                intermediate = pixel_loss(halfway, halve_by_area(targets), weights["pixel_norm"])
                generator_loss = generator_loss + weights["intermediate"] * intermediate
                losses["loss/intermediate"] = intermediate.item()
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
        self.update("generator", generator_loss)
        losses["loss/generator"] = generator_loss.item()

        if critic is not None:
            set_trainable(critic, True)
            real, fake = noisy_real.detach(), noisy_fake.detach()
            if weights["adversarial_type"] == "ragan":
                with self.autocast():
                    real_logits, fake_logits = self.wrapped["critic"](torch.cat([real, fake])).chunk(2)
                    critic_loss = ragan_critic_loss(real_logits, fake_logits)
            else:  # the penalty's double backward runs in float32
                mixed = interpolate(real, fake, random)
                real_logits, fake_logits, mixed_logits = self.wrapped["critic"](torch.cat([real, fake, mixed])).chunk(3)
                critic_loss = (wgan_critic_loss(real_logits, fake_logits)
                               + weights["gradient_penalty"] * gradient_penalty(mixed_logits, mixed))
            self.update("critic", critic_loss)
            losses["loss/critic"] = critic_loss.item()
        if self.noise is not None:
            losses["instance_noise_sigma"] = self.noise.sigma(step)
        return losses
