"""RNN-G: a shallow CNN with a gated four-direction spatial RNN (Liu et al., "Face Parsing via Recurrent
Propagation", BMVC 2017, Figure 1). The framework's real-time model.

Layout (``width`` = 32, at most 32 channels as in the paper; sizes for a 128 x 128 input)::

    conv1 5x5x16 + pool    -> 64 x 64       conv2 3x3x32 + pool -> 32 x 32      conv3 3x3x32 -> 32 x 32
    deconv6 (x2) -> 16 channels at 64 x 64, split into X (8, label representation) and G (8, gate; tanh -> [-1, 1])
    4 gated linear RNNs on (X, G) (see :mod:`dml_csr.models.scan`), node-wise max over directions
    1x1 projection to the classes, deconv7 (x2) -> logits at the input resolution

Training-only heads (paper Sec. 3.3): a 3x3 conv from X to the coarse class logits, and a 1x1 conv from the gates to
one boundary-gate logit map supervised with ground-truth boundaries (0 on a boundary, 1 elsewhere).

The paper's baselines (Sec. 5.2, Tables 1-2) are ``variant``s of the same network:

    rnn_g     the model above
    rnn       the standard RNN of eq. 1: no gate (g = 1 everywhere, deconv6 gives X alone), identity activation
    cnn_deep  the RNN replaced by two 3x3 convolutions of ``width`` channels, deconv6 widened from X's 8 to 16
              channels (all of them label representation)
    cnn_s     the shallow CNN alone: X projected to the classes

and ``input_size=512`` is the Multi-Face network: two more 3x3x16 convolutions with max-pooling after conv1 and one
more deconvolution at the end, so the RNN runs at 64 x 64 and the output at 256 x 256 (bilinearly resized to the
input, as every output here).
Stability (Sec. 3.2): ``|g| <= 1`` by the tanh, and each transition matrix is rescaled on the fly so that
``sqrt(||W||_1 ||W||_inf) <= 1``, an upper bound of its spectral norm (exportable, unlike an SVD).
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .precision import check_image_input
from .scan import spatial_rnn_4dir

__all__ = ["RNNG", "rnn_g", "build_rnn_g", "bounded_transition", "VARIANTS", "INPUTS"]

VARIANTS = ("rnn_g", "rnn", "cnn_deep", "cnn_s")  # the paper's RNN-G and its baselines (Sec. 5.2)
INPUTS = (128, 512)  # the single-face network and the Multi-Face one (Sec. 5.1)

logger = logging.getLogger(__name__)

_TRAIN_ONLY = ("coarse_head", "gate_head")


def bounded_transition(w: Tensor) -> Tensor:
    """Rescale each (C, C) matrix of ``w`` (D, C, C) so that sqrt(||W||_1 ||W||_inf) <= 1 (hence ||W||_2 <= 1)."""
    a = w.abs()
    norm = (a.sum(dim=1).amax(dim=-1) * a.sum(dim=2).amax(dim=-1)).sqrt()  # (D,)
    return w / norm.clamp(min=1.0)[:, None, None]


def _bilinear_deconv(channels: int) -> nn.ConvTranspose2d:
    """A x2 transposed convolution initialised to per-channel bilinear upsampling."""
    up = nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=2, padding=1, bias=True)
    f = torch.tensor([0.25, 0.75, 0.75, 0.25])
    with torch.no_grad():
        up.weight.zero_()
        for c in range(channels):
            up.weight[c, c] = f[:, None] * f[None, :]
        up.bias.zero_()
    return up


class RNNG(nn.Module):
    """First-stage RNN-G network (paper Figure 1).

    Args:
        num_classes: number of output classes.
        width: widest layer (paper: 32); conv1 and deconv6 use ``width // 2``, the RNN ``width // 4`` channels.
        norm: batch norm after each convolution (helps SGD; costs a little on CPU; foldable at export).
        variant: one of :data:`VARIANTS` (see the module docstring).
        input_size: 128 (the single-face network) or 512 (the Multi-Face network, two more down-sampling units).

    ``forward(x)`` with x: (B, 3, H, W) returns a dict:
        ``parsing``: (B, num_classes, H, W) logits at the input resolution (always);
        in training mode also ``coarse``: (B, num_classes, H', W') CNN logits at the RNN resolution (H' ~ H/2;
        not ``cnn_s``), and with ``rnn_g`` ``gate``: (B, 1, H', W') boundary-gate logits (sigmoid -> 1 = propagate,
        0 = boundary) and ``gates``: (B, width // 4, H', W') the gates in [-1, 1] fed to the RNN.
    """

    training_only = tuple(f"{name}." for name in _TRAIN_ONLY)  # state_dict prefixes of the training-only heads

    def __init__(self, num_classes: int, *, width: int = 32, norm: bool = True, variant: str = "rnn_g",
                 input_size: int = 128):
        super().__init__()
        if width < 4 or width % 4:
            raise ValueError(f"RNNG: width must be a positive multiple of 4 (e.g. 32, the paper's); got {width}")
        if variant not in VARIANTS or input_size not in INPUTS:
            raise ValueError(f"RNNG: variant {variant!r}, input_size {input_size!r}; expected a variant of "
                             f"{', '.join(VARIANTS)} and an input size of {', '.join(map(str, INPUTS))}")
        half, k = width // 2, width // 4
        self.num_classes, self.width, self.variant, self.input_size = num_classes, width, variant, input_size
        self.hidden = half if variant == "cnn_deep" else k  # channels of X

        def block(cin: int, cout: int, ks: int) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, ks, padding=ks // 2, bias=not norm)]
            if norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            return nn.Sequential(*layers)

        self.conv1 = block(3, half, 5)
        # the Multi-Face network: two more 3x3x16 units, each followed by a max-pooling
        self.down = nn.ModuleList([block(half, half, 3) for _ in range(2 if input_size == 512 else 0)])
        self.conv2 = block(half, width, 3)
        self.conv3 = block(width, width, 3)
        gated = variant == "rnn_g"
        self.deconv6 = nn.ConvTranspose2d(width, self.hidden + (k if gated else 0), kernel_size=4, stride=2,
                                          padding=1)  # -> X | G (rnn_g)
        if variant in ("rnn_g", "rnn"):
            self.rnn_weight = nn.Parameter(torch.eye(k).repeat(4, 1, 1))  # (4, k, k), one per direction
            self.rnn_bias = nn.Parameter(torch.zeros(4, k))
        self.deep = nn.Sequential(block(half, width, 3), block(width, width, 3)) if variant == "cnn_deep" else None
        self.project = nn.Conv2d(width if variant == "cnn_deep" else k, num_classes, 1)
        self.deconv7 = _bilinear_deconv(num_classes)
        self.deconv8 = _bilinear_deconv(num_classes) if input_size == 512 else None
        self.coarse_head: Optional[nn.Module] = (nn.Conv2d(self.hidden, num_classes, 3, padding=1)
                                                 if variant != "cnn_s" else None)
        self.gate_head: Optional[nn.Module] = nn.Conv2d(k, 1, 1) if gated else None
        if self.gate_head is not None:
            nn.init.constant_(self.gate_head.bias, 2.0)  # start near "propagate" (sigmoid(2) ~ 0.88)
        self._register_load_state_dict_pre_hook(self._skip_dropped_heads)

    # ------------------------------------------------------------------------------------------------------------
    def drop_edge_heads(self) -> "RNNG":
        """Remove the training-only heads (coarse labels, boundary gate); ``parsing`` is unchanged. Idempotent;
        returns self.

        Weights for the dropped heads are ignored by ``load_state_dict`` afterwards, so loading works either side.
        """
        self.coarse_head = None
        self.gate_head = None
        return self

    def _skip_dropped_heads(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in _TRAIN_ONLY:
            if getattr(self, name) is None:
                for key in [k for k in state_dict if k.startswith(f"{prefix}{name}.")]:
                    del state_dict[key]

    def features(self, x: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """CNN part. x: (B, 3, H, W) -> (X, gates): X (B, hidden, H', W'); with ``rnn_g`` the gates
        (B, width // 4, H', W') in [-1, 1], else None."""
        f = F.max_pool2d(self.conv1(x), 2)
        for unit in self.down:
            f = F.max_pool2d(unit(f), 2)
        f = F.max_pool2d(self.conv2(f), 2)
        f = self.deconv6(self.conv3(f))
        if self.variant != "rnn_g":
            return f, None
        xr, gr = f.split(self.hidden, dim=1)
        return xr, torch.tanh(gr)

    def propagate(self, xr: Tensor, gates: Optional[Tensor]) -> Tensor:
        """What the variant puts between X and the projection: the gated RNN, the plain RNN (g = 1), two
        convolutions, or nothing."""
        if self.variant == "cnn_s":
            return xr
        if self.deep is not None:
            return self.deep(xr)
        g = gates if gates is not None else torch.ones_like(xr)
        return spatial_rnn_4dir(xr, g, bounded_transition(self.rnn_weight), self.rnn_bias)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        check_image_input(x, "RNNG", self.project.weight.dtype)
        xr, gates = self.features(x)
        out = self.deconv7(self.project(self.propagate(xr, gates)))
        if self.deconv8 is not None:
            out = self.deconv8(out)
        if torch.jit.is_tracing() or out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        result = {"parsing": out}
        if self.training and self.coarse_head is not None:
            result["coarse"] = self.coarse_head(xr)
        if self.training and self.gate_head is not None and gates is not None:
            result["gate"] = self.gate_head(gates)
            result["gates"] = gates
        return result


def rnn_g(*, num_classes: int, width: int = 32, norm: bool = True, variant: str = "rnn_g",
          input_size: int = 128) -> RNNG:
    """Keyword-only builder of the first-stage network (or one of the paper's baselines, ``variant``)."""
    return RNNG(num_classes, width=width, norm=norm, variant=variant, input_size=input_size)


def build_rnn_g(cfg, num_classes: int, class_names: Optional[Sequence[str]] = None) -> nn.Module:
    """Build RNN-G from a :class:`dml_csr.config.ModelConfig`: one stage, or two (``cfg.two_stage``, in the variant
    ``cfg.two_stage_variant``; both need the dataset's ``class_names`` to find their components' classes).
    ``cfg.edge_heads = False`` builds it without the training-only heads (coarse labels, boundary gate)."""
    from .two_stage import PaperTwoStageRNNG, TwoStageRNNG

    if cfg.two_stage and (class_names is None or len(class_names) != num_classes):
        raise ValueError(f"model.two_stage=true needs the dataset's {num_classes} class names (got "
                         f"{None if class_names is None else len(class_names)}) to find its components' classes")
    paper = cfg.two_stage and cfg.two_stage_variant == "paper"
    model = rnn_g(num_classes=3 if paper else num_classes, width=cfg.rnn_channels, norm=cfg.rnn_norm,
                  variant=cfg.rnn_variant, input_size=cfg.rnn_input)
    if not cfg.edge_heads:
        model.drop_edge_heads()
    if not cfg.two_stage:
        return model
    if paper:
        return PaperTwoStageRNNG(model, class_names, cfg.rnn_stage1_size, components=tuple(cfg.rnn_components))
    return TwoStageRNNG(model, class_names, components=tuple(cfg.rnn_components))
