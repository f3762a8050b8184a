"""FaRL's face-pretrained ViT-B/16 as a DML-CSR backbone: ``model.backbone: farl_vit_b16``.

FaRL (Zheng et al., "General Facial Representation Learning in a Visual-Linguistic Manner", CVPR 2022) pretrained
OpenAI CLIP's ViT-B/16 image tower (QuickGELU activations, pre-norm blocks, a class token, learnt position
embeddings) on LAION-Face. :class:`FaRLBackbone` is that tower with OpenAI CLIP's parameter names, so FaRL's released
files load directly, and the pyramid FaRL's own face-parsing network puts on it (``FaRLVisualFeatures`` in FaRL's
``farl/network/transformers.py``, which we follow):

- the patch tokens after blocks 4, 6, 8 and 12 (0-based indices 3, 5, 7, 11: FaRL's default ``output_indices`` for
  the base model) are laid out as (B, 768, H/16, W/16) maps;
- FaRL's ``_make_fpns`` for patch size 16 turns them into strides 4, 8, 16 and 32: block 4 through a 2x2 stride-2
  transposed conv, batch norm, GELU and a second 2x2 stride-2 transposed conv (x4); block 6 through one 2x2 stride-2
  transposed conv (x2); block 8 as it is; block 12 through a 2x2 stride-2 max pooling (/2);
- the position embeddings, learnt for 224x224 (a 14x14 grid), are interpolated to the input size's grid bicubically
  (``align_corners=False``, the class token's kept), as FaRL's ``_resize_pe`` does for its 448x448 parsing input.
  Here the parameter is resized once for ``model.input_size`` when the file is read; an input of another size
  interpolates it again on the fly.

FaRL's files (``FaRL-Base-Patch16-LAIONFace20M-ep16.pth``, ``-ep64``) are ``{"state_dict": ...}`` dicts of its whole
pretraining model with OpenAI CLIP's names: ``visual.*`` is the image tower. The text tower's entries (every key not
under ``visual.``) and the masked-image-modelling head used only in pretraining (``visual.mask_token``,
``visual.lm_transformer.*``, ``visual.ln_lm.*``, ``visual.lm_head.*``) are ignored; every other image-tower entry must
be there with its shape (``visual.ln_post.*`` and ``visual.proj``, the global embedding dense features do not use,
are checked and dropped), and any other key is an error naming it. Input: RGB with CLIP's mean and std.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .weights import Convention, building_on_meta, check_convention, check_state_dict, read_state_dict

__all__ = ["FaRLBackbone", "build_farl_backbone", "CLIP_MEAN", "CLIP_STD", "FARL_BLOCKS"]

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's input normalisation, which FaRL keeps (RGB)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FARL_BLOCKS = (3, 5, 7, 11)  # FaRL's output_indices for the base model: the blocks whose tokens become the maps
PRETRAINING_ONLY = ("visual.mask_token", "visual.lm_transformer.", "visual.ln_lm.", "visual.lm_head.")
PRETRAINED_GRID = (14, 14)  # the position embeddings were learnt for 224x224 inputs
EMBED_DIM = 512  # CLIP ViT-B/16's global embedding (visual.ln_post, visual.proj: checked, not used)


class QuickGELU(nn.Module):
    """OpenAI CLIP's GELU approximation: x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """A pre-norm transformer block, (B, L, D) -> (B, L, D): x + attn(ln_1(x)), then + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(width * 4, width))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class _Blocks(nn.Module):
    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))


def _pyramid(width: int) -> nn.ModuleList:
    """FaRL's ``_make_fpns`` for patch size 16: x4, x2, x1 and /2 of the stride-16 token maps."""
    return nn.ModuleList([
        nn.Sequential(nn.ConvTranspose2d(width, width, 2, stride=2), nn.BatchNorm2d(width), nn.GELU(),
                      nn.ConvTranspose2d(width, width, 2, stride=2)),
        nn.ConvTranspose2d(width, width, 2, stride=2),
        nn.Identity(),
        nn.MaxPool2d(2, stride=2)])


def grid_of(input_size: tuple[int, int], patch: int = 16) -> tuple[int, int]:
    """The token grid of an input size ((0, 0): CLIP's 224x224)."""
    size = tuple(input_size) if min(input_size) > 0 else (224, 224)
    return size[0] // patch, size[1] // patch


def resize_position_embedding(pe: torch.Tensor, grid: tuple[int, int], to: tuple[int, int]) -> torch.Tensor:
    """(1 + gh*gw, D) position embeddings of a ``grid`` -> (1 + th*tw, D) for the grid ``to``, bicubic with
    ``align_corners=False``; the class token's row is kept."""
    if tuple(to) == tuple(grid) and not torch.jit.is_tracing():
        return pe
    patches = pe[1:].reshape(1, grid[0], grid[1], pe.shape[1]).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=tuple(to), mode="bicubic", align_corners=False)
    return torch.cat([pe[:1], patches.flatten(2)[0].t()], dim=0)


class FaRLBackbone(nn.Module):
    """FaRL's ViT-B/16 image tower with FaRL's parsing pyramid; (B, 3, H, W) -> 4 maps of 768 channels at strides 4,
    8, 16, 32 (H and W multiples of 32 keep them exact).

    Args:
        input_size: (H, W) the position embeddings are laid out for; (0, 0): CLIP's 224x224.
        width, layers, heads, patch: the tower (ViT-B/16: 768, 12, 12, 16).
    """

    def __init__(self, input_size: tuple[int, int] = (0, 0), width: int = 768, layers: int = 12, heads: int = 12,
                 patch: int = 16) -> None:
        super().__init__()
        self.grid = grid_of(input_size, patch)
        self.conv1 = nn.Conv2d(3, width, patch, stride=patch, bias=False)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(1 + self.grid[0] * self.grid[1], width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = _Blocks(width, layers, heads)
        self.fpns = _pyramid(width)
        self.channels = (width,) * 4
        for m in self.transformer.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)

    def token_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The patch tokens after the blocks :data:`FARL_BLOCKS` as (B, D, H/16, W/16) maps."""
        x = self.conv1(x)  # (B, D, gh, gw)
        b, d, gh, gw = x.shape
        tokens = torch.cat([self.class_embedding.to(x.dtype).expand(b, 1, d), x.flatten(2).transpose(1, 2)], dim=1)
        positions = resize_position_embedding(self.positional_embedding, self.grid, (gh, gw))
        tokens = self.ln_pre(tokens + positions.to(x.dtype))
        maps = []
        for i, block in enumerate(self.transformer.resblocks[:max(FARL_BLOCKS) + 1]):
            tokens = block(tokens)
            if i in FARL_BLOCKS:
                maps.append(tokens[:, 1:].transpose(1, 2).reshape(b, d, gh, gw))
        return maps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [fpn(m) for fpn, m in zip(self.fpns, self.token_maps(x))]


def read_farl(path: str, grid: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The image tower's entries of a FaRL release file under :class:`FaRLBackbone`'s names, checked, the position
    embeddings interpolated to ``grid``."""
    sd = read_state_dict(path, keep=lambda k: k.startswith("visual.") and not k.startswith(PRETRAINING_ONLY))
    with torch.device("meta"):
        tower = {k: tuple(v.shape) for k, v in FaRLBackbone().state_dict().items() if not k.startswith("fpns.")}
    width = tower["class_embedding"][0]
    unused = {"ln_post.weight": (width,), "ln_post.bias": (width,), "proj": (width, EMBED_DIM)}
    check_state_dict({f"visual.{k}": s for k, s in {**tower, **unused}.items()}, sd, path)
    own = {k[len("visual."):]: v for k, v in sd.items() if k[len("visual."):] in tower}
    own["positional_embedding"] = resize_position_embedding(own["positional_embedding"], PRETRAINED_GRID, grid)
    return own


def build_farl_backbone(output_stride: int = 32, pretrained: str = "", input_size: tuple[int, int] = (0, 0),
                        convention: Optional[Convention] = None) -> FaRLBackbone:
    """``farl_vit_b16``: random init, or the image tower of a FaRL release file (``pretrained``: its path)."""
    if output_stride != 32:
        raise ValueError(f"model.output_stride = {output_stride}: farl_vit_b16 is a ViT (every block at stride 16, "
                         "FaRL's pyramid gives strides 4 to 32) and cannot be dilated; set model.output_stride: 32")
    tower = None
    if pretrained:
        check_convention(convention, ("RGB", CLIP_MEAN, CLIP_STD), "FaRL's weights (CLIP's)")
        if not building_on_meta():  # read and checked first: a file that does not fit costs no initialisation
            tower = read_farl(pretrained, grid_of(input_size))
    net = FaRLBackbone(input_size)
    if tower is not None:
        net.load_state_dict(tower, strict=False)
        log.info("farl_vit_b16: image tower from %s (position embeddings for a %dx%d grid)", pretrained, *net.grid)
    return net
