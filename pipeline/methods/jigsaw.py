"""Jigsaw puzzles (Noroozi & Favaro, 2016, "Unsupervised Learning of Visual Representations
by Solving Jigsaw Puzzles", the context-free network).

An image is cut into a 3x3 grid of tiles; the tiles are shuffled by one of P fixed
permutations; every tile goes through the shared encoder and the shared per-tile layer (the
paper's fc6) on its own (a siamese network, so no layer sees two tiles together); the nine
feature vectors, concatenated in the shuffled order, feed an MLP that classifies which of the
P permutations was applied. The evaluations use the encoder alone.

Following the paper: a random square window (225/256 of the side) is laid on the image and
split into 3x3 cells; each tile is a random crop of 64/75 of its cell, so neighbouring tiles
are separated by a random gap and the network cannot solve the puzzle by continuing edges
or textures across tile borders; each tile is standardised on its own (mean 0, std 1), so
absolute brightness/contrast cannot identify its position. The permutation set is the
paper's Algorithm 1 (greedy, large Hamming distance), computed once from (P, seed).

Small images: at 28x28 a tile is ~7 px, too small for a ResNet stem to keep any spatial
extent, so tiles are resampled to ``tile_size`` px (by default the encoder's input size, the
size it is evaluated at) before the encoder.
"""

from __future__ import annotations

import functools
import itertools
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from pipeline.config import Strict
from pipeline.modalities.image.views import to_float
from pipeline.errors import UserError
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.heads import mlp

GRID = 3
TILES = GRID * GRID
TILE_STD_EPS = 1e-5  # numerical guard for blank tiles (variance in [0, 1] intensity units)


@functools.lru_cache(maxsize=1)
def _all_permutations() -> torch.Tensor:
    """Every permutation of the 9 tiles in lexicographic order, ``[9!, 9]`` uint8 (3 MB)."""
    return torch.tensor(list(itertools.permutations(range(TILES))), dtype=torch.uint8)


@functools.lru_cache(maxsize=8)
def _permutation_set(count: int, seed: int, selection: str) -> torch.Tensor:
    all_perms = _all_permutations()
    gen = torch.Generator().manual_seed(seed)
    j = int(torch.randint(len(all_perms), (1,), generator=gen))  # Algorithm 1: random first permutation
    taken = torch.zeros(len(all_perms), dtype=torch.bool)
    # score[k]: candidate k's distance to the chosen set, updated incrementally per new member
    # ("mean": the sum 1^T D of Algorithm 1; "maxmin": the minimum over the chosen set).
    score = torch.zeros(len(all_perms), dtype=torch.int64) if selection == "mean" else \
        torch.full((len(all_perms),), TILES + 1, dtype=torch.int64)
    chosen = []
    for _ in range(count):
        chosen.append(j)
        taken[j] = True  # removed from the candidates
        dist = (all_perms != all_perms[j]).sum(1, dtype=torch.int64)  # Hamming distance to the new member
        score = score + dist if selection == "mean" else torch.minimum(score, dist)
        j = int(score.masked_fill(taken, -1).argmax())  # first maximum: deterministic ties
    return all_perms[chosen].long()


def permutation_set(count: int, seed: int, selection: str = "mean") -> torch.Tensor:
    """``count`` permutations of the 9 tile indices, ``[count, 9]`` int64, chosen greedily for
    large Hamming distance (Noroozi & Favaro 2016, Algorithm 1), a function of (count, seed).

    Start from a uniformly random permutation (drawn with ``seed``); then repeatedly remove the
    candidate of all 9! permutations that is farthest from the chosen set and add it. The
    paper's "farthest" is the largest *sum* of Hamming distances to the chosen set
    (``selection="mean"``, its line D-bar = 1^T D); ``"maxmin"`` instead takes the largest
    *minimum* distance (farthest-point selection), which guarantees a larger minimum pairwise
    distance: at count=100 the paper's criterion leaves some pairs only 2 swaps apart (fewer
    than a random set, ~3), maxmin keeps every pair >= 6 apart; the average distance is ~8 in
    all three. About 20 ms per permutation on a CPU core; results are cached per process.
    """
    if not 1 <= count <= 362880:
        raise ValueError(f"count must be in [1, 9!], got {count}")
    if selection not in ("mean", "maxmin"):
        raise ValueError(f"selection must be 'mean' or 'maxmin', got {selection!r}")
    return _permutation_set(count, seed, selection).clone()


def extract_tiles(
    x: torch.Tensor, tile_size: int, image_crop: float, tile_crop: float, gen: torch.Generator
) -> torch.Tensor:
    """Cut every image into 3x3 jittered tiles, resampled to ``tile_size`` px.

    x: float ``[N, C, H, W]``. A square window of side ``image_crop`` (fraction of the image
    side) is placed uniformly at random and divided into 3x3 cells; in each cell a square tile
    of side ``tile_crop`` (fraction of the cell) is placed uniformly at random (sub-pixel
    positions). Each tile is sampled bilinearly at ``tile_size x tile_size`` points. Returns
    ``[N, 9, C, tile_size, tile_size]`` in row-major grid order (tile 0 top-left, 8 bottom-right).
    With ``image_crop = tile_crop = 1`` and a side divisible by 3 at ``tile_size = side / 3``,
    the tiles are exactly the image's cells.
    """
    n, c = x.shape[:2]
    dev, t = x.device, tile_size
    cell = image_crop / GRID  # fractions of the image side
    side = tile_crop * cell
    ox = torch.rand(n, 1, generator=gen, device=dev) * (1 - image_crop)  # window origin
    oy = torch.rand(n, 1, generator=gen, device=dev) * (1 - image_crop)
    jx = torch.rand(n, TILES, generator=gen, device=dev) * (cell - side)  # tile origin in its cell
    jy = torch.rand(n, TILES, generator=gen, device=dev) * (cell - side)
    pos = torch.arange(TILES, device=dev)
    x0 = ox + (pos % GRID) * cell + jx  # [N, 9] left edge of each tile
    y0 = oy + (pos // GRID) * cell + jy  # [N, 9] top edge
    u = (torch.arange(t, device=dev) + 0.5) / t * side  # sample points (pixel centres) within a tile
    gx = 2 * (x0[:, :, None] + u) - 1  # [N, 9, t] in grid_sample's [-1, 1] (align_corners=False)
    gy = 2 * (y0[:, :, None] + u) - 1
    grid = torch.stack([gx[:, :, None, :].expand(n, TILES, t, t), gy[:, :, :, None].expand(n, TILES, t, t)], dim=-1)
    # All nine tiles of an image stacked vertically in one sampling grid: no copies of x.
    out = F.grid_sample(x, grid.reshape(n, TILES * t, t, 2), mode="bilinear", padding_mode="border", align_corners=False)
    return out.view(n, c, TILES, t, t).transpose(1, 2)


def shuffle_tiles(tiles: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """tiles ``[N, 9, ...]``, perms ``[N, 9]`` -> ``[N, 9, ...]`` where slot i holds tile
    ``perms[n, i]`` (the order in which the network sees the tiles)."""
    idx = perms.view(*perms.shape, *([1] * (tiles.dim() - 2))).expand_as(tiles)
    return tiles.gather(1, idx)


def standardise_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """Each tile to mean 0 and std 1 over its pixels and channels. tiles ``[..., C, h, w]``."""
    mean = tiles.mean(dim=(-3, -2, -1), keepdim=True)
    var = tiles.var(dim=(-3, -2, -1), keepdim=True, unbiased=False)
    return (tiles - mean) / torch.sqrt(var + TILE_STD_EPS)


def jigsaw_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the permutation classifier.

    logits: ``[N, P]``; labels: ``[N]`` permutation indices in [0, P). Mean over N puzzles.
    """
    return F.cross_entropy(logits, labels)


@METHODS.register
class Jigsaw(Method):
    name = "jigsaw"

    class Params(Strict):
        # Paper: 1000 permutations (its best; it also reports 100). Building the set of 1000
        # costs ~20 s of CPU at start-up.
        num_permutations: int = Field(1000, ge=2, le=362880)
        permutation_seed: int = Field(0, ge=0)  # the set is a function of (P, seed), not of the run's seed
        # "mean": the paper's Algorithm 1 (max summed Hamming distance); "maxmin": max minimum distance.
        selection: Literal["mean", "maxmin"] = "mean"
        image_crop: float = Field(225 / 256, gt=0, le=1)  # paper: 225x225 window of the 256x256 image
        tile_crop: float = Field(64 / 75, gt=0, le=1)  # paper: 64x64 tile in each 75x75 cell
        # px the tiles are resampled to; None: the encoder's input size (data.image_size), so the
        # encoder trains at the size it is evaluated at (at 28 px: linear/kNN 82.0/75.0 vs 80.0/72.5
        # with 16 px tiles, 3 epochs). The paper's tiles (64 px) are native crops of a 256 px image.
        tile_size: int | None = Field(None, ge=4)
        # Paper: per-tile fc6 (shared) 1024 -> concat -> fc7 4096 -> fc8 P. Our encoder's pooled
        # features take fc6's place; fc7 is scaled down to suit the small encoder.
        hidden_dim: int = Field(1024, ge=1)
        # Paper's fc6: a layer applied to every tile's features on its own (shared weights)
        # before the concatenation (paper: 1024-d; 0: none, the encoder's features are concatenated).
        tile_dim: int = Field(512, ge=0)
        # Ours: the encoder trains on standardised tiles only, so its BatchNorm running statistics
        # are those of tiles; re-estimate them on whole unlabelled images after training (the
        # "precise BN" recomputation), so the evaluated encoder normalises what it will be fed.
        whole_image_bn: bool = True

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.tile_size = params.tile_size or getattr(encoder, "image_size", None)
        if self.tile_size is None:
            raise UserError("jigsaw needs jigsaw.tile_size or the encoder's image size (data.image_size)")
        encoder.check_input_size(self.tile_size, "jigsaw.tile_size")  # a ViT: a multiple of its patch size
        # A buffer, so checkpoints carry the exact set the classifier's outputs refer to.
        self.register_buffer("permutations", permutation_set(params.num_permutations, params.permutation_seed, params.selection))
        tile_dim = params.tile_dim or encoder.feature_dim
        self.tile_head = nn.Sequential(nn.Linear(encoder.feature_dim, tile_dim, bias=False), nn.BatchNorm1d(tile_dim),
                                       nn.ReLU(inplace=True)) if params.tile_dim else nn.Identity()
        self.classifier = mlp(TILES * tile_dim, params.hidden_dim, params.num_permutations, layers=2)

    @torch.no_grad()
    def finalize(self, sample: torch.Tensor) -> None:
        """The encoder's BatchNorm statistics from whole images, not tiles."""
        if self.params.whole_image_bn:
            self.reestimate_batchnorm(sample)

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.params
        x = to_float(images) if images.dtype == torch.uint8 else images
        # ViewMaker's generator drives all randomness so extra_state() makes resume exact.
        gen = self.views.gen
        tiles = extract_tiles(x, self.tile_size, p.image_crop, p.tile_crop, gen)  # [N, 9, C, t, t]
        labels = torch.randint(p.num_permutations, (x.shape[0],), generator=gen, device=x.device)
        tiles = standardise_tiles(shuffle_tiles(tiles, self.permutations[labels]))
        # The encoder normalises with dataset mean/std; undo that so the backbone sees the
        # standardised tile itself.
        tiles = tiles * self.encoder.std.unsqueeze(1) + self.encoder.mean.unsqueeze(1)
        feats = self.tile_head(self.encoder(tiles.flatten(0, 1)))  # siamese: every tile on its own, [9N, D']
        logits = self.classifier(feats.view(x.shape[0], -1))  # concatenated in shuffled order: [N, 9D']
        acc = (logits.detach().argmax(1) == labels).float().mean()
        return {"loss": jigsaw_loss(logits, labels), "permutation_acc": acc}
