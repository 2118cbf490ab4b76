"""A small Vision Transformer for masked image modeling (MAE, BEiT), from public torch pieces.

Patch embedding (a stride-``p`` convolution), a class token, a position table (fixed
2-D sin-cos or learned), pre-norm transformer blocks (``nn.TransformerEncoderLayer`` with
``norm_first=True``, GELU, no dropout: the ViT/MAE block) and a final LayerNorm. Its pieces
are exposed so that masked image modeling can work on tokens rather than images:

    tokens = vit.embed(x)                  # [N, L, D] patch embeddings, no position yet
    tokens = tokens + vit.patch_pos        # each patch token gets its position
    h = vit.encode(tokens[some subset])    # [N, 1 + K, D]: class token + the K tokens given

``encode_subset(x, keep)`` does the three steps for the patch indices ``keep`` (MAE's
visible patches). ``forward``/``tokens`` also take images of another size the patch size
divides (multi-crop's small crops): the position table is resampled bicubically (``pos_for``). Patches are numbered row-major over the ``grid x grid`` patch grid, the
order of ``patch_embed``'s output and of ``patchify``.

Initialisation follows MAE's reference code: xavier-uniform linear layers (attention
projections included) with zero biases, the patch embedding xavier-uniform as a linear map
of the flattened patch, class token and learned positions normal(std 0.02).
"""

from __future__ import annotations

import torch
from torch import nn

LN_EPS = 1e-6  # as ViT and MAE


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[N, C, H, W]`` -> ``[N, L, p*p*C]``: patch ``i*grid + j`` is row i, column j (the
    token order of ``patch_embed``); inside a patch, pixels are row-major with channels last."""
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


def block(dim: int, heads: int, mlp_dim: int) -> nn.TransformerEncoderLayer:
    """One pre-norm ViT block, ``[N, T, dim]`` -> ``[N, T, dim]``: x + MHA(LN(x)), then
    x + MLP(LN(x)) with GELU; no dropout (neither MAE nor BEiT pretrains with it)."""
    layer = nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout=0.0, activation="gelu", layer_norm_eps=LN_EPS,
                                       batch_first=True, norm_first=True)
    xavier_init(layer)
    return layer


def xavier_init(module: nn.Module) -> None:
    """MAE's init: xavier-uniform weights and zero biases for every linear map (the fused
    q/k/v projection of ``nn.MultiheadAttention`` included), LayerNorms at (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.MultiheadAttention):
            nn.init.xavier_uniform_(m.in_proj_weight)
            nn.init.zeros_(m.in_proj_bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class Transformer(nn.Module):
    """Positions + blocks + final LayerNorm over a class token and ``grid * grid`` patch
    tokens: ``[N, 1 + L, dim]`` -> ``[N, 1 + L, dim]``. With ``pos_embed='sincos'`` the
    position table is a fixed buffer (it never trains and needs no weight decay), with
    ``'learned'`` a parameter."""

    def __init__(self, grid: int, depth: int, heads: int, dim: int, mlp_dim: int, pos_embed: str):
        super().__init__()
        if pos_embed == "sincos":
            self.register_buffer("pos_embedding", sincos_pos_embed(grid, dim))
        else:
            self.pos_embedding = nn.Parameter(torch.empty(1, 1 + grid * grid, dim).normal_(std=0.02))
        self.blocks = nn.Sequential(*[block(dim, heads, mlp_dim) for _ in range(depth)])
        self.ln = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """``pos``: a table for another grid than the native one (``ViT.pos_for``)."""
        return self.ln(self.blocks(x + (self.pos_embedding if pos is None else pos)))


class ViT(nn.Module):
    """float ``[N, C, H, W]`` (already normalised) -> features ``[N, dim]``.

    Features are the mean of the final (LayerNormed) patch tokens with ``pool='mean'``
    (BEiT's linear probe, MAE's fine-tuning), or the final class token with ``pool='cls'``.
    """

    def __init__(self, image_size: int, in_channels: int, patch_size: int, dim: int, depth: int, heads: int,
                 mlp_ratio: float, pos_embed: str = "sincos", pool: str = "mean"):
        super().__init__()
        self.grid = image_size // patch_size
        self.image_size, self.in_channels, self.patch_size, self.dim = image_size, in_channels, patch_size, dim
        self.heads, self.mlp_dim = heads, int(dim * mlp_ratio)
        self.num_patches = self.grid**2
        self.pool = pool
        self.feature_dim = dim
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        # MAE: the patch embedding is a linear map of the flattened patch, initialised as one
        nn.init.xavier_uniform_(self.patch_embed.weight.view(dim, -1))
        nn.init.zeros_(self.patch_embed.bias)
        self.class_token = nn.Parameter(torch.empty(1, 1, dim).normal_(std=0.02))
        self.transformer = Transformer(self.grid, depth, heads, dim, self.mlp_dim, pos_embed)

    @property
    def blocks(self) -> nn.Sequential:
        """The transformer blocks, each ``[N, T, dim]`` -> ``[N, T, dim]``."""
        return self.transformer.blocks

    @property
    def pos_embedding(self) -> torch.Tensor:
        """``[1, 1 + L, dim]``: row 0 is the class token's position."""
        return self.transformer.pos_embedding

    @property
    def patch_pos(self) -> torch.Tensor:
        """``[1, L, dim]``: the patch tokens' positions."""
        return self.pos_embedding[:, 1:]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding: ``[N, C, H, W]`` -> ``[N, L, dim]``, without positions."""
        return self.patch_embed(x).flatten(2).transpose(1, 2)

    def encode(self, tokens: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens that already carry their positions, ``[N, K, dim]`` (any K, any subset
        of patches) -> ``[N, 1 + K, dim]``: class token prepended, blocks, final LayerNorm.
        ``pad`` (bool ``[N, K]``, True = ignore): attention skips those tokens (I-JEPA's
        variable-length context at a static K); the class token is never padded."""
        cls = (self.class_token + self.pos_embedding[:, :1]).expand(tokens.shape[0], -1, -1)
        h = torch.cat([cls, tokens], dim=1)
        if pad is None:
            return self.transformer.ln(self.blocks(h))
        key_pad = torch.cat([torch.zeros_like(pad[:, :1]), pad], dim=1)
        for layer in self.blocks:
            h = layer(h, src_key_padding_mask=key_pad)
        return self.transformer.ln(h)

    def encode_subset(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Encode only the patches ``keep`` (``[N, K]`` long patch indices) of each image
        ``x [N, C, H, W]`` -> ``[N, 1 + K, dim]`` (MAE's encoder never sees masked patches)."""
        tokens = self.embed(x) + self.patch_pos
        tokens = torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
        return self.encode(tokens)

    def pos_for(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``[1, 1 + grid_h * grid_w, dim]``: the position table for another patch grid (multi-crop's
        small crops), its patch part resampled bicubically as DINO and timm do (timm's own
        ``resample_abs_pos_embed``, so this ViT and timm's interpolate alike); the native grid gets
        the table itself. The class token's row is kept."""
        if (grid_h, grid_w) == (self.grid, self.grid):
            return self.pos_embedding
        from timm.layers import resample_abs_pos_embed  # late: timm imports torchvision (~1.5 s)

        return resample_abs_pos_embed(self.pos_embedding, new_size=(grid_h, grid_w), old_size=(self.grid, self.grid),
                                      num_prefix_tokens=1)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens: ``[N, C, H, W]`` -> ``[N, 1 + L, dim]``; any H, W the patch size divides
        (positions resampled for a grid other than ``image_size``'s)."""
        cls = self.class_token.expand(x.shape[0], -1, -1)
        pos = self.pos_for(x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        return self.transformer(torch.cat([cls, self.embed(x)], dim=1), pos)

    def pool_tokens(self, h: torch.Tensor) -> torch.Tensor:
        """``[N, 1 + L, dim]`` -> ``[N, dim]`` per ``pool``."""
        return h[:, 0] if self.pool == "cls" else h[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_tokens(self.tokens(x))
