"""The text encoder: a small Transformer over token ids, bidirectional (MLM) or causal (CLM), with a
tied LM head (``TextTransformer``), and ``TextEncoder``, its pooled features of packed entries."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import EncoderParams


class TextTransformer(nn.Module):
    """``forward(ids [N, L], mask [N, L]) -> hidden [N, L, D]``; ``features -> [N, D]``;
    ``logits(hidden) -> [N, L, V]``. ``mask`` is 1 for real tokens, 0 for padding."""

    def __init__(self, vocab_size: int, dim: int = 128, depth: int = 2, heads: int = 4,
                 max_len: int = 128, causal: bool = False, dropout: float = 0.0, mlp_ratio: float = 4.0):
        super().__init__()
        self.causal = causal
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, int(dim * mlp_ratio), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        # enable_nested_tensor off: the nested fast path would zero padded outputs only sometimes.
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        L = ids.shape[1]
        x = self.tok(ids) + self.pos(torch.arange(L, device=ids.device))
        # Boolean like the padding mask (True = may not attend): mixed types take a slow, deprecated path.
        causal = torch.ones(L, L, dtype=torch.bool, device=ids.device).triu(1) if self.causal else None
        x = self.blocks(x, mask=causal, src_key_padding_mask=~mask.bool(), is_causal=self.causal)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """LM head tied to the token embedding: ``[..., D] -> [..., V]``. ``F.linear`` adds the
        bias inside the matmul, not as a separate pass over every logit (a CLM step of the text
        default, batch 128: 0.43-0.51 s before, 0.34-0.40 s with it, in alternating runs)."""
        return F.linear(hidden, self.tok.weight, self.bias)

    def features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[N, D]``. Bidirectional: mean over real tokens (every state saw the whole entry).
        Causal: the last real token's state, the only one that has seen the whole entry; a mean
        would weight early states that saw only a prefix."""
        h = self.forward(ids, mask)
        m = mask.to(h.dtype)
        if self.causal:
            last = mask.long().sum(1) - 1
            return h[torch.arange(len(h)), last]
        return (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)


def text_lengths(x: torch.Tensor) -> torch.Tensor:
    """Packed int64 text ``[N, 2, L]`` -> real tokens per entry ``[N]`` (the attention row's sum)."""
    return x[:, 1].sum(1)


def unpack_text(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed int64 ``[N, 2, L]`` -> ``(ids [N, T], attention [N, T])`` with the padding columns
    beyond the longest real row cut off (T <= L), so compute follows the real lengths and not
    the shards' fixed ``max_length``. Rows are right-padded, so no real token is lost."""
    longest = max(int(text_lengths(x).max()), 1) if len(x) else 1  # one host sync per batch
    return x[:, 0, :longest], x[:, 1, :longest]


class TextEncoder(nn.Module):
    """Packed int64 ``[N, 2, L]`` -> features ``[N, D]``: a ``TextTransformer`` (bidirectional or
    causal, ``params.causal``) and its pooling (mean over real tokens, or the last real
    token's state when causal). ``backbone`` gives the methods its hidden states and tied LM head."""

    modality = "text"

    def __init__(self, params: EncoderParams, vocab_size: int, max_length: int):
        super().__init__()
        self.params = params
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.backbone = TextTransformer(vocab_size, params.dim, params.depth, params.heads, max_length, params.causal,
                                        mlp_ratio=params.mlp_ratio)
        self.feature_dim = params.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.features(*unpack_text(x))
