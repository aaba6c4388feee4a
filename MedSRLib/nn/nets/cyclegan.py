"""CLADE's networks: a CycleGAN ResNet generator built from weight-demodulated convs, and a PatchGAN critic.

Generator (Zhu et al.'s c7s1-F, d2F, d4F, ``blocks`` residual blocks, u2F, uF, c7s1-1) with every InstanceNorm removed
and every conv demodulated per output channel (StyleGAN2; CLADE's printed equation normalises the whole tensor).
Two deviations, both for short CPU budgets: the up-sampling layers are nearest-neighbour ×2 followed by a demodulated
3×3 conv (no transposed conv, so no checkerboard), and the output is the input plus the last conv times a learned gain
(``initial_gain``, default 0: the untrained generator is the identity; the last conv is demodulated, so the gain alone
sets the correction's size). A zero gain also zeroes every other weight's gradient, so a long data-set run starts it
above zero. Sides are padded to a multiple of 4 internally.
"""
import torch
from torch import nn
from torch.nn import functional

from MedSRLib.nn.registry import register_architecture

DEMODULATION_EPSILON = 1e-8
NEGATIVE_SLOPE = 0.2


class DemodulatedConv2d(nn.Module):
    """A 2D conv whose weights are divided, per output channel, by the root of their sum of squares (+ 1e-8) before
    every use; reflection padding keeps patch borders free of zero-padding artefacts."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.stride = stride
        self.padding = kernel_size // 2

    def demodulated_weight(self) -> torch.Tensor:
        norm = torch.sqrt(self.weight.pow(2).sum(dim=(1, 2, 3), keepdim=True) + DEMODULATION_EPSILON)
        return self.weight / norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded = functional.pad(x, (self.padding,) * 4, mode="reflect")
        return functional.conv2d(padded, self.demodulated_weight(), self.bias, stride=self.stride)


class DemodulatedResidualBlock(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.body = nn.Sequential(DemodulatedConv2d(features, features, 3), nn.ReLU(inplace=True),
                                  DemodulatedConv2d(features, features, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register_architecture("clade_resnet2d")
class CladeGenerator(nn.Module):
    """(B, 1, H, W) → (B, 1, H, W); ``features`` is the first layer's width (64 in CLADE)."""

    def __init__(self, features: int = 64, blocks: int = 6, initial_gain: float = 0.0):
        super().__init__()
        widths = (features, 2 * features, 4 * features)
        self.encoder = nn.Sequential(
            DemodulatedConv2d(1, widths[0], 7), nn.ReLU(inplace=True),
            DemodulatedConv2d(widths[0], widths[1], 3, stride=2), nn.ReLU(inplace=True),
            DemodulatedConv2d(widths[1], widths[2], 3, stride=2), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*(DemodulatedResidualBlock(widths[2]) for _ in range(blocks)))
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2), DemodulatedConv2d(widths[2], widths[1], 3), nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2), DemodulatedConv2d(widths[1], widths[0], 3), nn.ReLU(inplace=True),
            DemodulatedConv2d(widths[0], 1, 7))
        self.output_gain = nn.Parameter(torch.full((1,), float(initial_gain)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = functional.pad(x, (0, -width % 4, 0, -height % 4), mode="replicate")
        correction = self.decoder(self.blocks(self.encoder(padded)))[..., :height, :width]
        return x + self.output_gain * correction


@register_architecture("patch_critic2d")
class PatchDiscriminator(nn.Module):
    """PatchGAN critic: C64 (no norm), C128, C256, C512 with InstanceNorm and LeakyReLU 0.2, then a 1-channel map;
    4×4 convs, stride 2 except the last two. ``features`` scales all widths (64 in CycleGAN)."""

    def __init__(self, features: int = 64):
        super().__init__()
        widths = (features, 2 * features, 4 * features, 8 * features)
        layers = [nn.Conv2d(1, widths[0], 4, stride=2, padding=1), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)]
        for index, (previous, width) in enumerate(zip(widths, widths[1:])):
            layers += [nn.Conv2d(previous, width, 4, stride=2 if index < 2 else 1, padding=1),
                       nn.InstanceNorm2d(width), nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)]
        layers.append(nn.Conv2d(widths[-1], 1, 4, stride=1, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def sobel_gradients(x: torch.Tensor):
    """Sobel derivatives of (B, 1, H, W) images along the columns (x) and rows (y), with replicated borders."""
    kernel_x = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack([kernel_x, kernel_x.t()])[:, None]
    gradients = functional.conv2d(functional.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)
    return gradients[:, :1], gradients[:, 1:]


def gradient_mapping_loss(cycled: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """CLADE's L_gmap: mean |S_x(cycled) − S_x(original)| + mean |S_y(cycled) − S_y(original)|."""
    cycled_x, cycled_y = sobel_gradients(cycled)
    original_x, original_y = sobel_gradients(original)
    return (cycled_x - original_x).abs().mean() + (cycled_y - original_y).abs().mean()
