"""Shifted-window (Swin) transformer layers for 2D feature maps (Liu et al. 2021; SwinIR; RDST in J. Zhu's thesis,
ch. 5): window partition and reverse, window attention with a relative position bias, the attention mask of the
shifted windows, the Swin layer, and padding a map to window multiples and cropping it back.

Layouts: ``(B, H, W, C)`` feature maps (channels last, as the layers' LayerNorm and Linear want them), windows as
``(B·nW, M², C)`` token rows in row-major window order.
"""
from typing import Optional, Tuple

import torch
from torch import nn
from torch.nn import functional


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) with H, W multiples of ``window`` → (B·nW, window², C)."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window, window, width // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, channels)


def window_reverse(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """The inverse of :func:`window_partition`: (B·nW, window², C) → (B, H, W, C)."""
    channels = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def shift_regions(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(H, W) labels of the regions of a map rolled by −``shift`` along both axes: pixels that were neighbours before
    the roll share a label; the last ``shift`` rows and columns wrapped round from the opposite edge get labels of
    their own. Along each axis the bands are [0, L − window), [L − window, L − shift), [L − shift, L)."""
    def bands(length: int) -> torch.Tensor:
        band = torch.zeros(length, dtype=torch.long)
        band[length - window:] = 1
        band[length - shift:] = 2
        return band
    return bands(height)[:, None] * 3 + bands(width)[None, :]


def shifted_window_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """(nW, window², window²) additive attention mask of the shifted windows: 0 between tokens of one region,
    −inf between tokens that the roll brought together from opposite edges."""
    regions = window_partition(shift_regions(height, width, window, shift)[None, :, :, None], window).squeeze(-1)
    same_region = regions[:, :, None] == regions[:, None, :]
    return torch.zeros(same_region.shape).masked_fill_(~same_region, float("-inf"))


def relative_position_index(window: int) -> torch.Tensor:
    """(window², window²) index into the (2·window − 1)² bias table of each (query, key) token pair's offset."""
    rows, columns = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coordinates = torch.stack([rows.flatten(), columns.flatten()])  # (2, window²)
    offsets = coordinates[:, :, None] - coordinates[:, None, :] + window - 1  # each in [0, 2·window − 2]
    return offsets[0] * (2 * window - 1) + offsets[1]


class WindowAttention(nn.Module):
    """Multi-head self-attention within each window, plus a learned bias per head and relative token offset."""

    def __init__(self, features: int, window: int, heads: int):
        super().__init__()
        if features % heads:
            raise ValueError(f"{features} features do not split into {heads} attention heads")
        self.heads = heads
        self.qkv = nn.Linear(features, 3 * features)
        self.projection = nn.Linear(features, features)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)  # as Swin and SwinIR
        self.register_buffer("bias_index", relative_position_index(window), persistent=False)

    def forward(self, windows: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``windows`` (B·nW, N, C); ``mask`` (nW, N, N) added to the attention logits, or None."""
        count, tokens, features = windows.shape
        query, key, value = (self.qkv(windows).view(count, tokens, 3, self.heads, features // self.heads)
                             .permute(2, 0, 3, 1, 4))  # each (B·nW, heads, N, C / heads)
        bias = self.bias_table[self.bias_index].permute(2, 0, 1)  # (heads, N, N)
        if mask is None:
            bias = bias.expand(count, -1, -1, -1)
        else:  # windows are batch-major: window w of every image shares mask[w]
            bias = (bias[None] + mask.to(bias.dtype)[:, None]).repeat(count // mask.shape[0], 1, 1, 1)
        attended = functional.scaled_dot_product_attention(query, key, value, attn_mask=bias.to(query.dtype))
        return self.projection(attended.transpose(1, 2).reshape(count, tokens, features))


class DropPath(nn.Module):
    """Stochastic depth: while training, a residual branch is dropped for a whole sample with probability ``rate``
    and kept ones are scaled by 1 / (1 − rate)."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device)
        return x * keep.bernoulli_(1 - self.rate) / (1 - self.rate)


class SwinLayer(nn.Module):
    """x + DropPath(W-MSA(LN(x))), then + DropPath(MLP(LN(x))) on (B, H, W, C) maps whose H and W are multiples of
    ``window``; with ``shift`` > 0 the windows are those of the map rolled by −shift (SW-MSA), masked by
    :func:`shifted_window_mask`, which the caller passes (it depends on the map's size only)."""

    def __init__(self, features: int, heads: int, window: int, shift: int = 0, mlp_ratio: float = 2.0,
                 drop_path: float = 0.0):
        super().__init__()
        self.window, self.shift = window, shift
        self.attention_norm = nn.LayerNorm(features)
        self.attention = WindowAttention(features, window, heads)
        self.mlp_norm = nn.LayerNorm(features)
        hidden = round(features * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, features))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, shift_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        _, height, width, _ = x.shape
        shifted = self.attention_norm(x)
        if self.shift:
            shifted = torch.roll(shifted, (-self.shift, -self.shift), dims=(1, 2))
        attended = self.attention(window_partition(shifted, self.window), shift_mask if self.shift else None)
        attended = window_reverse(attended, self.window, height, width)
        if self.shift:
            attended = torch.roll(attended, (self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(attended)
        return x + self.drop_path(self.mlp(self.mlp_norm(x)))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """(…, H, W) padded at the bottom and right to multiples of ``multiple`` by repeating the edge pixels (which,
    unlike reflection, works for maps smaller than the padding)."""
    height, width = x.shape[-2:]
    return functional.pad(x, (0, -width % multiple, 0, -height % multiple), mode="replicate")


def crop_to(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """(…, H, W) → its top-left (…, size[0], size[1]): undoes :func:`pad_to_multiple` (scaled by a network's factor)."""
    return x[..., :size[0], :size[1]]
