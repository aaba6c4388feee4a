"""TransMRSR (Huang et al. 2023; METHODS.md §2): a 2D network that refines through-plane slices already interpolated
onto the output grid, with a generative prior as the decoder of its U-shaped deep-feature module.

I_SR = I_in + H_rec(F_shallow + F_deep) (eqs. 10–11), where

* F_shallow: a 3×3 conv and ``shallow_blocks`` residual conv blocks;
* the encoder: per level a residual Swin block (Swin layers with regular then shifted windows, a 3×3 conv, the block's
  input added back), then patch merging (2×2 neighbours concatenated, a linear layer to the next width) into the next
  level; the deepest output is average-pooled to ``LATENT_GRID``² and one linear layer gives one latent per decoder
  level (W+ style, eq. 4);
* the self-distilled truncation: each latent moves toward its nearest of the ``latent_centres`` cluster centres,
  w' = c + ψ(w − c) (eq. 5), the centres being K-means centres of latents the prior's own mapping network samples
  (:meth:`TransMRSR.distil_latent_centres`, once, after the prior is trained; a buffer, so checkpoints carry them);
* the decoder (the generative prior, StyleSwin-like): a learned constant at the deepest level, per level
  ``decoder_layers`` style layers (AdaIN style modulation from that level's latent; half of the attention heads on
  regular windows, half on shifted ones), the level's encoder output merged by CWSS, then bilinear ×2 upsampling and a
  linear layer to the next width; its full-resolution output is F_deep;
* CWSS (eqs. 6–9): a stride-1 3×3 conv of the level's encoder features and its truncated latent (broadcast over the
  map) gives α and β; the second half of the decoder channels becomes α ⊙ F₂ + β, the first half passes unchanged;
* H_rec: a residual conv block and a 3×3 conv to one channel, which starts at zero, so the untrained network returns
  its (interpolated) input and training learns the missing detail.

Stage 1 trains the prior alone, unconditionally (:meth:`TransMRSR.generate`: a StyleGAN mapping network turns noise
into the latent of every level, no encoder features, a 1×1 conv to one channel); stage 2 trains everything on pairs.

Where this departs from the paper and the authors' code: one grey channel instead of three replicated ones; any slice
size (the slice is padded by repeating its edges to a multiple of ``window``·2^(levels − 1) and cropped back; the
constant is bilinearly resized to the deepest map; the encoder's deepest map is pooled to a fixed grid before the
linear layer); CWSS also sees the encoder features (the paper's text feeds the latent to the conv, its eqs. 6–7 the
encoder features: both go in); no sinusoidal position encoding in the decoder; the sizes (``features`` per level,
``style_dim``) are for a CPU budget — the paper's code uses 6 levels, up to 512 channels and a style dimension of 512.
"""
from typing import List, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional

from MedSRLib.nn.blocks.residual import ResidualBlock
from MedSRLib.nn.blocks.swin import (SwinLayer, WindowAttention, crop_to, pad_to_multiple, shifted_window_mask,
                                     window_partition, window_reverse)
from MedSRLib.nn.registry import register_architecture

LATENT_GRID = 4  # the deepest encoder map is pooled to LATENT_GRID² before the latent layer
NEGATIVE_SLOPE = 0.2
KMEANS_ITERATIONS = 30


def truncate_toward_nearest(latents: torch.Tensor, centres: torch.Tensor, psi: float) -> torch.Tensor:
    """(…, D) latents each moved toward its nearest (smallest Euclidean distance) of the (K, D) ``centres``:
    c + ψ(w − c). (The authors' code picks the centre by argmax of the distance, the farthest one: a bug.)"""
    flat = latents.reshape(-1, latents.shape[-1])
    nearest = centres[torch.cdist(flat, centres).argmin(dim=1)]
    return (nearest + psi * (flat - nearest)).reshape(latents.shape)


def kmeans(samples: torch.Tensor, clusters: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """(clusters, D) centres of (N, D) ``samples`` by Lloyd's algorithm, started from distinct random samples; an
    emptied cluster keeps its centre."""
    centres = samples[torch.randperm(samples.shape[0], generator=generator)[:clusters]].clone()
    for _ in range(iterations):
        assignment = torch.cdist(samples, centres).argmin(dim=1)
        for cluster in range(clusters):
            members = samples[assignment == cluster]
            if members.shape[0]:
                centres[cluster] = members.mean(dim=0)
    return centres


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


class ResidualSwinBlock(nn.Module):
    """(B, C, H, W) → same: Swin layers (regular, shifted, …), a 3×3 conv, plus the input (eqs. 2–3)."""

    def __init__(self, features: int, heads: int, window: int, layers: int, mlp_ratio: float):
        super().__init__()
        self.layers = nn.ModuleList(SwinLayer(features, heads, window, shift=(window // 2) * (index % 2),
                                              mlp_ratio=mlp_ratio) for index in range(layers))
        self.conv = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:
        tokens = to_channels_last(x)
        for layer in self.layers:
            tokens = layer(tokens, shift_mask)
        return x + self.conv(to_channels_first(tokens))


class PatchMerging(nn.Module):
    """(B, C, H, W) → (B, C', H/2, W/2): each 2×2 neighbourhood's features concatenated, normalised, projected."""

    def __init__(self, features: int, merged_features: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * features)
        self.projection = nn.Linear(4 * features, merged_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = to_channels_last(functional.pixel_unshuffle(x, 2))
        return to_channels_first(self.projection(self.norm(merged)))


class StyleModulation(nn.Module):
    """AdaIN: each channel normalised over the map, then scaled by 1 + γ(w) and shifted by β(w)."""

    def __init__(self, features: int, style_dim: int):
        super().__init__()
        self.style = nn.Linear(style_dim, 2 * features)
        nn.init.zeros_(self.style.weight)
        nn.init.zeros_(self.style.bias)

    def forward(self, tokens: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """``tokens`` (B, H, W, C), ``latent`` (B, style_dim)."""
        mean = tokens.mean(dim=(1, 2), keepdim=True)
        deviation = (tokens.var(dim=(1, 2), keepdim=True, unbiased=False) + 1e-5).sqrt()
        gain, shift = self.style(latent)[:, None, None].chunk(2, dim=-1)
        return (1 + gain) * (tokens - mean) / deviation + shift


class DoubleWindowAttention(nn.Module):
    """StyleSwin's attention: half the channels (and heads) attend within regular windows, the other half within the
    windows of the map rolled by half a window (masked where the roll wrapped round)."""

    def __init__(self, features: int, heads: int, window: int):
        super().__init__()
        if features % 2 or heads % 2:
            raise ValueError(f"double window attention splits features ({features}) and heads ({heads}) in two")
        self.window, self.shift = window, window // 2
        self.regular = WindowAttention(features // 2, window, heads // 2)
        self.shifted = WindowAttention(features // 2, window, heads // 2)
        self.projection = nn.Linear(features, features)

    def forward(self, tokens: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:
        _, height, width, _ = tokens.shape
        regular, shifted = tokens.chunk(2, dim=-1)
        regular = window_reverse(self.regular(window_partition(regular, self.window)), self.window, height, width)
        rolled = torch.roll(shifted, (-self.shift, -self.shift), dims=(1, 2))
        rolled = window_reverse(self.shifted(window_partition(rolled, self.window), shift_mask), self.window,
                                height, width)
        shifted = torch.roll(rolled, (self.shift, self.shift), dims=(1, 2))
        return self.projection(torch.cat([regular, shifted], dim=-1))


class StyleSwinLayer(nn.Module):
    """x + attention(AdaIN(x, w)), then + MLP(AdaIN(x, w)), on (B, H, W, C) maps."""

    def __init__(self, features: int, heads: int, window: int, mlp_ratio: float, style_dim: int):
        super().__init__()
        self.attention_style = StyleModulation(features, style_dim)
        self.attention = DoubleWindowAttention(features, heads, window)
        self.mlp_style = StyleModulation(features, style_dim)
        hidden = round(features * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, features))

    def forward(self, tokens: torch.Tensor, latent: torch.Tensor, shift_mask: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attention(self.attention_style(tokens, latent), shift_mask)
        return tokens + self.mlp(self.mlp_style(tokens, latent))


class ChannelWiseScaleShift(nn.Module):
    """CWSS: α, β from a stride-1 3×3 conv of the encoder features and the truncated latent; the second half of the
    decoder channels becomes α ⊙ F₂ + β, the first half is left as it is."""

    def __init__(self, features: int, encoder_features: int, style_dim: int):
        super().__init__()
        self.half = features // 2
        self.conv = nn.Conv2d(encoder_features + style_dim, 2 * (features - self.half), 3, padding=1)

    def forward(self, decoder: torch.Tensor, encoder: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) decoder and encoder maps, (B, style_dim) latent."""
        broadcast = latent[:, :, None, None].expand(-1, -1, *encoder.shape[-2:])
        scale, shift = self.conv(torch.cat([encoder, broadcast], dim=1)).chunk(2, dim=1)
        kept, modulated = decoder[:, :self.half], decoder[:, self.half:]
        return torch.cat([kept, scale * modulated + shift], dim=1)


class PriorLevel(nn.Module):
    """One decoder level: style layers under one latent, CWSS with the encoder level (stage 2 only)."""

    def __init__(self, features: int, heads: int, window: int, layers: int, mlp_ratio: float, style_dim: int):
        super().__init__()
        self.layers = nn.ModuleList(StyleSwinLayer(features, heads, window, mlp_ratio, style_dim)
                                    for _ in range(layers))
        self.cwss = ChannelWiseScaleShift(features, features, style_dim)

    def forward(self, x: torch.Tensor, latent: torch.Tensor, shift_mask: torch.Tensor,
                encoder: Optional[torch.Tensor]) -> torch.Tensor:
        tokens = to_channels_last(x)
        for layer in self.layers:
            tokens = layer(tokens, latent, shift_mask)
        x = to_channels_first(tokens)
        return x if encoder is None else self.cwss(x, encoder, latent)


class MappingNetwork(nn.Module):
    """StyleGAN's z → w: the noise normalised to unit mean square, then ``layers`` linear layers with LeakyReLU."""

    def __init__(self, style_dim: int, layers: int):
        super().__init__()
        blocks = []
        for _ in range(layers):
            blocks += [nn.Linear(style_dim, style_dim), nn.LeakyReLU(NEGATIVE_SLOPE)]
        self.layers = nn.Sequential(*blocks)

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.layers(noise * torch.rsqrt(noise.pow(2).mean(dim=1, keepdim=True) + 1e-8))


@register_architecture("transmrsr")
class TransMRSR(nn.Module):
    """(B, 1, H, W) → (B, 1, H, W) for any H, W: the slice refined. ``features`` lists the widths of the levels,
    finest first (also the decoder's, deepest last)."""

    def __init__(self, features: Sequence[int] = (32, 48, 64), style_dim: int = 128, window: int = 8, heads: int = 4,
                 encoder_layers: int = 2, decoder_layers: int = 2, mlp_ratio: float = 2.0, shallow_blocks: int = 2,
                 mapping_layers: int = 4, prior_size: int = 64, latent_centres: int = 8, truncation: float = 0.9,
                 embedding: int = 2):
        super().__init__()
        features = list(features)
        self.levels = len(features)
        self.window, self.style_dim, self.truncation, self.embedding = window, style_dim, truncation, embedding
        self.multiple = embedding * window * 2 ** (self.levels - 1)
        if prior_size % self.multiple:
            raise ValueError(f"prior_size {prior_size} must be a multiple of embedding·window·2^(levels − 1) = "
                             f"{self.multiple}")
        self.prior_size = prior_size
        self.shallow = nn.Sequential(nn.PixelUnshuffle(embedding),
                                     nn.Conv2d(embedding ** 2, features[0], 3, padding=1),
                                     *(ResidualBlock(features[0], 1.0, NEGATIVE_SLOPE) for _ in range(shallow_blocks)))
        self.encoder = nn.ModuleList(ResidualSwinBlock(width, heads, window, encoder_layers, mlp_ratio)
                                     for width in features)
        self.merging = nn.ModuleList(PatchMerging(width, wider) for width, wider in zip(features, features[1:]))
        self.latents = nn.Linear(features[-1] * LATENT_GRID ** 2, self.levels * style_dim)
        self.register_buffer("latent_centres", torch.zeros(latent_centres, style_dim))
        self.mapping = MappingNetwork(style_dim, mapping_layers)
        deepest = prior_size // (embedding * 2 ** (self.levels - 1))
        self.constant = nn.Parameter(torch.randn(1, features[-1], deepest, deepest))
        self.decoder = nn.ModuleList(PriorLevel(width, heads, window, decoder_layers, mlp_ratio, style_dim)
                                     for width in reversed(features))
        self.upsampling = nn.ModuleList(nn.Conv2d(wider, width, 1)
                                        for width, wider in zip(reversed(features[:-1]), reversed(features[1:])))
        self.prior_output = nn.Sequential(nn.Conv2d(features[0], embedding ** 2, 1), nn.PixelShuffle(embedding))
        self.reconstruction = nn.Sequential(ResidualBlock(features[0], 1.0, NEGATIVE_SLOPE),
                                            nn.Conv2d(features[0], embedding ** 2, 3, padding=1),
                                            nn.PixelShuffle(embedding))
        nn.init.zeros_(self.reconstruction[-2].weight)
        nn.init.zeros_(self.reconstruction[-2].bias)

    def shift_masks(self, height: int, width: int, device: torch.device) -> List[torch.Tensor]:
        """The shifted-window mask of every level of a (height, width) map, finest first."""
        return [shifted_window_mask(height >> level, width >> level, self.window, self.window // 2).to(device)
                for level in range(self.levels)]

    def encode(self, shallow: torch.Tensor, masks: Sequence[torch.Tensor]):
        """(encoder outputs finest first, (B, levels, style_dim) latents, deepest level's first)."""
        outputs, x = [], shallow
        for level, block in enumerate(self.encoder):
            if level:
                x = self.merging[level - 1](x)
            x = block(x, masks[level])
            outputs.append(x)
        pooled = functional.adaptive_avg_pool2d(x, LATENT_GRID).flatten(1)
        return outputs, self.latents(pooled).view(-1, self.levels, self.style_dim)

    def truncate(self, latents: torch.Tensor) -> torch.Tensor:
        """The self-distilled truncation of (…, style_dim) latents toward their nearest centres."""
        return truncate_toward_nearest(latents, self.latent_centres, self.truncation)

    def decode(self, latents: torch.Tensor, masks: Sequence[torch.Tensor],
               encoder: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
        """The prior: (B, levels, style_dim) latents (deepest level's first) → full-resolution features; with
        ``encoder`` (outputs finest first) each level is merged with its encoder level by CWSS."""
        deepest_size = encoder[-1].shape[-2:] if encoder is not None else self.constant.shape[-2:]
        x = self.constant.repeat(latents.shape[0], 1, 1, 1)  # a copy: a view of a parameter breaks FLOP counting
        if tuple(deepest_size) != tuple(self.constant.shape[-2:]):
            x = functional.interpolate(x, size=tuple(deepest_size), mode="bilinear", align_corners=False)
        for index, level in enumerate(self.decoder):
            depth = self.levels - 1 - index
            x = level(x, latents[:, index], masks[depth], None if encoder is None else encoder[depth])
            if depth:
                x = functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
                x = self.upsampling[index](x)
        return x

    def generate(self, noise: torch.Tensor) -> torch.Tensor:
        """Stage 1: (B, style_dim) noise → (B, 1, prior_size, prior_size) unconditional slices."""
        latents = self.mapping(noise)[:, None].expand(-1, self.levels, -1)
        size = self.prior_size // self.embedding
        masks = self.shift_masks(size, size, noise.device)
        return self.prior_output(self.decode(latents, masks))

    @torch.no_grad()
    def distil_latent_centres(self, samples: int = 60_000, generator: Optional[torch.Generator] = None) -> None:
        """After stage 1: K-means centres of ``samples`` latents of the mapping network, into ``latent_centres``."""
        generator = generator or torch.Generator().manual_seed(0)
        noise = torch.randn(samples, self.style_dim, generator=generator).to(self.latent_centres.device)
        latents = self.mapping(noise).cpu()
        self.latent_centres.copy_(kmeans(latents, self.latent_centres.shape[0], KMEANS_ITERATIONS, generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.multiple)
        masks = self.shift_masks(*(side // self.embedding for side in padded.shape[-2:]), x.device)
        shallow = self.shallow(padded)
        encoder, latents = self.encode(shallow, masks)
        deep = self.decode(self.truncate(latents), masks, encoder)
        return x + crop_to(self.reconstruction(shallow + deep), (height, width))



@register_architecture("transmrsr_critic_features")
class CriticFeatures(nn.Module):
    """The convolutional trunk of the stage-1 critic: (B, 1, H, W) → every stage's activations, finest first. After
    stage 1 it is also stage 2's frozen 2D feature network for the content and style losses (no ImageNet VGG can be
    downloaded here): a 3×3 conv, then per further width a stride-2 3×3 conv and a 3×3 conv, LeakyReLU after each."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 128)):
        super().__init__()
        stages = [nn.Sequential(nn.Conv2d(1, widths[0], 3, padding=1), nn.LeakyReLU(NEGATIVE_SLOPE))]
        for previous, width in zip(widths, widths[1:]):
            stages.append(nn.Sequential(nn.Conv2d(previous, width, 3, stride=2, padding=1),
                                        nn.LeakyReLU(NEGATIVE_SLOPE), nn.Conv2d(width, width, 3, padding=1),
                                        nn.LeakyReLU(NEGATIVE_SLOPE)))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps


@register_architecture("transmrsr_critic")
class PriorCritic(nn.Module):
    """Stage 1's critic: :class:`CriticFeatures`, then a 3×3 conv to a map of logits (a patch critic)."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 128)):
        super().__init__()
        self.widths = list(widths)
        self.features = CriticFeatures(widths)
        self.head = nn.Conv2d(widths[-1], 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)[-1])
