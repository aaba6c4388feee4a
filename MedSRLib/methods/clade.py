"""CLADE: unpaired through-plane super-resolution (CycleGAN with demodulated convs), trained on a data set of
anisotropic scans as its paper trains it, and optionally fine-tuned on the scan.

Domain X is 32×32 patches of the through-plane slices of B-spline-interpolated thick-slice scans, domain Y patches of
their in-plane slices. G_X: X → Y is the super-resolution network, G_Y: Y → X learns the degradation; PatchGAN critics
D_X, D_Y judge each domain. Losses (least-squares GAN as in CycleGAN): adversarial + λ_cyc·cycle + λ_id·identity +
λ_gmap·Sobel gradient mapping of the cycled Y patches, with (1, 1, 5) for MRI and λ_gmap = 10 for CT; Adam 2e-4,
β1 0.5. G_X then refines the through-plane slices (see ``nn.cyclegan`` and ``per_scan``).

By default the method runs its shipped model (``Training/configs/clade-cpu.yaml``: the training split made into
thick-slice scans of every kind, no HR ground truth) on the scan's thick axis, whatever the factor in the model's range;
``fine_tune=True`` first continues training it on the scan (G_Y and the critics start fresh) within the budget. With no
model in the catalog, or with ``from_scratch=True``, it trains on the scan itself (the per-scan CLADE, which at CPU
budgets stays at the identity: README).

Options: ``fine_tune``, ``from_scratch``, ``budget_seconds`` / ``iterations`` (per-scan training; default 300 s),
``gradient_weight`` (λ_gmap, default 5; 10 for CT), ``features`` (width of a network trained from scratch, default 32;
CLADE uses 64), ``both_orientations`` (default False: CLADE refines one through-plane orientation), ``save_model``,
``force_scale``, ``seed``. Inference runs on whole slices by default (the generator is fully convolutional); ``patch=(32, 32),
stride=(12, 12), blend="average"`` is the paper's count-map stitching.
"""
import itertools

import numpy as np

from MedSRLib.errors import InputError
from .base import register
from .options import MethodOption
from .per_scan import PerScanMethod
from .per_scan.plan import per_scan_options

ARCHITECTURE = "clade_resnet2d"
RESIDUAL_BLOCKS = 6
DEFAULT_FEATURES = 32
PATCH = 32
BATCH = 4
LEARNING_RATE = 2e-4
# The generators' output gain (one scalar each, starting at 0) learns this much faster, so that a short budget can
# move them away from the identity.
GAIN_LEARNING_RATE = 1e-2
BETAS = (0.5, 0.999)
CYCLE_WEIGHT = 1.0
IDENTITY_WEIGHT = 1.0
DEFAULT_GRADIENT_WEIGHT = 5.0


@register
class Clade(PerScanMethod):
    name = "clade"
    description = ("CLADE: CycleGAN with weight-demodulated convs and a Sobel gradient-mapping loss, trained unpaired "
                   "on a data set of thick-slice scans (shipped model; fine_tune=True adapts it to the scan); "
                   "perceptual through-plane SR, any thick factor in the model's range; scale = spacing ratio.")
    options = per_scan_options(both_orientations=False, ships_models=True) + (
        MethodOption("gradient_weight", "float", "weight of the Sobel gradient-mapping loss; 10 suits CT",
                     default=DEFAULT_GRADIENT_WEIGHT, minimum=0),
        MethodOption("features", "int", "generator and critic width; CLADE's paper uses 64", default=DEFAULT_FEATURES,
                     minimum=4),
    )
    default_budget_seconds = 300.0
    activation_factor = 96.0
    ships_models = True

    def untrained_network(self, options):
        from MedSRLib.nn.nets.cyclegan import CladeGenerator
        return CladeGenerator(features=int(options["features"]), blocks=RESIDUAL_BLOCKS)

    def train(self, image, interpolated, plan, options, budget, device, progress, cancel, initial=None):
        import torch
        from torch.nn.functional import l1_loss, mse_loss

        from MedSRLib.nn.nets.cyclegan import CladeGenerator, PatchDiscriminator, gradient_mapping_loss
        from .per_scan.training import (PatchSampler, TrainedModel, starting_params, through_plane_stack,
                                        train_with_budget)

        gradient_weight, features, seed = float(options["gradient_weight"]), int(options["features"]), options["seed"]
        low_plane = through_plane_stack(interpolated, plan, plan.in_plane_axes[0])
        high_plane = np.moveaxis(image, plan.axis, 0)
        low_patches = PatchSampler([(low_plane,)], PATCH, seed=seed)
        high_patches = PatchSampler([(high_plane,), (high_plane.transpose(0, 2, 1),)], PATCH, seed=seed + 1)
        if min(low_patches.size, high_patches.size) < PATCH:
            raise InputError(f"CLADE trains on {PATCH}×{PATCH} patches and needs through-plane and in-plane slices "
                             f"at least that large, not {low_plane.shape[1]}×{low_plane.shape[2]} and "
                             f"{high_plane.shape[1]}×{high_plane.shape[2]}.")

        params = starting_params(initial, ARCHITECTURE, "CLADE", {"features": features, "blocks": RESIDUAL_BLOCKS})
        to_high, to_low = (CladeGenerator(**params).to(device).train() for _ in range(2))
        if initial is not None:  # fine-tuning: G_X starts from the model, G_Y and the critics from scratch
            to_high.load_state_dict(initial[0].state_dict())
        critic_high, critic_low = (PatchDiscriminator(params["features"]).to(device).train() for _ in range(2))
        gains = [to_high.output_gain, to_low.output_gain]
        weights = [parameter for name, parameter in itertools.chain(to_high.named_parameters(),
                                                                    to_low.named_parameters()) if name != "output_gain"]
        generator_optimizer = torch.optim.Adam([{"params": weights}, {"params": gains, "lr": GAIN_LEARNING_RATE}],
                                               lr=LEARNING_RATE, betas=BETAS)
        critic_optimizer = torch.optim.Adam(itertools.chain(critic_high.parameters(), critic_low.parameters()),
                                            lr=LEARNING_RATE, betas=BETAS)

        def adversarial(scores: torch.Tensor, real: bool) -> torch.Tensor:
            return mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))

        def step(spent: float) -> float:
            (low,), (high,) = low_patches.batch(BATCH), high_patches.batch(BATCH)
            low, high = low.to(device), high.to(device)
            fake_high, fake_low = to_high(low), to_low(high)
            cycled_high = to_high(fake_low)
            generator_loss = (
                adversarial(critic_high(fake_high), True) + adversarial(critic_low(fake_low), True)
                + CYCLE_WEIGHT * (l1_loss(to_low(fake_high), low) + l1_loss(cycled_high, high))
                + IDENTITY_WEIGHT * (l1_loss(to_high(high), high) + l1_loss(to_low(low), low))
                + gradient_weight * gradient_mapping_loss(cycled_high, high))
            generator_optimizer.zero_grad(set_to_none=True)
            generator_loss.backward()
            generator_optimizer.step()

            critic_loss = 0.5 * (
                adversarial(critic_high(high), True) + adversarial(critic_high(fake_high.detach()), False)
                + adversarial(critic_low(low), True) + adversarial(critic_low(fake_low.detach()), False))
            critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            critic_optimizer.step()
            return generator_loss.item()

        record = train_with_budget(step, budget, progress, cancel)
        config = {"gradient_weight": gradient_weight, "cycle_weight": CYCLE_WEIGHT, "identity_weight": IDENTITY_WEIGHT,
                  "batch": BATCH, "gan_loss": "least squares", "optimizer": f"Adam {LEARNING_RATE:g} (output gains {GAIN_LEARNING_RATE:g}), betas {BETAS}"}
        return TrainedModel(to_high, ARCHITECTURE, params, low_patches.size, config, record)
