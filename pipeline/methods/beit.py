"""BEiT (Bao et al., 2022): masked image modeling with discrete visual tokens.

An image is cut into patches and each patch gets a visual token from a tokenizer. About 40%
of the patches are masked blockwise; their embeddings are replaced by a learned mask
embedding, the ViT encodes the whole sequence, and a linear head predicts the visual token
of each masked patch (cross-entropy on masked positions only).

The paper's tokenizer is DALL-E's pretrained dVAE, which cannot be downloaded here, so the
tokenizer is learned in ``prepare(sample)``: a k-means codebook over the (normalised) patches
of the sample; a patch's token is its nearest codeword. The codebook is a buffer, so
checkpoints carry it. Seam for a pretrained tokenizer: BEiT uses only ``tokenizer.vocab_size``
and ``tokenizer.tokenize(patches [N, L, P]) -> ids [N, L]``; any module with those two (e.g. a
dVAE wrapper) can be assigned to ``method.tokenizer`` in place of ``KMeansTokenizer``, and
``prepare`` then fits nothing (it only calls ``fit`` on tokenizers that have one).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline import dist
from pipeline.config import Strict
from pipeline.errors import UserError
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.vit import LN_EPS, block, patchify


def beit_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the visual tokens at masked positions only.

    logits: ``[N, L, V]``; targets: ``[N, L]`` token ids in ``[0, V)``; mask: ``[N, L]`` bool,
    True where the patch was masked. Mean over all masked positions of the batch.
    """
    # a masked mean over every position, not logits[mask]: boolean indexing syncs the host on CUDA
    ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")  # [N * L]
    weight = mask.flatten().to(ce.dtype)
    return (ce * weight).sum() / weight.sum()


def block_mask(grid: int, num_masked: int, min_patches: int, min_aspect: float, rng: np.random.Generator) -> np.ndarray:
    """BEiT's blockwise masking (its Algorithm 1) on a ``grid x grid`` patch grid -> bool
    ``[grid, grid]``.

    Rectangles of random area (at least ``min_patches``) and aspect ratio (in
    ``[min_aspect, 1 / min_aspect]``) are added until ``num_masked`` patches are masked. As in
    the reference code a block is only accepted if it adds new patches without exceeding
    ``num_masked``, a few placements are tried per block, and masking stops early when none
    fits (so a mask never has more than ``num_masked`` patches, rarely a few fewer).
    """
    mask = np.zeros((grid, grid), dtype=bool)
    log_aspect = (math.log(min_aspect), -math.log(min_aspect))
    count = 0
    while count < num_masked:
        budget = num_masked - count
        added = 0
        for _ in range(10):
            area = rng.uniform(min_patches, max(budget, min_patches))
            aspect = math.exp(rng.uniform(*log_aspect))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < h < grid and 0 < w < grid:
                top, left = rng.integers(0, grid - h + 1), rng.integers(0, grid - w + 1)
                new = h * w - int(mask[top : top + h, left : left + w].sum())
                if 0 < new <= budget:
                    mask[top : top + h, left : left + w] = True
                    added = new
                    break
        if added == 0:
            break
        count += added
    return mask


class KMeansTokenizer(nn.Module):
    """Visual tokenizer learned from data: ids are nearest codewords (Euclidean) of a k-means
    codebook over patches. ``codebook`` ``[V, P]`` is a buffer: checkpoints carry it."""

    def __init__(self, vocab_size: int, patch_dim: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.register_buffer("codebook", torch.zeros(vocab_size, patch_dim))
        self.register_buffer("fitted", torch.tensor(False))
        self._seen_fitted = False  # `fitted` read once on the host (a sync), not every step

    @torch.no_grad()
    def fit(self, patches: torch.Tensor, seed: int) -> None:
        """patches ``[M, P]``, M >= vocab_size: seeded k-means (Lloyd, k-means++ init). Full
        k-means rather than mini-batch: on 20k patches it takes as long and reaches a clearly
        lower distortion."""
        from sklearn.cluster import KMeans

        if len(patches) < self.vocab_size:
            raise UserError(
                f"beit.codebook_size ({self.vocab_size}) exceeds the {len(patches)} patches the tokenizer is fitted on: "
                "lower beit.codebook_size"
            )
        km = KMeans(n_clusters=self.vocab_size, random_state=seed, n_init=1, max_iter=100)
        km.fit(patches.double().cpu().numpy())
        self.codebook.copy_(torch.from_numpy(km.cluster_centers_).float())
        self.fitted.fill_(True)

    @torch.no_grad()
    def tokenize(self, patches: torch.Tensor) -> torch.Tensor:
        """``[N, L, P]`` -> ids ``[N, L]`` (long) in ``[0, vocab_size)``."""
        if not self._seen_fitted:
            if not self.fitted:
                raise RuntimeError("the k-means tokenizer is not fitted: call method.prepare(sample) before training")
            self._seen_fitted = True
        with torch.autocast(patches.device.type, enabled=False):  # nearest codeword needs full precision
            flat = patches.flatten(0, 1).float()
            ids = torch.cdist(flat, self.codebook.float()).argmin(dim=1)
        return ids.view(patches.shape[:2])


@METHODS.register
class BEiT(Method):
    name = "beit"

    class Params(Strict):
        mask_ratio: float = Field(0.4, gt=0, lt=1)  # paper: ~40% of the patches (75 of 196)
        masking: Literal["block", "random"] = "block"  # paper: blockwise; random masks exactly round(ratio * L)
        # Smallest block: paper 16 of 196 patches (14x14 grid); kept as that share of any grid.
        min_block_fraction: float = Field(0.0816, gt=0, le=1)  # 16/196: 4 patches of a 7x7 grid
        min_aspect: float = Field(0.3, gt=0, le=1)  # paper: block aspect ratio in [0.3, 1/0.3]
        # The paper's DALL-E vocabulary has 8192 tokens for 16x16 RGB patches; a k-means
        # codebook over 4x4 patches of a few thousand images needs far fewer words.
        codebook_size: int = Field(512, ge=2)
        tokenizer_patches: int = Field(20_000, ge=2)  # patches of the prepare sample k-means is fitted on (~40 per codeword)
        crop_min_scale: float = Field(0.08, gt=0, le=1)  # paper: RandomResizedCrop(scale=(0.08, 1)) + flip + colour jitter
        # Transformer blocks between the encoder and the token classifier, not part of the
        # evaluated encoder. Paper: 0 (a linear head on the last block), but it probes an
        # intermediate block (its best: 9 of 12), as the last blocks specialise in predicting
        # tokens; head_blocks > 0 trains that deeper network and evaluates the blocks below.
        head_blocks: int = Field(2, ge=0)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        if not encoder.has_patch_tokens:
            raise UserError(
                f"beit needs a ViT encoder, got encoder.arch {encoder.params.arch!r}: set `encoder: {{arch: vit}}` (or vit_small_patch16_224) under `beit:` in params.yaml"
            )
        vit = encoder.backbone
        self.seed = seed
        self.mask_token = nn.Parameter(torch.zeros(1, 1, vit.dim))
        self.head_blocks = nn.Sequential(*[block(vit.dim, vit.heads, vit.mlp_dim) for _ in range(params.head_blocks)],
                                         *([nn.LayerNorm(vit.dim, eps=LN_EPS)] if params.head_blocks else []))
        self.lm_head = nn.Linear(vit.dim, params.codebook_size)
        nn.init.trunc_normal_(self.mask_token, std=0.02)  # as the reference code
        nn.init.trunc_normal_(self.lm_head.weight, std=0.02)
        nn.init.zeros_(self.lm_head.bias)
        self.tokenizer = KMeansTokenizer(params.codebook_size, vit.patch_size**2 * vit.in_channels)
        self.mask_rng = np.random.default_rng(seed)

    def _patches(self, x: torch.Tensor) -> torch.Tensor:
        """What the tokenizer sees: patches of the encoder's input (dataset-normalised pixels).
        Not per-patch normalised: that would give every flat patch (background and the inside
        of a garment alike) one token."""
        return patchify(x, self.encoder.backbone.patch_size)

    @torch.no_grad()
    def prepare(self, sample: torch.Tensor) -> None:
        """Fit the k-means tokenizer on up to ``tokenizer_patches`` random patches of ``sample``."""
        if not hasattr(self.tokenizer, "fit"):
            return  # a pretrained tokenizer
        patches = self._patches(self.encoder.normalise(sample.float() / 255)).flatten(0, 1)
        gen = torch.Generator().manual_seed(self.seed)
        pick = torch.randperm(len(patches), generator=gen)[: self.params.tokenizer_patches]
        self.tokenizer.fit(patches[pick.to(patches.device)], self.seed)
        if dist.is_distributed():  # ranks have different seeds: all use rank 0's codebook
            torch.distributed.broadcast(self.tokenizer.codebook, src=0)

    def masks(self, n: int, device: torch.device) -> torch.Tensor:
        """``[N, L]`` bool, True for masked patches, drawn from the method's own seeded RNG."""
        grid = self.encoder.backbone.grid
        length = grid * grid
        num = max(1, round(self.params.mask_ratio * length))  # at least one target per image
        if self.params.masking == "random":
            rows = [np.isin(np.arange(length), self.mask_rng.permutation(length)[:num]) for _ in range(n)]
        else:
            min_patches = min(num, max(1, round(self.params.min_block_fraction * length)))  # a block that fits
            rows = [block_mask(grid, num, min_patches, self.params.min_aspect, self.mask_rng).ravel() for _ in range(n)]
        mask = torch.from_numpy(np.stack(rows))  # drawn on the host (numpy): no device values read
        if device.type == "cpu":
            return mask
        # pinned and asynchronous: a copy from pageable memory would block the host
        return mask.pin_memory().to(device, non_blocking=True)

    def predict(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Normalised images ``[N, C, H, W]``, mask ``[N, L]`` bool -> token logits ``[N, L, V]``.
        Masked patches enter the ViT as the learned mask embedding (plus their position)."""
        vit = self.encoder.backbone
        tokens = vit.embed(x)
        tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        h = self.head_blocks(vit.encode(tokens + vit.patch_pos))  # [N, 1 + L, D]
        return self.lm_head(h[:, 1:])

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.encoder.normalise(self.views(images, scale=(self.params.crop_min_scale, 1.0)))
        targets = self.tokenizer.tokenize(self._patches(x))  # [N, L]
        mask = self.masks(x.shape[0], x.device)  # [N, L]
        logits = self.predict(x, mask)
        loss = beit_loss(logits, targets, mask)
        hits = (logits.detach().argmax(-1) == targets) & mask  # at masked positions (no boolean indexing)
        acc = hits.sum() / mask.sum()
        return {"loss": loss, "token_acc": acc}

    def extra_state(self) -> dict:
        return super().extra_state() | {"mask_rng": self.mask_rng.bit_generator.state}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.mask_rng.bit_generator.state = state["mask_rng"]
