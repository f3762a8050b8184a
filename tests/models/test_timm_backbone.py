"""timm backbones: the four maps equal timm's own features_only model with the same weights (loaded from a file this
test writes), dilation where the family takes it, the refusals, the weights' options and their input convention."""
import sys

import pytest
import torch

from dml_csr.conventions import IMAGENET_MEAN, IMAGENET_STD
from dml_csr.models.timm_backbone import build_timm_backbone

timm = pytest.importorskip("timm")

RGB = ("RGB", IMAGENET_MEAN, IMAGENET_STD)


def _timm_file(tmp_path, arch, ext, **kwargs):
    """A timm classification state dict with every floating tensor moved off its init (running statistics included,
    so that a tensor left unloaded shows), written as .pth or .safetensors."""
    torch.manual_seed(0)
    sd = timm.create_model(arch, pretrained=False, **kwargs).state_dict()
    g = torch.Generator().manual_seed(1)
    sd = {k: (v + 0.1 * torch.rand(v.shape, generator=g) if v.is_floating_point() else v) for k, v in sd.items()}
    path = str(tmp_path / f"{arch}.{ext}")
    if ext == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    else:
        torch.save(sd, path)
    return path


@pytest.mark.parametrize("arch,size,ext", [("convnext_atto", 64, "pth"), ("mobilenetv3_small_100", 64, "pth"),
                                           ("efficientnet_b0", 64, "safetensors"),
                                           ("swin_tiny_patch4_window7_224", 256, "pth")])
def test_maps_at_output_stride_32_equal_timms_own_features(tmp_path, arch, size, ext):
    """timm's own features_only model, its weights read by timm from the file; its maps at strides 4, 8, 16 and 32
    (the deepest of each stride, NCHW) are ours to 1e-6. The Swin runs at 256x256, not its 224."""
    size_kwargs = {"img_size": size} if arch.startswith("swin") else {}
    path = _timm_file(tmp_path, arch, ext, **size_kwargs)
    ref = timm.create_model(arch, features_only=True, pretrained=True, pretrained_cfg_overlay={"file": path},
                            **size_kwargs).eval()
    ours = build_timm_backbone(f"timm/{arch}", 32, path, (size, size), convention=RGB).eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        theirs, got = ref(x), ours(x)
    reductions = ref.feature_info.reduction()
    picked = [max(i for i, r in enumerate(reductions) if r == s) for s in (4, 8, 16, 32)]
    nhwc = str(getattr(ref, "output_fmt", "")).endswith("NHWC")
    want = [theirs[i].permute(0, 3, 1, 2) if nhwc else theirs[i] for i in picked]
    assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]
    assert [tuple(g.shape[-2:]) for g in got] == [(size // s, size // s) for s in (4, 8, 16, 32)]
    assert ours.channels == tuple(ref.feature_info.channels()[i] for i in picked) == tuple(g.shape[1] for g in got)
    for g, w in zip(got, want):
        assert (g - w).abs().max().item() <= 1e-6


@pytest.mark.parametrize("arch", ["convnext_atto", "mobilenetv3_small_100", "efficientnet_b0"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_variants_stop_at_their_stride(arch, output_stride):
    net = build_timm_backbone(f"timm/{arch}", output_stride).eval()
    with torch.no_grad():
        maps = net(torch.randn(1, 3, 64, 64))
    assert [m.shape[-1] for m in maps] == [64 // min(s, output_stride) for s in (4, 8, 16, 32)]
    assert [m.shape[1] for m in maps] == list(net.channels)


def test_families_that_cannot_give_the_four_maps_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"model.output_stride = 16: timm's swin_tiny_patch4_window7_224 cannot be "
                                         r"dilated .*set model.output_stride: 32") as e:
        build_timm_backbone("timm/swin_tiny_patch4_window7_224", 16, input_size=(256, 256))
    with pytest.raises(ValueError, match=r"timm/vit_tiny_patch16_224'.* strides \[16, 16, 16\]; DML-CSR needs maps "
                                         r"at strides 4, 8, 16, 32") as v:
        build_timm_backbone("timm/vit_tiny_patch16_224", 32, input_size=(224, 224))
    with pytest.raises(ValueError, match=r"timm .* has no model 'convnext_atom'"):
        build_timm_backbone("timm/convnext_atom")
    assert "\n" not in str(e.value) + str(v.value)


def test_without_timm_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # as if it were not installed
    with pytest.raises(ImportError, match=r"model.backbone 'timm/convnext_atto' needs timm: pip install "
                                          r"'dml_csr\[timm\]'") as e:
        build_timm_backbone("timm/convnext_atto")
    assert "\n" not in str(e.value)


def test_a_local_file_that_does_not_fit_is_one_line_naming_the_key(tmp_path):
    path = _timm_file(tmp_path, "convnext_atto", "pth")
    sd = torch.load(path, weights_only=True)
    head = {k: v for k, v in sd.items() if not k.startswith("head.fc.")}  # no classifier: fine
    torch.save(head, tmp_path / "headless.pth")
    build_timm_backbone("timm/convnext_atto", 32, str(tmp_path / "headless.pth"))
    torch.save({**sd, "head.fc.weight": torch.zeros(3, 320), "head.fc.bias": torch.zeros(3)}, tmp_path / "k3.pth")
    build_timm_backbone("timm/convnext_atto", 32, str(tmp_path / "k3.pth"))  # another class count: fine
    del sd["stages.2.blocks.1.conv_dw.weight"]
    torch.save(sd, tmp_path / "missing.pth")
    with pytest.raises(KeyError, match=r"missing\.pth: .*missing: \['stages.2.blocks.1.conv_dw.weight'\]") as e:
        build_timm_backbone("timm/convnext_atto", 32, str(tmp_path / "missing.pth"))
    sd["stages.2.blocks.1.conv_dw.weight"] = torch.zeros(160, 1, 3, 3)
    torch.save(sd, tmp_path / "shape.pth")
    with pytest.raises(ValueError, match=r"'stages.2.blocks.1.conv_dw.weight' has shape \(160, 1, 3, 3\), the "
                                         r"backbone expects \(160, 1, 7, 7\)") as s:
        build_timm_backbone("timm/convnext_atto", 32, str(tmp_path / "shape.pth"))
    assert "\n" not in str(e.value) + str(s.value)


def test_timm_tags_are_checked_before_any_download(monkeypatch, tmp_path):
    """The tag must exist and its input convention be the config's; a config stating BGR is refused naming the key,
    before the download. On the meta device (parameter counts) nothing is downloaded."""
    _offline(monkeypatch, tmp_path)
    with pytest.raises(ValueError, match=r"timm has no tag 'convnext_atto.in22k'; expected one of d2_in1k"):
        build_timm_backbone("timm/convnext_atto", 32, "timm:in22k", convention=RGB)
    with pytest.raises(ValueError, match=r"^model.channel_order of this config \(BGR.*convnext_atto.d2_in1k weights "
                                         r"\(RGB.*set model.channel_order: RGB") as e:
        build_timm_backbone("timm/convnext_atto", 32, "timm", convention=("BGR", IMAGENET_MEAN, IMAGENET_STD))
    with pytest.raises(ValueError, match=r"^model.mean, model.std of this config"):
        build_timm_backbone("timm/convnext_atto", 32, "timm:d2_in1k", convention=("RGB", (0.5,) * 3, (0.5,) * 3))
    assert "\n" not in str(e.value)
    with torch.device("meta"):
        net = build_timm_backbone("timm/convnext_atto", 32, "timm:convnext_atto.d2_in1k", convention=RGB)
    assert net.channels == (40, 80, 160, 320)
    # "timm" is the default tag, not the first of the sorted tags (convnext_base.clip_laion2b, CLIP's convention)
    with pytest.raises(ValueError, match=r"convnext_base.fb_in22k_ft_in1k weights \(RGB, mean \[0.485"):
        build_timm_backbone("timm/convnext_base", 32, "timm", convention=("RGB", (0.5,) * 3, (0.5,) * 3))


def _offline(monkeypatch, tmp_path):
    """The Hugging Face hub's own offline mode, with an empty cache: no request leaves this machine."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))


def test_offline_a_timm_download_is_one_line_naming_the_file(monkeypatch, tmp_path):
    _offline(monkeypatch, tmp_path)
    with pytest.raises(OSError, match=r"^model.pretrained: cannot download timm's convnext_atto.d2_in1k weights .*; "
                                      r"offline, download https://huggingface.co/timm/convnext_atto.d2_in1k/resolve/"
                                      r"main/model.safetensors elsewhere and set model.pretrained to that file's "
                                      r"path$") as e:
        build_timm_backbone("timm/convnext_atto", 32, "timm", convention=RGB)
    assert "\n" not in str(e.value)


def test_a_local_file_of_another_convention_warns_in_one_line(tmp_path, caplog):
    path = _timm_file(tmp_path, "convnext_atto", "pth")
    with caplog.at_level("WARNING"):
        build_timm_backbone("timm/convnext_atto", 32, path, convention=("BGR", IMAGENET_MEAN, IMAGENET_STD))
    assert [r.getMessage() for r in caplog.records if "model.channel_order of this config (BGR" in r.getMessage()]


def test_a_swin_built_on_meta_and_filled_from_a_state_dict_equals_the_original():
    """dml_csr.checkpoint.load_model builds on the meta device, moves to real memory and loads the checkpoint:
    Swin's relative position index (a buffer timm computes, never saves) must be computed again, or the attention
    reads garbage."""
    torch.manual_seed(0)
    net = build_timm_backbone("timm/swin_tiny_patch4_window7_224", 32, input_size=(128, 128)).eval()
    with torch.device("meta"):
        again = build_timm_backbone("timm/swin_tiny_patch4_window7_224", 32, input_size=(128, 128))
    again = again.to_empty(device="cpu").eval()
    again.load_state_dict(net.state_dict())
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(net(x), again(x)))


# ------------------------------------------------------------------------------- a timm backbone, end to end
@pytest.fixture
def two_threads():
    """The training below on two threads, as on the two cores it is sized for."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_dml_csr_on_a_small_timm_backbone_learns_faces_and_deploys_with_its_convention(tmp_path, two_threads):
    """timm's MobileNetV3-Large 0.75 from random weights under DML-CSR's heads, fed RGB as its config says, on 480
    synthetic faces at 96x96: 5 first-phase epochs and one self-regulation cycle of 60 steps each (360 in all) reach
    val mean F1 0.80; the checkpoint exports to ONNX within the parity check, and FaceParser and scripts/evaluate.py
    read its RGB convention from the checkpoint and score the unseen test faces as well."""
    import json
    import os
    import time

    import cv2
    import numpy as np
    from helpers import ROOT
    from helpers.scripts import run_script

    from dml_csr import FaceParser
    from dml_csr.checkpoint import RunPaths, load_checkpoint
    from dml_csr.config import load_config
    from dml_csr.data.dataset import read_label, read_split_list
    from dml_csr.data.synthetic import write_dataset
    from dml_csr.training.trainer import train

    data = str(tmp_path / "synthetic")
    write_dataset(data, {"train": 480, "val": 60, "test": 20}, seed=11, size=(120, 120), face_scale=(0.3, 0.38))
    cfg = load_config(os.path.join(ROOT, "configs", "synthetic_dml_csr_tiny.yaml"), [
        f"data.root={data}", f"output_dir={tmp_path / 'runs'}", "name=timm", "data.input_size=[96, 96]",
        "model.backbone=timm/mobilenetv3_large_075", "model.output_stride=16", "train.epochs=5",
        "train.iters_per_epoch=60", "train.cycles=1", "train.cycle_epochs=1", "train.lr=0.06",
        "train.cycle_lr=0.005", "train.val_every=5", "train.image_log_every=0", "loss.lovasz=false"])
    assert cfg.model.channel_order == "RGB"
    wall = time.time()
    summary = train(cfg, progress=False)
    wall = time.time() - wall
    records = [json.loads(line) for line in open(RunPaths(cfg.run_dir).metrics) if '"val"' in line]
    phase1 = [r for r in records if r["tag"] == "student" and r["epoch"] == 5][0]["mean_f1"]
    ensemble = [r for r in records if r["tag"] == "ensemble_1"][0]["mean_f1"]
    print(f"timm/mobilenetv3_large_075: {wall:.0f} s; val mean F1 {phase1:.4f} after the first phase, {ensemble:.4f} "
          "after self-regulation")
    assert load_checkpoint(RunPaths(cfg.run_dir).checkpoints()[-1])["train_state"]["step"] == 360
    assert phase1 >= 0.80 and ensemble >= 0.80, (phase1, ensemble)
    best = summary["best"]

    onnx = str(tmp_path / "timm.onnx")
    r = run_script("export", "--checkpoint", best, "--format", "onnx", "--out", onnx)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split("pytorch| = ")[1].split()[0]) < 1e-4

    parser = FaceParser.from_checkpoint(best)
    assert (parser.meta["channel_order"], tuple(parser.meta["mean"])) == ("RGB", IMAGENET_MEAN)
    confusion = np.zeros((11, 11), np.int64)
    for _, image, label in read_split_list(data, "test"):
        truth, pred = read_label(label), parser(cv2.imread(image), channel_order="BGR")
        keep = truth != 255
        confusion += np.bincount(11 * truth[keep].astype(np.int64) + pred[keep], minlength=121).reshape(11, 11)
    f1 = 2 * np.diag(confusion) / np.maximum(confusion.sum(0) + confusion.sum(1), 1)  # per class, 2TP / (P + T)
    assert f1[1:].mean() >= 0.75, f1

    out = str(tmp_path / "eval")
    r = run_script("evaluate", "--config", os.path.join(cfg.run_dir, "config.yaml"), "--checkpoint", best,
                   "--split", "test", "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    rec = json.load(open(os.path.join(out, "metrics.json")))
    assert rec["protocol"]["input_convention"]["channel_order"] == "RGB"
    assert rec["scores"]["mean_f1"] >= 0.75
