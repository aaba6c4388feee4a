"""``generative-prior``: TransMRSR's stage 1 (METHODS.md §2), the decoder trained unconditionally as a GAN on HR slices.

The generator is the TransMRSR network's unconditional path (``TransMRSR.generate``: the mapping network's latent for
every decoder level, the learned constant, the style layers, no encoder features); only the prior's parameters receive
gradients. The critic (``networks.critic``, ``transmrsr_critic``) sees the HR targets of the ``paired`` sampler — 2D
patches of slices along every plane in ``data.planes`` — beside generated slices. Losses: StyleGAN's non-saturating
loss, and the critic's R1 penalty on the real slices weighted by ``losses.r1`` / 2. The ``generative-prior`` exporter
then distils the truncation centres into the checkpoint that stage 2 (``paired-2d``) starts from, and writes the
critic's trunk beside it as stage 2's 2D feature network.
"""
from typing import Dict, Tuple

import torch

from MedSRLib.errors import InputError

from ..distributed import Distributed
from ..losses import non_saturating_critic_loss, non_saturating_generator_loss, r1_penalty
from ..registry import RECIPES
from .base import Recipe, set_trainable


class PriorGenerator(torch.nn.Module):
    """A TransMRSR network's unconditional path as a module of its own (what DDP wraps): noise → slices."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.network.generate(noise)


@RECIPES.register("generative-prior")
class GenerativePriorRecipe(Recipe):
    sampler = "paired"  # only its HR targets are used
    exporter = "generative-prior"
    validators = {"2d-through-plane": "simulated-thick-slices"}
    headline = "loss/generator"

    def __init__(self, config: dict, dist: Distributed):
        super().__init__(config, dist)
        specs = config["networks"]
        network = self.build(specs["generator"])
        if config["data"]["hr_patch"] != network.prior_size:
            raise InputError(f"The prior generates {network.prior_size}² slices: set data.hr_patch to "
                             f"{network.prior_size}, not {config['data']['hr_patch']}.")
        self.r1 = config["losses"]["r1"]
        self.networks["prior"] = PriorGenerator(network)
        self.networks["critic"] = self.build(specs["critic"])
        self.optimisers["prior"] = self.adam(self.networks["prior"])
        self.optimisers["critic"] = self.adam(self.networks["critic"])
        self.finish_setup()

    @property
    def exported(self) -> Tuple[torch.nn.Module, dict]:
        return self.networks["prior"].network, self.architecture("generator")

    def train_step(self, batch: Dict[str, torch.Tensor], step: int) -> Dict[str, float]:
        real = batch["target"]
        network, critic = self.networks["prior"].network, self.networks["critic"]
        noise = torch.randn(real.shape[0], network.style_dim, generator=self.step_generator(step)).to(real.device)
        for module in self.networks.values():
            module.train()

        set_trainable(critic, False)
        with self.autocast():
            fake = self.wrapped["prior"](noise)
            generator_loss = non_saturating_generator_loss(critic(fake))
        self.update("prior", generator_loss)

        set_trainable(critic, True)
        real = real.detach().requires_grad_(self.r1 > 0)
        # The R1 penalty's double backward runs in float32.
        real_logits, fake_logits = self.wrapped["critic"](torch.cat([real, fake.detach().float()])).chunk(2)
        critic_loss = non_saturating_critic_loss(real_logits, fake_logits)
        losses = {"loss/generator": generator_loss.item(), "loss/critic": critic_loss.item()}
        if self.r1 > 0:
            penalty = r1_penalty(real_logits, real)
            critic_loss = critic_loss + self.r1 / 2 * penalty
            losses["loss/r1"] = penalty.item()
        self.update("critic", critic_loss)
        return losses
