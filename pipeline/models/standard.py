"""The field's standard backbones, built without pretrained weights (no network needed):
torchvision's ResNet-18/50 (ImageNet stem: 7x7 stride-2 conv + max-pool) and timm's ViT-S/16,
ViT-B/16.

Why these libraries: ``torchvision.models.resnet50`` is the ResNet-50 every SSL release
(MoCo, SimCLR ports, BYOL ports, DINO, Barlow Twins, VICReg) publishes weights for, and timm's
``vit_small_patch16_224`` / ``vit_base_patch16_224`` are what DINO's, MAE's and MoCo v3's ViT
weights load into (torchvision has no ViT-S). Their parameter names are kept exactly, so a
trained backbone's ``state_dict`` loads with ``strict=True`` into the plain library model
(``pipeline.export``). The classifier is removed (torchvision: ``fc = Identity``; timm:
``num_classes=0``), so the backbone returns pooled features.

Both take 3-channel input; ``Encoder`` repeats a grey channel (after normalising it).
"""

from __future__ import annotations

import torch
from torch import nn

RESNETS = {"resnet18": 512, "resnet50": 2048}  # torchvision arch -> feature dim
VITS = {"vit_small_patch16_224": 16, "vit_base_patch16_224": 16}  # timm arch -> patch size
STANDARD = sorted(RESNETS) + sorted(VITS)
IN_CHANNELS = 3  # what the library models take (and what an exported state_dict expects)


def torchvision_resnet(arch: str) -> nn.Module:
    """``torchvision.models.<arch>(weights=None)`` with ``fc = Identity``:
    float ``[N, 3, H, W]`` (normalised) -> ``[N, feature_dim]``, any H, W (the stride-32 network
    rounds up: a 12 px crop reaches the pooling as 1 x 1)."""
    import torchvision  # late: 1.5 s import that the text stages never need

    model = getattr(torchvision.models, arch)(weights=None)
    model.fc = nn.Identity()
    model.feature_dim = RESNETS[arch]
    return model


class TimmViT(nn.Module):
    """timm's ``VisionTransformer`` (``self.model``, ``num_classes=0``, ``dynamic_img_size=True``)
    behind the interface of ``pipeline.models.vit.ViT``, so MAE and BEiT use it unchanged.

    The position table stays at the model's native grid (14 x 14 for 224 px), so its
    ``state_dict`` always loads strictly into ``timm.create_model(name)``; other input sizes
    (the data's size, multi-crop's small crops) get it resampled bicubically by timm's own
    ``resample_abs_pos_embed`` (as DINO does). ``grid``, ``num_patches`` and ``patch_pos`` refer to
    ``image_size``, the size of the images the pipeline trains on (MAE's and BEiT's masks).
    Features are the final class token (timm's ``global_pool='token'``, the model's default).
    """

    def __init__(self, arch: str, image_size: int):
        super().__init__()
        import timm  # late: imports torchvision

        self.model = timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True)
        self.patch_size = self.model.patch_embed.patch_size[0]
        self.image_size, self.in_channels = image_size, IN_CHANNELS
        self.grid = image_size // self.patch_size
        self.num_patches = self.grid**2
        self.dim = self.feature_dim = self.model.embed_dim
        self.heads = self.model.blocks[0].attn.num_heads
        self.mlp_dim = self.model.blocks[0].mlp.fc1.out_features

    @property
    def blocks(self) -> nn.Sequential:
        return self.model.blocks

    def pos_for(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """``[1, 1 + grid_h * grid_w, dim]``: the native table resampled to a grid (row 0: class token)."""
        from timm.layers import resample_abs_pos_embed

        return resample_abs_pos_embed(self.model.pos_embed, new_size=(grid_h, grid_w),
                                      old_size=self.model.patch_embed.grid_size, num_prefix_tokens=1)

    @property
    def pos_embedding(self) -> torch.Tensor:
        """``[1, 1 + L, dim]`` at ``image_size``."""
        return self.pos_for(self.grid, self.grid)

    @property
    def patch_pos(self) -> torch.Tensor:
        """``[1, L, dim]`` at ``image_size``."""
        return self.pos_embedding[:, 1:]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` -> ``[N, L, dim]`` patch embeddings, row-major, no positions."""
        return self.model.patch_embed(x).flatten(1, 2)  # dynamic_img_size: NHWC out

    def encode(self, tokens: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """Patch tokens with their positions ``[N, K, dim]`` -> ``[N, 1 + K, dim]`` (class token
        prepended, blocks, final norm), as ``ViT.encode``; ``pad`` (bool ``[N, K]``, True = ignore)
        keeps those tokens out of every attention (timm's ``attn_mask``: True = attend)."""
        m = self.model
        cls = (m.cls_token + self.pos_embedding[:, :1]).expand(tokens.shape[0], -1, -1)
        h = m.norm_pre(torch.cat([cls, tokens], dim=1))
        if pad is None:
            return m.norm(m.blocks(h))
        attend = torch.cat([torch.ones_like(pad[:, :1]), ~pad], dim=1)[:, None, None, :]  # [N, 1, 1, 1 + K]
        for blk in m.blocks:
            h = blk(h, attn_mask=attend)
        return m.norm(h)

    def encode_subset(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Only the patches ``keep`` (``[N, K]`` long) of ``x`` -> ``[N, 1 + K, dim]`` (MAE)."""
        tokens = self.embed(x) + self.patch_pos
        return self.encode(torch.gather(tokens, 1, keep.unsqueeze(-1).expand(-1, -1, tokens.shape[-1])))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` (any H, W the patch size divides) -> ``[N, 1 + L, dim]``."""
        return self.model.forward_features(x)

    def pool_tokens(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` -> class-token features ``[N, dim]``, exactly ``timm.create_model(arch,
        num_classes=0, dynamic_img_size=True)(x)``."""
        return self.model(x)


def library_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's weights under the library model's own names, contiguous (safetensors needs it)."""
    sd = (backbone.model if isinstance(backbone, TimmViT) else backbone).state_dict()
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}
