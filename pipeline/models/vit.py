"""A small Vision Transformer for masked image modeling (MAE, BEiT).

This is torchvision's ``VisionTransformer`` with two changes for small images: the patch
embedding (``conv_proj``) takes 1 or 3 channels, and the classification head is dropped
(the encoder returns features). Its pieces are exposed so that masked image modeling can
work on tokens rather than images:

    tokens = vit.embed(x)                  # [N, L, D] patch embeddings, no position yet
    tokens = tokens + vit.patch_pos        # each patch token gets its position
    h = vit.encode(tokens[some subset])    # [N, 1 + K, D]: class token + the K tokens given

``encode_subset(x, keep)`` does the three steps for the patch indices ``keep`` (MAE's
visible patches). Patches are numbered row-major over the ``grid x grid`` patch grid, the
order of ``conv_proj``'s output and of ``patchify``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.models.vision_transformer import Encoder as TransformerEncoder
from torchvision.models.vision_transformer import VisionTransformer


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, L, p*p*C]``: patch ``i*grid + j`` is row i, column j (the
    token order of ``conv_proj``); inside a patch, pixels are row-major with channels last."""
    n, c, h, w = x.shape
    p = patch_size
    x = x.reshape(n, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)


def sincos_pos_embed(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine positions as in MAE: ``[1, 1 + grid*grid, dim]``, the first
    row (class token) zero. Half of the channels encode the row, half the column; each half
    is sin/cos of the coordinate at frequencies 1 / 10000^(k / (dim/4))."""
    if dim % 4:
        raise ValueError(f"sin-cos positions need dim divisible by 4, got {dim}")
    freq = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # [D/4]
    coord = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coord, coord, indexing="ij")  # [g, g] each

    def encode(pos: torch.Tensor) -> torch.Tensor:  # [L] -> [L, D/2]
        angle = pos.flatten()[:, None] * freq[None]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    table = torch.cat([encode(rows), encode(cols)], dim=1)  # [L, D]
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float().unsqueeze(0)


def transformer(seq_length: int, depth: int, heads: int, dim: int, mlp_dim: int, pos_embed: str, grid: int) -> TransformerEncoder:
    """torchvision's transformer encoder (positions + blocks + final LayerNorm), no dropout
    (neither MAE nor BEiT pretrains with it). With ``pos_embed='sincos'`` its learned
    position table is swapped for a fixed buffer: it never trains and needs no weight decay."""
    enc = TransformerEncoder(seq_length, depth, heads, dim, mlp_dim, dropout=0.0, attention_dropout=0.0)
    if pos_embed == "sincos":
        del enc.pos_embedding
        enc.register_buffer("pos_embedding", sincos_pos_embed(grid, dim))
    return enc


class ViT(nn.Module):
    """float ``[N, C, H, W]`` (already normalised) -> features ``[N, dim]``.

    Features are the mean of the final (LayerNormed) patch tokens with ``pool='mean'``
    (BEiT's linear probe, MAE's fine-tuning), or the final class token with ``pool='cls'``.
    """

    def __init__(self, image_size: int, in_channels: int, patch_size: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float, pos_embed: str = "sincos", pool: str = "mean"):
        super().__init__()
        mlp_dim = int(dim * mlp_ratio)
        vit = VisionTransformer(image_size, patch_size, depth, heads, dim, mlp_dim)
        # torchvision's patch embedding is fixed to RGB: rebuild it for in_channels, with
        # torchvision's own initialisation (truncated normal, std sqrt(1 / fan_in)).
        vit.conv_proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        nn.init.trunc_normal_(vit.conv_proj.weight, std=math.sqrt(1 / (in_channels * patch_size * patch_size)))
        nn.init.zeros_(vit.conv_proj.bias)
        vit.heads = nn.Identity()  # features, not ImageNet logits
        self.grid = image_size // patch_size
        vit.encoder = transformer(self.grid**2 + 1, depth, heads, dim, mlp_dim, pos_embed, self.grid)
        self.vit = vit
        self.image_size, self.in_channels, self.patch_size, self.dim = image_size, in_channels, patch_size, dim
        self.heads, self.mlp_dim = heads, mlp_dim
        self.num_patches = self.grid**2
        self.pool = pool
        self.feature_dim = dim

    @property
    def blocks(self) -> nn.Sequential:
        """The transformer blocks (torchvision ``EncoderBlock``s)."""
        return self.vit.encoder.layers

    @property
    def pos_embedding(self) -> torch.Tensor:
        """``[1, 1 + L, dim]``: row 0 is the class token's position."""
        return self.vit.encoder.pos_embedding

    @property
    def patch_pos(self) -> torch.Tensor:
        """``[1, L, dim]``: the patch tokens' positions."""
        return self.pos_embedding[:, 1:]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding: ``[N, C, H, W]`` -> ``[N, L, dim]``, without positions."""
        return self.vit._process_input(x)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Patch tokens that already carry their positions, ``[N, K, dim]`` (any K, any subset
        of patches) -> ``[N, 1 + K, dim]``: class token prepended, blocks, final LayerNorm."""
        cls = (self.vit.class_token + self.pos_embedding[:, :1]).expand(tokens.shape[0], -1, -1)
        return self.vit.encoder.ln(self.blocks(torch.cat([cls, tokens], dim=1)))

    def encode_subset(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Encode only the patches ``keep`` (``[N, K]`` long patch indices) of each image
        ``x [N, C, H, W]`` -> ``[N, 1 + K, dim]`` (MAE's encoder never sees masked patches)."""
        tokens = self.embed(x) + self.patch_pos
        tokens = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return self.encode(tokens)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens, torchvision's own path: ``[N, C, H, W]`` -> ``[N, 1 + L, dim]``."""
        tokens = self.embed(x)
        cls = self.vit.class_token.expand(x.shape[0], -1, -1)
        return self.vit.encoder(torch.cat([cls, tokens], dim=1))

    def pool_tokens(self, h: torch.Tensor) -> torch.Tensor:
        """``[N, 1 + L, dim]`` -> ``[N, dim]`` per ``pool``."""
        return h[:, 0] if self.pool == "cls" else h[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_tokens(self.tokens(x))
