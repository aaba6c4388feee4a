"""``unpaired-cycle``: CycleGAN-style training on unpaired X (low-resolution) and Y (high-resolution) patches, as CLADE
trains on a data set of anisotropic scans (METHODS.md §4).

G_X: X → Y (``networks.generator``) is the super-resolution network that is exported; G_Y: Y → X
(``networks.reverse_generator``, by default the same architecture) learns the degradation; critics D_Y and D_X
(``networks.critic``, one each) judge the two domains. Generator loss (both generators share one Adam):
λ_adv·(least-squares adversarial of G_X and G_Y) + λ_cyc·(|G_Y(G_X(x)) − x| + |G_X(G_Y(y)) − y|)
+ λ_id·(|G_X(y) − y| + |G_Y(x) − x|) + λ_gmap·(CLADE's Sobel gradient-mapping L1 of G_X(G_Y(y)) against y); the
critics (one Adam) then minimise the least-squares critic loss. Each generator runs through its DDP wrapper once per
step, on its domain's patches and the other domain's (identity) together; the cycle's second pass uses the plain
module, whose gradients reach the same parameters.
"""
from typing import Dict, Tuple

import torch
from torch.nn.functional import l1_loss

from MedSRLib.nn.nets.cyclegan import gradient_mapping_loss

from ..distributed import Distributed
from ..losses import least_squares_critic_loss, least_squares_generator_loss
from ..registry import RECIPES
from .base import Recipe, set_trainable


@RECIPES.register("unpaired-cycle")
class UnpairedCycleRecipe(Recipe):
    sampler = "unpaired-thick-slices"
    validators = {"2d-through-plane": "simulated-thick-slices"}
    headline = "loss/generator"

    def __init__(self, config: dict, dist: Distributed):
        super().__init__(config, dist)
        specs = config["networks"]
        self.networks["generator"] = self.build(specs["generator"])
        self.networks["reverse_generator"] = self.build(specs["reverse_generator"] or specs["generator"])
        self.networks["critic_y"] = self.build(specs["critic"])
        self.networks["critic_x"] = self.build(specs["critic"])
        self.optimisers["generators"] = self.adam(self.networks["generator"], self.networks["reverse_generator"])
        self.optimisers["critics"] = self.adam(self.networks["critic_y"], self.networks["critic_x"])
        self.finish_setup()

    @property
    def exported(self) -> Tuple[torch.nn.Module, dict]:
        return self.networks["generator"], self.architecture("generator")

    def train_step(self, batch: Dict[str, torch.Tensor], step: int) -> Dict[str, float]:
        x, y = batch["x"], batch["y"]
        weights = self.config["losses"]
        networks, wrapped = self.networks, self.wrapped
        for network in networks.values():
            network.train()
        critics = (networks["critic_y"], networks["critic_x"])
        for critic in critics:
            set_trainable(critic, False)
        with self.autocast():
            fake_y, identity_y = wrapped["generator"](torch.cat([x, y])).chunk(2)
            fake_x, identity_x = wrapped["reverse_generator"](torch.cat([y, x])).chunk(2)
            cycled_x, cycled_y = networks["reverse_generator"](fake_y), networks["generator"](fake_x)
            adversarial = (least_squares_generator_loss(networks["critic_y"](fake_y))
                           + least_squares_generator_loss(networks["critic_x"](fake_x)))
            cycle = l1_loss(cycled_x, x) + l1_loss(cycled_y, y)
            identity = l1_loss(identity_y, y) + l1_loss(identity_x, x)
            gradient_mapping = gradient_mapping_loss(cycled_y, y)
            generator_loss = (weights["adversarial"] * adversarial + weights["cycle"] * cycle
                              + weights["identity"] * identity + weights["gradient_mapping"] * gradient_mapping)
        self.update("generators", generator_loss)

        for critic in critics:
            set_trainable(critic, True)
        with self.autocast():
            real_y_scores, fake_y_scores = wrapped["critic_y"](torch.cat([y, fake_y.detach()])).chunk(2)
            real_x_scores, fake_x_scores = wrapped["critic_x"](torch.cat([x, fake_x.detach()])).chunk(2)
            critic_loss = (least_squares_critic_loss(real_y_scores, fake_y_scores)
                           + least_squares_critic_loss(real_x_scores, fake_x_scores))
        self.update("critics", critic_loss)
        return {"loss/generator": generator_loss.item(), "loss/adversarial": adversarial.item(),
                "loss/cycle": cycle.item(), "loss/identity": identity.item(),
                "loss/gradient_mapping": gradient_mapping.item(), "loss/critic": critic_loss.item()}
