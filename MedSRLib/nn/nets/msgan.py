"""MS-GAN's generator (J. Zhu's thesis, ch. 3; METHODS.md §3): in-plane ×4 as two stacked ×2 SRResNet stages.

Stage 1 runs residual blocks on the low-resolution features and upsamples them ×2 by sub-pixel convolution; a 9×9
conv turns those ×2 features into the intermediate ×2 image (supervised in training). Stage 2 takes the same ×2
*features* (not the image), runs its own residual blocks and upsamples ×2 again; a second 9×9 conv gives the ×4 image.

Where MedSR departs from SRResNet, and why: the residual blocks have no batch norm (the thesis's lesson for
medical images, as EDSR) and use ReLU; ``skip="lanczos"`` (not in the thesis) adds each output to the Lanczos-3
interpolation of the input onto the same grid, with both output convs starting at zero, so the untrained network is
exactly the ``lanczos`` method and a CPU training budget goes into detail only.

``msgan_critic`` is the thesis's WGAN-GP critic (Fig. 3.4): 4 dual-convolution blocks (a stride-1 conv keeping the
size, then a stride-2 conv doubling the channels and halving the size), LeakyReLU 0.2, no normalisation (the gradient
penalty is per sample), then two fully connected layers to one unbounded score. An adaptive average pool to 4×4 before
the first FC layer (not in the thesis, whose patches had one size) lets it score patches of any size from 16².
"""
import torch
from torch import nn

NEGATIVE_SLOPE = 0.2

from MedSRLib.nn.blocks.interpolation import LanczosUpsample3d
from MedSRLib.nn.blocks.residual import ResidualBlock
from MedSRLib.nn.registry import register_architecture

SKIPS = ("none", "lanczos")


class SRResNetStage(nn.Module):
    """(B, F, H, W) features → residual blocks and a conv, added back → sub-pixel ×2 → (B, F, 2H, 2W) features."""

    def __init__(self, features: int, blocks: int, residual_scale: float):
        super().__init__()
        self.body = nn.Sequential(*(ResidualBlock(features, residual_scale) for _ in range(blocks)),
                                  nn.Conv2d(features, features, 3, padding=1))
        self.upsample = nn.Sequential(nn.Conv2d(features, 4 * features, 3, padding=1), nn.PixelShuffle(2),
                                      nn.PReLU(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x + self.body(x))


class InPlaneLanczos(nn.Module):
    """(B, 1, H, W) → (B, 1, f·H, f·W) by the ``lanczos`` method's separable Lanczos-3 kernel."""

    def __init__(self, factor: int):
        super().__init__()
        self.upsample = LanczosUpsample3d((1, factor, factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x[:, :, None])[:, :, 0]


@register_architecture("msgan")
class MSGANGenerator(nn.Module):
    """forward(x (B, 1, H, W)) → (B, 1, 4H, 4W); with ``intermediate=True`` → (×4 image, ×2 image)."""

    def __init__(self, features: int = 64, blocks: int = 16, residual_scale: float = 1.0, skip: str = "none"):
        super().__init__()
        if skip not in SKIPS:
            raise ValueError(f"skip must be one of {', '.join(SKIPS)}, not {skip!r}")
        self.head = nn.Sequential(nn.Conv2d(1, features, 9, padding=4), nn.PReLU(features))
        self.stage1 = SRResNetStage(features, blocks, residual_scale)
        self.stage2 = SRResNetStage(features, blocks, residual_scale)
        self.to_image_x2 = nn.Conv2d(features, 1, 9, padding=4)
        self.to_image_x4 = nn.Conv2d(features, 1, 9, padding=4)
        self.lanczos_x2 = InPlaneLanczos(2) if skip == "lanczos" else None
        self.lanczos_x4 = InPlaneLanczos(4) if skip == "lanczos" else None
        if skip == "lanczos":
            for output in (self.to_image_x2, self.to_image_x4):
                nn.init.zeros_(output.weight)
                nn.init.zeros_(output.bias)

    def forward(self, x: torch.Tensor, intermediate: bool = False):
        features_x2 = self.stage1(self.head(x))
        image_x4 = self.to_image_x4(self.stage2(features_x2))
        if self.lanczos_x4 is not None:
            image_x4 = image_x4 + self.lanczos_x4(x)
        if not intermediate:
            return image_x4
        image_x2 = self.to_image_x2(features_x2)
        if self.lanczos_x2 is not None:
            image_x2 = image_x2 + self.lanczos_x2(x)
        return image_x4, image_x2


@register_architecture("msgan_critic")
class MSGANCritic(nn.Module):
    """(B, 1, H, W) HR or SR patches → (B, 1) Wasserstein scores; ``features`` is the first block's width."""

    def __init__(self, features: int = 64, hidden: int = 1024):
        super().__init__()
        layers, width = [nn.Conv2d(1, features, 3, padding=1), nn.LeakyReLU(NEGATIVE_SLOPE)], features
        for _ in range(4):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(NEGATIVE_SLOPE),
                       nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(NEGATIVE_SLOPE)]
            width *= 2
        self.blocks = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(16 * width, hidden), nn.LeakyReLU(NEGATIVE_SLOPE), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(x))
