"""Losses of the GAN recipes: relativistic average GAN (standard form), WGAN-GP, least squares, non-saturating with the
R1 penalty, pixel L1 or L2, perceptual L1 or content + style, Dice for segmentation, and the instance-noise
schedule.

Critic outputs may be logit maps (a patch critic); expectations are means over every element. Notation follows
METHODS.md §1: C = critic logits, σ = sigmoid, D_Ra(x_r, x_f) = σ(C(x_r) − E[C(x_f)]).
"""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F


def _relativistic_logits(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(C(x_r) − E[C(x_f)], C(x_f) − E[C(x_r)]): the logits of D_Ra(x_r, x_f) and D_Ra(x_f, x_r)."""
    return real_logits - fake_logits.mean(), fake_logits - real_logits.mean()


def ragan_critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = −E[log D_Ra(x_r, x_f)] − E[log(1 − D_Ra(x_f, x_r))]."""
    real_vs_fake, fake_vs_real = _relativistic_logits(real_logits, fake_logits)
    return (F.binary_cross_entropy_with_logits(real_vs_fake, torch.ones_like(real_vs_fake))
            + F.binary_cross_entropy_with_logits(fake_vs_real, torch.zeros_like(fake_vs_real)))


def ragan_generator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                         fake_term_only: bool = False) -> torch.Tensor:
    """L_G = −E[log(1 − D_Ra(x_r, x_f))] − E[log D_Ra(x_f, x_r)]; the authors' code keeps only the second term."""
    real_vs_fake, fake_vs_real = _relativistic_logits(real_logits, fake_logits)
    loss = F.binary_cross_entropy_with_logits(fake_vs_real, torch.ones_like(fake_vs_real))
    if not fake_term_only:
        loss = loss + F.binary_cross_entropy_with_logits(real_vs_fake, torch.zeros_like(real_vs_fake))
    return loss


def wgan_critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """E[C(x_f)] − E[C(x_r)]: the critic's negated Wasserstein estimate (add the gradient penalty)."""
    return fake_logits.mean() - real_logits.mean()


def wgan_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return -fake_logits.mean()


def least_squares_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """½·(E[(C(x_r) − 1)²] + E[C(x_f)²]): the least-squares GAN critic loss of CycleGAN and CLADE."""
    return 0.5 * (((real_scores - 1) ** 2).mean() + (fake_scores ** 2).mean())


def least_squares_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """E[(C(x_f) − 1)²]."""
    return ((fake_scores - 1) ** 2).mean()


def interpolate(real: torch.Tensor, fake: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """x̂ = εx_r + (1 − ε)x_f with ε ~ U(0, 1) per sample, detached from both and requiring grad: the points where
    :func:`gradient_penalty` is evaluated (pass them through the critic in the same forward as the real and fake)."""
    epsilon = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator, device="cpu")
    epsilon = epsilon.to(real.device, real.dtype)
    return (epsilon * real.detach() + (1 - epsilon) * fake.detach()).requires_grad_(True)


def gradient_penalty(mixed_logits: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """E[(‖∇ₓ s(x̂)‖₂ − 1)²], where s(x̂) is the critic's mean logit for each sample (a patch critic's map is
    averaged, so each sample has one score) and ``mixed`` are the points from :func:`interpolate`."""
    scores = mixed_logits.flatten(1).mean(dim=1)
    gradients, = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    return ((gradients.flatten(1).norm(dim=1) - 1) ** 2).mean()


def non_saturating_critic_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """−E[log σ(C(x_r))] − E[log(1 − σ(C(x_f)))] (StyleGAN's critic loss)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def non_saturating_generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """−E[log σ(C(x_f))]."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """E[‖∇ₓ s(x_r)‖²] at the real samples (``real`` must require grad), s the critic's mean logit per sample
    (Mescheder et al. 2018; weight it by γ/2)."""
    scores = real_logits.flatten(1).mean(dim=1)
    gradients, = torch.autograd.grad(scores.sum(), real, create_graph=True)
    return gradients.flatten(1).pow(2).sum(dim=1).mean()


PIXEL_NORMS = {"l1": F.l1_loss, "l2": F.mse_loss}


def pixel_loss(sr: torch.Tensor, hr: torch.Tensor, norm: str = "l1") -> torch.Tensor:
    """Mean absolute (``"l1"``) or squared (``"l2"``) difference."""
    return PIXEL_NORMS[norm](sr, hr)


def halve_by_area(x: torch.Tensor) -> torch.Tensor:
    """A (B, C, H, W) or (B, C, D, H, W) batch averaged over 2×2(×2) blocks: the ×2 target of a ×4 batch whose input was
    made by area averaging, since averaging 4×4 blocks equals averaging 2×2 blocks twice."""
    return F.avg_pool2d(x, 2) if x.dim() == 4 else F.avg_pool3d(x, 2)


def perceptual_loss(sr_features: torch.Tensor, hr_features: torch.Tensor) -> torch.Tensor:
    """Mean |FE(SR) − FE(HR)| (paper eq. 1)."""
    return F.l1_loss(sr_features, hr_features)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → (B, C, C): channel correlations over the map, divided by C·H·W (Gatys et al. 2016)."""
    batch, channels = features.shape[:2]
    flat = features.reshape(batch, channels, -1)
    return flat @ flat.transpose(1, 2) / flat[0].numel()


def content_style_loss(sr_maps: Sequence[torch.Tensor], hr_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """TransMRSR's content + style loss over a feature network's maps: Σ mean (φ(SR) − φ(HR))² (content, Johnson et
    al. 2016) + Σ mean (G(φ(SR)) − G(φ(HR)))² (style, Gram matrices)."""
    return sum(F.mse_loss(sr, hr) + F.mse_loss(gram_matrix(sr), gram_matrix(hr)) for sr, hr in zip(sr_maps, hr_maps))


PERCEPTUAL_FORMS = ("l1", "content-style")


def feature_loss(sr_maps: Sequence[torch.Tensor], hr_maps: Sequence[torch.Tensor], form: str) -> torch.Tensor:
    """The perceptual term of ``form`` (:data:`PERCEPTUAL_FORMS`) over one or more feature maps: the mean of their
    L1 losses, or :func:`content_style_loss`."""
    if form == "content-style":
        return content_style_loss(sr_maps, hr_maps)
    return sum(perceptual_loss(sr, hr) for sr, hr in zip(sr_maps, hr_maps)) / len(sr_maps)


def dice_coefficients(probabilities: torch.Tensor, labels: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per class c, 2·Σ p_c·t_c / (Σ p_c + Σ t_c) over the batch and every pixel, where p are (B, C, …) class
    probabilities and t the one-hot (B, …) integer ``labels``: the soft Dice, and the Dice of hard (one-hot)
    predictions. ``eps`` makes a class absent from both count as a perfect 1."""
    targets = F.one_hot(labels.long(), probabilities.shape[1]).movedim(-1, 1).to(probabilities.dtype)
    axes = (0, *range(2, probabilities.dim()))
    overlap = (probabilities * targets).sum(axes)
    return (2 * overlap + eps) / (probabilities.sum(axes) + targets.sum(axes) + eps)


def dice_loss(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """1 − the mean over classes of :func:`dice_coefficients`: 0 for a perfect prediction, 1 for a disjoint one."""
    return 1 - dice_coefficients(probabilities, labels).mean()


@dataclass(frozen=True)
class InstanceNoise:
    """Gaussian noise on the critic's inputs with σ annealed linearly from ``start`` to 0.

    ``per="iteration"`` (paper): σ = start · (1 − step / total_steps). ``per="epoch"`` (authors' code): σ is constant
    within an epoch of ``steps_per_epoch`` steps and falls from ``start`` to 0 over the epochs in ``total_steps``.
    """
    start: float = 1.0
    total_steps: int = 1
    per: str = "iteration"
    steps_per_epoch: int = 1

    def __post_init__(self):
        if self.per not in ("iteration", "epoch"):
            raise ValueError(f"instance noise is annealed per 'iteration' or 'epoch', not {self.per!r}")
        if self.total_steps < 1 or self.steps_per_epoch < 1:
            raise ValueError("instance noise needs total_steps and steps_per_epoch of at least 1")

    def sigma(self, step: int) -> float:
        if self.per == "iteration":
            progress = step / self.total_steps
        else:
            epochs = -(-self.total_steps // self.steps_per_epoch)
            progress = (step // self.steps_per_epoch) / epochs
        return self.start * max(0.0, 1.0 - progress)

    def apply(self, real: torch.Tensor, fake: torch.Tensor, step: int,
              generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """(real + ε, fake + ε) with one shared ε ~ N(0, σ²) (paper eq. 6 and the authors' code)."""
        sigma = self.sigma(step)
        if sigma == 0:
            return real, fake
        noise = torch.randn(real.shape, generator=generator, device="cpu").to(real.device, real.dtype) * sigma
        return real + noise, fake + noise

