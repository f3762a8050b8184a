"""Any timm model that offers ``features_only`` as a DML-CSR backbone: ``model.backbone: timm/<name>``.

timm (``pip install 'dml_csr[timm]'``) builds the model; :class:`TimmBackbone` keeps the four feature maps that timm's
feature info places at strides 4, 8, 16 and 32 (the deepest map of each stride), returns them NCHW whatever the
family's native layout (Swin's are NHWC), and takes its channel counts from the same feature info. At
``model.output_stride: 32`` the maps are timm's own ``features_only`` maps, value for value. At 8 or 16 the deeper
stages are dilated by timm's own ``output_stride`` argument (ResNets, ConvNeXts, EfficientNets, MobileNets, RegNets,
...); a family without it (Swin, ViT, ...) is refused. Families whose layers depend on the input size (Swin's window
partition) are built for ``model.input_size`` and run at other sizes too (their attention masks are made per input).

Weights (``model.pretrained``):

- ``timm``: the model's default pretrained tag; ``timm:<tag>`` (``timm:fb_in22k_ft_in1k`` or
  ``timm:convnext_base.fb_in22k_ft_in1k``): that tag. Both are downloaded by timm from the Hugging Face hub (and
  cached there); without a network the error names the file to download and says to point ``model.pretrained`` at it.
  The tag's input convention (RGB, its mean and std) must be the config's: a difference is refused in one line naming
  ``model.channel_order``, ``model.mean`` or ``model.std``.
- a local timm state dict (``.pth``/``.pt`` read with ``weights_only=True``, or ``.safetensors``), checked key by key
  against the architecture (its classifier may be absent or of another size). Its tag is unknown: a config whose
  convention differs from the default tag's gets a warning.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from .weights import Convention, building_on_meta, check_convention, check_state_dict, read_state_dict

__all__ = ["TimmBackbone", "build_timm_backbone", "import_timm", "STRIDES"]

log = logging.getLogger(__name__)

STRIDES = (4, 8, 16, 32)  # the four maps DML-CSR's heads take


def import_timm(what: str):
    """The timm module, or one line naming the extra that installs it."""
    try:
        import timm
    except ImportError:
        raise ImportError(f"{what} needs timm: pip install 'dml_csr[timm]' (or pip install timm)") from None
    return timm


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model as four NCHW maps: (B, 3, H, W) -> [(B, C_i, H/s_i, W/s_i)] for strides
    s = 4, 8, 16, 32 (at ``output_stride`` 8 or 16 the deeper strides stop there).

    Args:
        body: the timm ``features_only`` model, built with ``out_indices`` selecting the four maps.
        channels: their channel counts (timm's feature info).
        nhwc: the family returns NHWC maps (permuted to NCHW here).
    """

    def __init__(self, body: nn.Module, channels: tuple[int, ...], nhwc: bool) -> None:
        super().__init__()
        self.body = body
        self.channels = tuple(channels)
        self.nhwc = nhwc
        # buffers timm computes instead of saving (Swin's relative position index): a model built on the meta device
        # and filled from a checkpoint (dml_csr.checkpoint.load_model) would keep them uninitialised
        self.register_load_state_dict_post_hook(_init_computed_buffers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        return [f.permute(0, 3, 1, 2) for f in feats] if self.nhwc else list(feats)


def _init_computed_buffers(module: nn.Module, incompatible_keys) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "init_non_persistent_buffers"):  # timm's method for these buffers
            m.init_non_persistent_buffers()


def _size_kwargs(timm, arch: str, input_size: tuple[int, int]) -> dict:
    """The size arguments the family takes: Swin-like models are built for ``input_size`` and accept other sizes."""
    if min(input_size) <= 0:
        return {}
    for kwargs in ({"img_size": tuple(input_size), "dynamic_img_size": True}, {"img_size": tuple(input_size)}):
        try:
            with torch.device("meta"):
                timm.create_model(arch, features_only=True, pretrained=False, **kwargs)
            return kwargs
        except TypeError as e:  # the family takes no such argument
            if not any(k in str(e) for k in kwargs):
                raise
    return {}


def _pick_maps(timm, arch: str, kwargs: dict, output_stride: int) -> tuple[tuple[int, ...], tuple[int, ...], bool]:
    """(out_indices, channels, nhwc) of the four maps at strides 4, 8, 16, 32."""
    name = f"model.backbone 'timm/{arch}'"
    with torch.device("meta"):
        probe = timm.create_model(arch, features_only=True, pretrained=False, **kwargs)
    reductions = probe.feature_info.reduction()
    indices = []
    for stride in STRIDES:
        at = [i for i, r in enumerate(reductions) if r == stride]
        if not at:
            raise ValueError(f"{name}: timm gives feature maps at strides {reductions}; DML-CSR needs maps at strides "
                             f"{', '.join(map(str, STRIDES))} (a plain ViT has one stride: use farl_vit_b16 or a "
                             "hierarchical model)")
        indices.append(at[-1])
    fmt = str(getattr(getattr(probe, "output_fmt", "NCHW"), "value", getattr(probe, "output_fmt", "NCHW")))
    if fmt not in ("NCHW", "NHWC"):
        raise ValueError(f"{name}: timm returns {fmt} features; expected NCHW or NHWC maps")
    if output_stride != 32:
        try:
            with torch.device("meta"):
                timm.create_model(arch, features_only=True, pretrained=False, output_stride=output_stride, **kwargs)
        except (TypeError, AssertionError, ValueError, NotImplementedError) as e:  # how families say no
            if "output_stride" not in str(e):
                raise
            raise ValueError(f"model.output_stride = {output_stride}: timm's {arch} cannot be dilated (its family "
                             "takes no output_stride); set model.output_stride: 32") from None
    channels = tuple(probe.feature_info.channels()[i] for i in indices)
    return tuple(indices), channels, fmt == "NHWC"


def _tagged_name(timm, arch: str, pretrained: str) -> str:
    """``timm`` -> the default tag's full name; ``timm:<tag>`` or ``timm:<arch>.<tag>`` -> that one, if timm has it."""
    tags = timm.list_pretrained(f"{arch}.*")
    if not tags:
        raise ValueError(f"model.pretrained = {pretrained!r}: timm has no pretrained weights for {arch}; use a local "
                         "file or leave model.pretrained empty")
    if pretrained == "timm":
        return _default_tag(timm, arch)
    tag = pretrained[len("timm:"):]
    full = tag if tag.startswith(arch + ".") else f"{arch}.{tag}"
    if full not in tags:
        raise ValueError(f"model.pretrained = {pretrained!r}: timm has no tag '{full}'; expected one of "
                         f"{', '.join(t[len(arch) + 1:] for t in tags)}")
    return full


def _default_tag(timm, arch: str) -> str:
    """arch.tag of the weights timm gives ``arch`` by default (not the first of its sorted list of tags)."""
    return f"{arch}.{timm.models.get_pretrained_cfg(arch).tag}"


def _download(timm, full: str) -> dict:
    """The weights of ``full`` (arch.tag) through timm's hub download; one line naming the file when that fails."""
    cfg = timm.models.get_pretrained_cfg(full)
    where = f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors" if cfg.hf_hub_id else cfg.url
    try:
        if cfg.hf_hub_id:
            return timm.models.load_state_dict_from_hf(cfg.hf_hub_id)
        return torch.hub.load_state_dict_from_url(cfg.url, map_location="cpu", weights_only=True)
    except Exception as e:  # no network, hub errors, a refused or truncated download
        reason = next((s.strip() for s in str(e).splitlines() if s.strip()), type(e).__name__)[:160]
        raise OSError(f"model.pretrained: cannot download timm's {full} weights ({reason}); offline, download {where} "
                      "elsewhere and set model.pretrained to that file's path") from None


def _weights_convention(timm, full: str) -> Convention:
    cfg = timm.models.get_pretrained_cfg(full)
    return "RGB", tuple(cfg.mean), tuple(cfg.std)


def _local_weights(timm, arch: str, path: str, kwargs: dict, convention: Optional[Convention]) -> dict:
    """A local timm state dict, checked against the architecture's (classifier optional, of any size)."""
    sd = read_state_dict(path)
    with torch.device("meta"):
        full = timm.create_model(arch, pretrained=False, **kwargs)
    classifier = full.pretrained_cfg.get("classifier") or ()
    head = tuple(f"{c}.{p}" for c in ([classifier] if isinstance(classifier, str) else classifier)
                 for p in ("weight", "bias"))
    expected = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    # buffers timm computes instead of saving (Swin's relative position index): older timm versions saved them
    expected.update({k: tuple(sd[k].shape) for k, _ in full.named_buffers() if k not in expected and k in sd})
    check_state_dict(expected, sd, path, optional=head + ("num_batches_tracked",), ignore_shape=head)
    if timm.list_pretrained(f"{arch}.*"):
        default = _default_tag(timm, arch)
        check_convention(convention, _weights_convention(timm, default),
                         f"timm's {default} weights (the default tag; the file's own is unknown)", refuse=False)
    return sd


def build_timm_backbone(backbone: str, output_stride: int = 32, pretrained: str = "",
                        input_size: tuple[int, int] = (0, 0), convention: Optional[Convention] = None) -> TimmBackbone:
    """``timm/<name>`` as a :class:`TimmBackbone` (see the module's docstring for ``pretrained``)."""
    timm = import_timm(f"model.backbone '{backbone}'")
    arch = backbone.split("/", 1)[1]
    if not timm.is_model(arch):
        raise ValueError(f"model.backbone '{backbone}': timm {timm.__version__} has no model '{arch}' (see "
                         f"timm.list_models('{arch.split('_')[0]}*'))")
    kwargs = _size_kwargs(timm, arch, input_size)
    indices, channels, nhwc = _pick_maps(timm, arch, kwargs, output_stride)
    if output_stride != 32:
        kwargs["output_stride"] = output_stride
    name, load = arch, {}
    if pretrained == "timm" or pretrained.startswith("timm:"):
        name = _tagged_name(timm, arch, pretrained)
        check_convention(convention, _weights_convention(timm, name), f"timm's {name} weights")
        if not building_on_meta():
            load = {"pretrained": True, "pretrained_cfg_overlay": {"state_dict": _download(timm, name), "source": ""}}
    elif pretrained and not building_on_meta():
        sd = _local_weights(timm, arch, pretrained, {k: v for k, v in kwargs.items() if k != "output_stride"},
                            convention)
        load = {"pretrained": True, "pretrained_cfg_overlay": {"state_dict": sd, "source": ""}}
    body = timm.create_model(name, features_only=True, out_indices=indices, **load, **kwargs)
    if load:
        log.info("%s: weights %s", backbone, name if name != arch else pretrained)
    return TimmBackbone(body, channels, nhwc)
