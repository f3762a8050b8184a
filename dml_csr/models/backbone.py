"""Backbones returning the four ResNet stage features.

- :class:`DeepStemResNet`: the authors' ResNet-101 (CE2P lineage): three 3x3 stem convs, output stride 8 with layer3
  neither strided nor dilated and layer4 dilated 2, every norm an ABN and the last one of each block (and of the
  downsample branch) applied with its LeakyReLU *before* the residual add. Its parameter names are the authors', so
  the CE2P ``resnet101-imagenet.pth`` file loads directly (``fc.*`` dropped).
- :class:`TorchvisionResNet`: torchvision's ResNet-18/34/50/101 (standard 7x7 stem, plain batch norm) with output
  stride 8, 16 or 32 obtained by turning the last strides into dilations; ImageNet weights from torchvision's weights
  API or a local state_dict file.

Both return ``[layer1, layer2, layer3, layer4]`` features and expose their channel counts as ``.channels``.
:func:`build_backbone` also builds ``timm/<name>`` (any timm model, :mod:`.timm_backbone`) and ``farl_vit_b16``
(FaRL's face-pretrained ViT, :mod:`.farl`), which return four maps at strides 4, 8, 16 and 32 the same way.
"""
from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from .norm import NormFactory
from .weights import Convention, check_state_dict, read_state_dict

__all__ = ["Bottleneck", "DeepStemResNet", "TorchvisionResNet", "build_backbone", "BACKBONES", "TIMM_PREFIX"]

log = logging.getLogger(__name__)

BACKBONES = ("resnet101_deepstem", "resnet18", "resnet34", "resnet50", "resnet101", "farl_vit_b16")
TIMM_PREFIX = "timm/"  # model.backbone: timm/<name>, any timm model offering features_only


class Bottleneck(nn.Module):
    """The authors' bottleneck block: (B, inplanes, H, W) -> (B, 4*planes, H/stride, W/stride).

    conv1 1x1 -> ABN -> ReLU, conv2 3x3 (stride, dilation) -> ABN -> ReLU, conv3 1x1 -> ABN (LeakyReLU 0.01), plus the
    (optionally downsampled, also ABN-activated) input, then ReLU.
    """
    expansion = 4

    def __init__(self, inplanes: int, planes: int, norm: NormFactory, stride: int = 1, dilation: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = norm(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class DeepStemResNet(nn.Module):
    """The authors' deep-stem dilated ResNet; (B, 3, H, W) -> 4 stage features at strides 4, 8, 8, 8.

    Args:
        layers: blocks per stage, (3, 4, 23, 3) for ResNet-101.
        norm: norm factory (see :func:`dml_csr.models.norm.make_norm`).
        output_stride: 8 (the authors': layer3 at stride 8, layer4 dilated 2) or 16 (layer3 strided, features at
            strides 4, 8, 16, 16; layer4 keeps its dilation 2): the same parameters, about a third of the FLOPs.
    """

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 23, 3), norm: Optional[NormFactory] = None,
                 output_stride: int = 8) -> None:
        super().__init__()
        assert norm is not None
        # stem: each ABN (leaky) is followed by a ReLU, as in the authors' code; the composition equals ReLU(BN).
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = norm(64)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn2 = norm(64)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
        self.bn3 = norm(128)
        self.relu3 = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.inplanes = 128
        self.layer1 = self._make_layer(64, layers[0], norm)
        self.layer2 = self._make_layer(128, layers[1], norm, stride=2)
        if output_stride not in (8, 16):
            raise ValueError(f"backbone resnet101_deepstem: model.output_stride={output_stride}; expected 8 (the "
                             "authors') or 16")
        self.layer3 = self._make_layer(256, layers[2], norm, stride=output_stride // 8)
        self.layer4 = self._make_layer(512, layers[3], norm, dilation=2)
        self.channels = (256, 512, 1024, 2048)

    def _make_layer(self, planes: int, blocks: int, norm: NormFactory, stride: int = 1,
                    dilation: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                       norm(planes * 4))
        # layer4's multi_grid is (1, 1, 1): every block has the layer's dilation
        out = [Bottleneck(self.inplanes, planes, norm, stride, dilation, downsample)]
        self.inplanes = planes * 4
        out += [Bottleneck(self.inplanes, planes, norm, 1, dilation) for _ in range(1, blocks)]
        return nn.Sequential(*out)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.relu3(self.bn3(self.conv3(x)))
        x = self.maxpool(x)
        x1 = self.layer1(x)
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [x1, x2, x3, x4]

    def load_imagenet(self, path: str) -> None:
        """Load the CE2P ``resnet101-imagenet.pth`` file (a raw state_dict; ``fc.*`` ignored), strictly otherwise."""
        sd = read_state_dict(path, keep=lambda k: not k.startswith("fc."))
        _load_strict(self, sd, path, optional_suffixes=("num_batches_tracked",))


def _dilate(layer: nn.Sequential, dilation_first: int, dilation_rest: int) -> None:
    """Remove the stride of a torchvision stage and dilate its 3x3 convs (first block ``dilation_first``)."""
    for i, block in enumerate(layer):
        d = dilation_first if i == 0 else dilation_rest
        for m in block.modules():
            if isinstance(m, nn.Conv2d):
                m.stride = (1, 1)
                if m.kernel_size == (3, 3):
                    m.dilation, m.padding = (d, d), (d, d)


class TorchvisionResNet(nn.Module):
    """torchvision ResNet with a chosen output stride; (B, 3, H, W) -> 4 stage features.

    Args:
        arch: "resnet18", "resnet34", "resnet50" or "resnet101".
        output_stride: 8 (layer3 and layer4 dilated 2 and 4), 16 (layer4 dilated 2) or 32 (no dilation).
        pretrained: "" (random init), "imagenet" (torchvision weights API, needs network or torch hub cache)
            or a path to a torchvision-layout state_dict file.
    """

    def __init__(self, arch: str, output_stride: int = 8, pretrained: str = "") -> None:
        super().__init__()
        import torchvision

        if output_stride not in (8, 16, 32):
            raise ValueError(f"model.output_stride={output_stride}; expected 8, 16 or 32")
        weights = None
        if pretrained == "imagenet":
            weights = torchvision.models.get_model_weights(arch).IMAGENET1K_V1
        try:
            net = getattr(torchvision.models, arch)(weights=weights)
        except Exception as e:
            if weights is None:
                raise
            raise RuntimeError(f"model.pretrained='imagenet': cannot fetch torchvision's {arch} weights ({e}); "
                               "download them elsewhere and set model.pretrained to the file's path") from None
        if pretrained and pretrained != "imagenet":
            sd = read_state_dict(pretrained, keep=lambda k: not k.startswith("fc."))
            net.fc = nn.Identity()
            _load_strict(net, sd, pretrained, optional_suffixes=("num_batches_tracked",))
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if output_stride == 8:
            _dilate(self.layer3, 1, 2)
            _dilate(self.layer4, 2, 4)
        elif output_stride == 16:
            _dilate(self.layer4, 1, 2)
        width = 64 if arch in ("resnet18", "resnet34") else 256
        self.channels = (width, width * 2, width * 4, width * 8)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x1 = self.layer1(x)
        x2 = self.layer2(x1)
        x3 = self.layer3(x2)
        x4 = self.layer4(x3)
        return [x1, x2, x3, x4]


def _load_strict(module: nn.Module, sd: dict, path: str, optional_suffixes: tuple[str, ...] = ()) -> None:
    check_state_dict({k: v.shape for k, v in module.state_dict().items()}, sd, path, optional_suffixes)
    module.load_state_dict(sd, strict=False)
    log.info("loaded backbone weights from %s", path)


def build_backbone(name: str, norm: NormFactory, output_stride: int = 8, pretrained: str = "",
                   input_size: tuple[int, int] = (0, 0), convention: Optional[Convention] = None) -> nn.Module:
    """Build a backbone by config name: four feature maps, their channel counts in ``.channels``.

    ``input_size`` (H, W) is the size a size-dependent backbone is laid out for (Swin's windows, FaRL's position
    embeddings; (0, 0): its pretraining size); ``convention`` (``model.channel_order``, ``model.mean``,
    ``model.std``) is checked against the input convention of the weights where a backbone knows it.
    The deep-stem ResNet-101 has output stride 8 (the authors') or 16.
    """
    if name.startswith(TIMM_PREFIX):
        from .timm_backbone import build_timm_backbone

        return build_timm_backbone(name, output_stride, pretrained, input_size, convention)
    if name == "farl_vit_b16":
        from .farl import build_farl_backbone

        return build_farl_backbone(output_stride, pretrained, input_size, convention)
    if name == "resnet101_deepstem":
        net = DeepStemResNet((3, 4, 23, 3), norm, output_stride)
        if pretrained == "imagenet":
            raise ValueError("backbone resnet101_deepstem: torchvision has no deep-stem weights; set model.pretrained "
                             "to the path of CE2P's resnet101-imagenet.pth")
        if pretrained:
            net.load_imagenet(pretrained)
        return net
    if name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        return TorchvisionResNet(name, output_stride, pretrained)
    raise ValueError(f"unknown model.backbone '{name}'; expected one of {', '.join(BACKBONES)} or {TIMM_PREFIX}<name>")
