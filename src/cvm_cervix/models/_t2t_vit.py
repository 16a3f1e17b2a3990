"""T2T-ViT (Yuan et al., "Tokens-to-Token ViT", ICCV 2021), the T2T-ViT-14 configuration.

The tokens-to-token module re-structurises the image progressively: soft split (overlapping
unfold) -> a light transformer over the tokens -> reshape -> soft split again, three times
(kernels 7/3/3, strides 4/2/2), then a ViT backbone with a fixed sinusoidal position table.

This is T2T-ViT_t-14 of the reference implementation (yitu-opensource/T2T-ViT): transformer T2T
layers, 14 blocks of width 384, 6 heads, and the attention scale its released ImageNet weights were
trained with (384^-0.5, not the usual head_dim^-0.5), so those weights load and compute as there.
:meth:`T2TViT.from_reference` maps that file's keys.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from timm.layers import Mlp, trunc_normal_
from timm.models.vision_transformer import Attention, Block
from torch import nn
from torch.nn import functional as F


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    position = np.arange(n_position)[:, None]
    div = np.power(10000, 2 * (np.arange(dim) // 2) / dim)[None, :]
    table = position / div
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32).unsqueeze(0)


class TokenAttention(nn.Module):
    """Single-head attention that maps ``dim`` to ``in_dim``; the residual is the value path."""

    def __init__(self, dim: int, in_dim: int, num_heads: int = 1):
        super().__init__()
        self.num_heads, self.in_dim = num_heads, in_dim
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, in_dim * 3, bias=False)
        self.proj = nn.Linear(in_dim, in_dim)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.in_dim).permute(2, 0, 3, 1, 4)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, self.in_dim)
        return v.squeeze(1) + self.proj(out)


class TokenTransformer(nn.Module):
    def __init__(self, dim: int, in_dim: int, mlp_ratio: float = 1.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TokenAttention(dim, in_dim)
        self.norm2 = nn.LayerNorm(in_dim)
        self.mlp = Mlp(in_dim, int(in_dim * mlp_ratio), in_dim, act_layer=nn.GELU)

    def forward(self, x):
        x = self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class T2TModule(nn.Module):
    def __init__(self, in_chans: int = 3, embed_dim: int = 384, token_dim: int = 64):
        super().__init__()
        self.soft_split0 = nn.Unfold(kernel_size=7, stride=4, padding=2)
        self.soft_split1 = nn.Unfold(kernel_size=3, stride=2, padding=1)
        self.soft_split2 = nn.Unfold(kernel_size=3, stride=2, padding=1)
        self.attention1 = TokenTransformer(in_chans * 7 * 7, token_dim)
        self.attention2 = TokenTransformer(token_dim * 3 * 3, token_dim)
        self.project = nn.Linear(token_dim * 3 * 3, embed_dim)

    def forward(self, x):
        x = self.attention1(self.soft_split0(x).transpose(1, 2))
        side = int(math.isqrt(x.shape[1]))
        x = x.transpose(1, 2).reshape(x.shape[0], -1, side, side)
        x = self.attention2(self.soft_split1(x).transpose(1, 2))
        side = int(math.isqrt(x.shape[1]))
        x = x.transpose(1, 2).reshape(x.shape[0], -1, side, side)
        return self.project(self.soft_split2(x).transpose(1, 2))


class ScaledAttention(Attention):
    """timm's attention with the scale honoured on the fused path too (timm's fused path ignores it)."""

    def forward(self, x, attn_mask=None, is_causal=False):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0, scale=self.scale
        )
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, -1)))


def _tokens_per_side(img_size: int) -> int:
    side = img_size
    for k, s, p in ((7, 4, 2), (3, 2, 1), (3, 2, 1)):
        side = (side + 2 * p - k) // s + 1
    return side


class T2TViT(nn.Module):
    """T2T-ViT backbone; ``forward`` returns the pooled class-token features (``num_features``)."""

    def __init__(
        self,
        img_size: int = 224,
        embed_dim: int = 384,
        depth: int = 14,
        num_heads: int = 6,
        mlp_ratio: float = 3.0,
        token_dim: int = 64,
        drop_path_rate: float = 0.1,
        qk_scale: float | None = 384**-0.5,
    ):
        super().__init__()
        self.num_features = embed_dim
        self.tokens_to_token = T2TModule(3, embed_dim, token_dim)
        num_patches = _tokens_per_side(img_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.register_buffer("pos_embed", sinusoid_table(num_patches + 1, embed_dim), persistent=False)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(
            *[Block(embed_dim, num_heads, mlp_ratio, qkv_bias=False, drop_path=dpr[i]) for i in range(depth)]
        )
        for block in self.blocks:  # same parameters and names, the reference's scale
            attn = ScaledAttention(embed_dim, num_heads, qkv_bias=False)
            attn.scale = qk_scale or attn.head_dim**-0.5
            block.attn = attn
        self.norm = nn.LayerNorm(embed_dim)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    reference = {
        "url": "https://github.com/yitu-opensource/T2T-ViT/releases/download/main/81.7_T2T_ViTt_14.pth.tar",
        "repository": "https://github.com/yitu-opensource/T2T-ViT",
        "pretraining": "ImageNet-1k (81.7% top-1), T2T-ViT_t-14, EMA weights",
    }

    def from_reference(self, state: dict) -> dict[str, torch.Tensor]:
        """The reference's checkpoint (``81.7_T2T_ViTt_14.pth.tar``) in this module's key names.

        As its ``load_for_transfer_learning(use_ema=True)``: the EMA weights where the file has them,
        ``module.`` prefixes stripped, the ImageNet head dropped. ``pos_embed`` is the fixed sinusoid
        table, rebuilt here for any image size (the file's holds it for 224 px).
        """
        for key in ("state_dict_ema", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
        state = {k.removeprefix("module."): v for k, v in state.items()}
        return {k: v for k, v in state.items() if not k.startswith("head.") and k != "pos_embed"}

    def forward(self, x):
        x = self.tokens_to_token(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]
