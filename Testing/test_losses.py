import math

import pytest
import torch

from Training.losses import (InstanceNoise, content_style_loss, gradient_penalty, gram_matrix, halve_by_area, interpolate,
                             least_squares_critic_loss, least_squares_generator_loss, perceptual_loss, pixel_loss, ragan_critic_loss,
                             r1_penalty, ragan_generator_loss, wgan_critic_loss, wgan_generator_loss)


def softplus(x):
    return math.log1p(math.exp(x))


# Critic logits C(x_r) = (2, 0), C(x_f) = (1, −1): E[C(x_f)] = 0 and E[C(x_r)] = 1, so
# C(x_r) − E[C(x_f)] = (2, 0) and C(x_f) − E[C(x_r)] = (0, −2); −log σ(z) = softplus(−z), −log(1 − σ(z)) = softplus(z).
REAL = torch.tensor([2.0, 0.0])
FAKE = torch.tensor([1.0, -1.0])


def test_ragan_critic_loss_hand_value():
    expected = (softplus(-2) + softplus(0)) / 2 + (softplus(0) + softplus(-2)) / 2
    assert ragan_critic_loss(REAL, FAKE).item() == pytest.approx(expected, rel=1e-6)


def test_ragan_generator_loss_hand_value_both_terms_and_fake_term_only():
    real_term = (softplus(2) + softplus(0)) / 2
    fake_term = (softplus(0) + softplus(2)) / 2
    assert ragan_generator_loss(REAL, FAKE).item() == pytest.approx(real_term + fake_term, rel=1e-6)
    assert ragan_generator_loss(REAL, FAKE, fake_term_only=True).item() == pytest.approx(fake_term, rel=1e-6)


def test_ragan_losses_average_over_patch_maps():
    real, fake = REAL.reshape(1, 1, 2, 1, 1), FAKE.reshape(1, 1, 2, 1, 1)
    assert ragan_critic_loss(real, fake).item() == pytest.approx(ragan_critic_loss(REAL, FAKE).item())


def test_wgan_losses_hand_values():
    assert wgan_critic_loss(REAL, FAKE).item() == pytest.approx(0.0 - 1.0)
    assert wgan_generator_loss(FAKE).item() == pytest.approx(0.0)


def test_least_squares_losses_hand_values():
    # Critic: ½·(mean((2 − 1)², (0 − 1)²) + mean(1², (−1)²)) = ½·(1 + 1); generator: mean((1 − 1)², (−1 − 1)²) = 2.
    assert least_squares_critic_loss(REAL, FAKE).item() == pytest.approx(1.0)
    assert least_squares_generator_loss(FAKE).item() == pytest.approx(2.0)


class LinearCritic(torch.nn.Module):
    """s(x) = w·x: its gradient is w everywhere, so the penalty is (‖w‖ − 1)² whatever the mixing weights."""

    def __init__(self, weights):
        super().__init__()
        self.weights = torch.nn.Parameter(torch.tensor(weights))

    def forward(self, x):
        return (x * self.weights).sum(dim=1, keepdim=True)


def test_gradient_penalty_of_a_linear_critic_is_norm_minus_one_squared():
    critic = LinearCritic([1.0, 2.0, 2.0, 0.0])  # ‖w‖ = 3
    real, fake = torch.randn(5, 4), torch.randn(5, 4)
    mixed = interpolate(real, fake, torch.Generator().manual_seed(0))
    penalty = gradient_penalty(critic(mixed), mixed)
    assert penalty.item() == pytest.approx((3 - 1) ** 2, rel=1e-6)
    penalty.backward()  # the penalty is differentiable in the critic's weights: d/dw (‖w‖ − 1)² = 2(‖w‖ − 1) w / ‖w‖
    assert torch.allclose(critic.weights.grad, 2 * (3 - 1) * critic.weights.detach() / 3)


def test_gradient_penalty_of_a_quadratic_critic_at_a_point():
    # s(x) = ‖x‖² / 2 has gradient x; with real = fake = (3, 4) the mixed point is (3, 4), so the penalty is (5 − 1)².
    point = torch.tensor([[3.0, 4.0]])
    mixed = interpolate(point, point.clone())
    penalty = gradient_penalty((mixed ** 2).sum(dim=1, keepdim=True) / 2, mixed)
    assert penalty.item() == pytest.approx(16.0)


def test_pixel_and_perceptual_losses_are_mean_absolute_differences():
    a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 0.0])
    assert pixel_loss(a, b).item() == pytest.approx(4 / 3)
    assert perceptual_loss(a, b).item() == pytest.approx(4 / 3)
    assert pixel_loss(a, b, "l2").item() == pytest.approx(10 / 3)  # (1 + 0 + 9) / 3


def test_halving_by_area_twice_is_the_quarter_area_average():
    # The ×2 target MS-GAN's intermediate output is compared with: 2×2 block means of the HR patch, which averaged
    # again give the 4×4 block means the ×4 input was made of.
    hr = torch.arange(64.0).view(1, 1, 8, 8)
    half = halve_by_area(hr)
    assert half[0, 0, 0, 0].item() == pytest.approx((0 + 1 + 8 + 9) / 4)
    assert torch.allclose(halve_by_area(half), hr.view(2, 4, 2, 4).mean(dim=(1, 3)).view(1, 1, 2, 2))
    assert halve_by_area(torch.ones(1, 1, 4, 6, 8)).shape == (1, 1, 2, 3, 4)


def test_instance_noise_per_iteration_anneals_linearly_to_zero():
    noise = InstanceNoise(start=1.0, total_steps=10)
    assert [noise.sigma(step) for step in (0, 5, 9, 10, 12)] == pytest.approx([1.0, 0.5, 0.1, 0.0, 0.0])


def test_instance_noise_per_epoch_is_constant_within_an_epoch():
    noise = InstanceNoise(start=1.0, total_steps=10, per="epoch", steps_per_epoch=4)  # three epochs
    assert [noise.sigma(step) for step in range(10)] == pytest.approx([1.0] * 4 + [2 / 3] * 4 + [1 / 3] * 2)


def test_instance_noise_is_shared_between_real_and_fake_and_has_the_scheduled_sigma():
    noise = InstanceNoise(start=0.8, total_steps=4)
    real, fake = torch.zeros(100_000), torch.ones(100_000)
    noisy_real, noisy_fake = noise.apply(real, fake, step=2, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(noisy_fake - noisy_real, fake - real)
    assert noisy_real.std().item() == pytest.approx(0.4, rel=0.02)
    assert noise.apply(real, fake, step=4)[0] is real


def test_instance_noise_rejects_unknown_annealing():
    with pytest.raises(ValueError, match="per 'iteration' or 'epoch'"):
        InstanceNoise(per="batch")


def test_gram_matrices_content_style_loss_and_r1_penalty():
    ones = torch.ones(1, 2, 2, 2)
    assert torch.equal(gram_matrix(ones), torch.full((1, 2, 2), 0.5))  # 4 products of 1 over C·H·W = 8
    maps = [torch.rand(2, 3, 4, 4), torch.rand(2, 5, 2, 2)]
    assert content_style_loss(maps, maps).item() == 0
    assert content_style_loss(maps, [2 * level for level in maps]).item() > 0
    # A critic whose mean logit is Σ a·x over 4 pixels has gradient a / 4 everywhere: R1 = 4 · (a / 4)².
    real = torch.rand(3, 1, 2, 2, requires_grad=True)
    assert r1_penalty(2.0 * real, real).item() == pytest.approx(4 * 0.5 ** 2)
