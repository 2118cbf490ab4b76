"""NNCLR (Dwibedi et al., 2021, "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations").

SimCLR's positive is replaced by the nearest neighbour of the embedding in a support set:
a FIFO queue of past embeddings (every rank's, so the queue is the same on all ranks). The
neighbour is a different image that looks alike, a positive no augmentation could make.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from pipeline import dist
from pipeline.config import Strict
from pipeline.methods._base import Method
from pipeline.registry import METHODS
from pipeline.models.heads import mlp


def nearest_neighbour(z: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """``z [N, D]``, ``support [Q, D]`` (unit rows) -> ``[N, D]``: for each row of z, the support
    row of highest cosine similarity (the paper's NN(z, Q)). Argmax and a gather: no host sync."""
    idx = (F.normalize(z, dim=1) @ support.T).argmax(dim=1)
    return support[idx]


def nnclr_loss(nn: torch.Tensor, p: torch.Tensor, temperature: float) -> torch.Tensor:
    """The paper's Eq. 2: ``L_i = -log exp(NN(z_i).p_i / t) / sum_k exp(NN(z_i).p_k / t)``.

    nn: ``[N, D]`` this rank's nearest neighbours (no gradient: they come from the queue);
    p: ``[N, D]`` predictions of the other view, gathered with gradient so that k runs over
    the global batch of ``N * world``. Both L2-normalised here. Mean over this rank's N rows.
    """
    nn = F.normalize(nn.detach(), dim=1)
    p_all = F.normalize(dist.gather_with_grad(p), dim=1)  # [N * world, D]
    labels = dist.rank() * nn.shape[0] + torch.arange(nn.shape[0], device=nn.device)
    return F.cross_entropy(nn @ p_all.T / temperature, labels)


@METHODS.register
class NNCLR(Method):
    name = "nnclr"

    class Params(Strict):
        temperature: float = Field(0.1, gt=0)  # paper (solo-learn's CIFAR recipe: 0.2)
        # paper 98304 for 1.28M ImageNet images; 4096 (as moco's queue) for the 10-20k here, so
        # the support set holds no stale embeddings of epochs ago
        queue_size: int = Field(4096, ge=1)
        # paper: projector 3 layers 2048 hidden -> 256 with BN, predictor 2 layers 4096 hidden;
        # here hidden 2x the small ResNet's 256 features
        hidden_dim: int = Field(512, ge=1)
        projection_dim: int = Field(256, ge=1)
        predictor_hidden_dim: int = Field(512, ge=1)

    def __init__(self, encoder, params, augment, seed, device):
        super().__init__(encoder, params, augment, seed, device)
        self.projector = mlp(encoder.feature_dim, params.hidden_dim, params.projection_dim, layers=3, last_bn=True)
        self.predictor = mlp(params.projection_dim, params.predictor_hidden_dim, params.projection_dim, layers=2)
        # buffers, so checkpoints carry them; every rank enqueues the gathered batch, so DDP's
        # broadcast of rank 0's buffers changes nothing. The pointer stays on the device: no sync.
        self.register_buffer("queue", F.normalize(torch.randn(params.queue_size, params.projection_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def prepare(self, sample: torch.Tensor) -> None:
        """Fill the support set with embeddings of one view of ``sample`` (uint8 ``[S, C, H, W]``)
        by the initial network (cycled when S < queue_size): random unit vectors, as the
        reference code starts with, are neighbours of nothing the network produces."""
        size = self.queue.shape[0]
        was_training = self.training
        self.eval()  # BatchNorm running statistics stay those of the initial network
        z = torch.cat([F.normalize(self.projector(self.encoder(self.views(c, view=0))), dim=1) for c in sample[:size].split(256)])
        self.train(was_training)
        self.queue.copy_(z.repeat(-(-size // z.shape[0]), 1)[:size])
        self.queue_ptr.zero_()

    def training_step(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.projector(self.encoder(self.two_views(images)))
        p1, p2 = self.predictor(z).chunk(2)
        z1, z2 = z.chunk(2)
        queue = self.queue.clone()  # enqueue() overwrites rows in place
        nn1, nn2 = nearest_neighbour(z1.detach(), queue), nearest_neighbour(z2.detach(), queue)
        t = self.params.temperature
        loss = (nnclr_loss(nn1, p2, t) + nnclr_loss(nn2, p1, t)) / 2  # symmetrised, as solo-learn and lightly
        self.enqueue(dist.gather_with_grad(F.normalize(z1.detach(), dim=1)))
        return {"loss": loss}

    @torch.no_grad()
    def enqueue(self, z: torch.Tensor) -> None:
        """Write ``z [M, D]`` (every rank's, rank-major) over the oldest rows, wrapping around the
        end, as a ring buffer written row by row would (when M > queue_size only the newest rows
        survive). Row indices are computed on the device from the pointer buffer: no host sync."""
        size, m = self.queue.shape[0], z.shape[0]
        z = z[-size:]
        rows = (self.queue_ptr + (m - z.shape[0]) + torch.arange(z.shape[0], device=z.device)) % size
        self.queue.index_copy_(0, rows, z.to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + m) % size)
