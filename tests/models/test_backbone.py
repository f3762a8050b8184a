"""The backbones: the authors' deep-stem ResNet (feature sizes, strides, dilation), torchvision ResNets at each
output stride, ImageNet weights from local files."""
import pytest
import torch

from dml_csr.models.backbone import DeepStemResNet, TorchvisionResNet, build_backbone
from dml_csr.models.norm import make_norm


def test_deepstem_feature_sizes_and_strides():
    net = DeepStemResNet((1, 1, 1, 1), make_norm("abn")).eval()
    feats = net(torch.randn(1, 3, 65, 81))
    assert [tuple(f.shape[1:]) for f in feats] == [(256, 17, 21), (512, 9, 11), (1024, 9, 11), (2048, 9, 11)]
    assert net.layer4[0].conv2.dilation == (2, 2) and net.layer3[0].conv2.dilation == (1, 1)
    with pytest.raises(ValueError, match=r"model.output_stride=32; expected 8 \(the authors'\) or 16"):
        build_backbone("resnet101_deepstem", make_norm("abn"), output_stride=32)


def test_deepstem_at_output_stride_16_has_the_same_parameters_and_layer3_strided():
    """The stride-16 variant: layer3's first block strides (its 3x3 and its shortcut), layer4 keeps dilation 2;
    every parameter keeps its name and shape, so the authors' weights load into it."""
    os8 = DeepStemResNet((1, 1, 2, 1), make_norm("abn")).eval()
    os16 = DeepStemResNet((1, 1, 2, 1), make_norm("abn"), output_stride=16).eval()
    assert {k: v.shape for k, v in os8.state_dict().items()} == {k: v.shape for k, v in os16.state_dict().items()}
    os16.load_state_dict(os8.state_dict())
    assert os16.layer3[0].conv2.stride == (2, 2) and os16.layer3[0].downsample[0].stride == (2, 2)
    assert os16.layer3[1].conv2.stride == (1, 1) and os16.layer4[0].conv2.dilation == (2, 2)
    feats = os16(torch.randn(1, 3, 65, 81))
    assert [tuple(f.shape[1:]) for f in feats] == [(256, 17, 21), (512, 9, 11), (1024, 5, 6), (2048, 5, 6)]


@pytest.mark.parametrize("arch,output_stride,last", [("resnet18", 8, 9), ("resnet18", 16, 5), ("resnet18", 32, 3),
                                                     ("resnet50", 8, 9)])
def test_torchvision_backbone_output_stride(arch, output_stride, last):
    net = TorchvisionResNet(arch, output_stride).eval()
    feats = net(torch.randn(1, 3, 65, 65))
    assert [f.shape[1] for f in feats] == list(net.channels)
    assert feats[0].shape[-1] == 17 and feats[-1].shape[-1] == last


def test_pretrained_from_local_files(tmp_path):
    import torchvision

    ref = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    net = TorchvisionResNet("resnet18", 8, pretrained=str(path))
    assert torch.equal(net.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    # deep stem: a CE2P-style file (fc.* present, no num_batches_tracked) loads; a wrong one names the keys
    src = DeepStemResNet((1, 1, 1, 1), make_norm("abn"))
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    sd["fc.weight"] = torch.zeros(10, 2048)
    torch.save(sd, tmp_path / "ce2p.pth")
    dst = DeepStemResNet((1, 1, 1, 1), make_norm("abn"))
    dst.load_imagenet(str(tmp_path / "ce2p.pth"))
    assert torch.equal(dst.layer2[0].conv2.weight, src.layer2[0].conv2.weight)
    del sd["layer1.0.conv1.weight"]
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(KeyError, match="layer1.0.conv1.weight"):
        dst.load_imagenet(str(tmp_path / "bad.pth"))
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        TorchvisionResNet("resnet18", 8, pretrained=str(tmp_path / "nope.pth"))
    (tmp_path / "cut.pth").write_bytes((tmp_path / "r18.pth").read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"model.pretrained: '.*cut.pth' cannot be loaded with weights_only") as e:
        TorchvisionResNet("resnet18", 8, pretrained=str(tmp_path / "cut.pth"))
    assert "\n" not in str(e.value)
