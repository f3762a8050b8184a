"""The authors' files: name mapping against their listing, loading every layout variant, conversion, errors."""
import importlib.util
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from dml_csr import load_model
from dml_csr.checkpoint import save_checkpoint
from dml_csr.config import Config, DataConfig, ModelConfig, config_to_dict
from dml_csr.models import build_model
from dml_csr.models.loading import build_from_official
from dml_csr.models.official import StateDictMismatch, official_to_ours, ours_to_official
from helpers.official_weights import official_entries, official_state_dict

ROOT = Path(__file__).resolve().parents[2]
X = torch.randn(1, 3, 65, 65)


def test_name_mapping_is_a_bijection_with_the_listing():
    entries = official_entries()
    with torch.device("meta"):
        ours = build_model(ModelConfig(), 11).state_dict()
    mapped = [official_to_ours(e["name"]) for e in entries]
    assert len(set(mapped)) == len(entries) == 779
    assert set(mapped) == set(ours)  # complete both ways
    for e, name in zip(entries, mapped):
        assert list(ours[name].shape) == e["shape"], e["name"]
        assert ours_to_official(name) == e["name"]
    with pytest.raises(KeyError):
        official_to_ours("head.weight")


@pytest.fixture(scope="module")
def official_sd():
    return official_state_dict(11)


def _check_same_tensors(model, sd, edges):
    own = model.state_dict()
    for k, v in sd.items():
        if k.startswith("edge_layer.") and not edges:
            assert not any(n.startswith("edges.") for n in own)
            continue
        assert torch.equal(own[official_to_ours(k)], v), k


@pytest.mark.parametrize("variant", ["module_prefix", "wrapper_no_edges", "no_num_batches_tracked"])
def test_layout_variants_load_and_reproduce_tensors(official_sd, variant):
    sd = OrderedDict(official_sd)
    if variant == "module_prefix":
        obj = OrderedDict(("module." + k, v) for k, v in sd.items())
        edges = True
    elif variant == "wrapper_no_edges":
        sd = OrderedDict((k, v) for k, v in sd.items() if not k.startswith("edge_layer."))
        obj, edges = {"state_dict": sd}, False
    else:
        sd = OrderedDict((k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))
        obj, edges = sd, True
    model = build_from_official(obj, variant, edge_heads=edges)
    _check_same_tensors(model, sd, edges)


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, official_sd):
    path = tmp_path_factory.mktemp("official") / "helen_official.pth"
    torch.save(official_sd, path)
    return path


def test_load_model_on_an_authors_file(official_file, official_sd):
    model, meta = load_model(str(official_file))
    assert not model.training and model.edges is None
    _check_same_tensors(model, official_sd, edges=False)
    assert meta["num_classes"] == 11 and meta["classes"][0] == "background" and len(meta["classes"]) == 11
    assert meta["channel_order"] == "BGR" and meta["input_size"] == [473, 473]
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    full, _ = load_model(str(official_file), edge_heads=True)
    _check_same_tensors(full, official_sd, edges=True)
    with torch.no_grad():
        assert torch.equal(model(X)["parsing"], full(X)["parsing"])


def test_convert_official_writes_our_checkpoint(official_file, tmp_path):
    spec = importlib.util.spec_from_file_location("convert_official", ROOT / "scripts" / "convert_official.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "lapa.pt"
    script.main([str(official_file), str(out), "--dataset", "lapa"])
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["format"] == "dml_csr/1" and ckpt["meta"]["dataset"] == "lapa"
    assert ckpt["config"]["model"]["channel_order"] == "BGR"
    ours, meta = load_model(str(out))
    theirs, _ = load_model(str(official_file))
    assert meta["channel_order"] == "BGR" and meta["num_classes"] == 11
    with torch.no_grad():
        assert torch.equal(ours(X)["parsing"], theirs(X)["parsing"])


def test_19_class_file_gets_celebamask_meta(official_sd):
    sd = official_state_dict(19)
    model = build_from_official({k: v for k, v in sd.items() if not k.startswith("edge_layer.")}, "x19")
    assert model.num_classes == 19
    from dml_csr.models.loading import official_meta
    assert official_meta(19)["dataset"] == "celebamask_hq" and len(official_meta(19)["classes"]) == 19


def test_load_errors_name_what_differs(official_sd, tmp_path):
    sd = OrderedDict(official_sd)
    bad = OrderedDict(sd)
    bad["layer7.conv.weight"] = torch.zeros(1)
    with pytest.raises(StateDictMismatch, match="layer7.conv.weight"):
        build_from_official(bad, "unknown.pth")
    bad = OrderedDict(sd)
    del bad["context.dualgcn.conv_adj.weight"]
    with pytest.raises(StateDictMismatch, match=r"missing from the file: context\.dualgcn\.conv_adj\.weight"):
        build_from_official(bad, "missing.pth")
    bad = OrderedDict(sd)
    bad["layer2.0.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    with pytest.raises(StateDictMismatch, match=r"shape.pth: 'layer2.0.conv2.weight' has shape \(128, 128, 1, 1\) "
                                                r"in the file but \(128, 128, 3, 3\)"):
        build_from_official(bad, "shape.pth")
    no_edges = OrderedDict((k, v) for k, v in sd.items() if not k.startswith("edge_layer."))
    with pytest.raises(StateDictMismatch, match="edge_heads=False"):
        build_from_official(no_edges, "noedges.pth", edge_heads=True)
    # an 11-class model cannot take a 19-class file: the error names the class layer and both counts
    from dml_csr.models.official import convert_official_state_dict, load_state_dict_strict
    with torch.device("meta"):
        model = build_model(ModelConfig(edge_heads=False), 11)
    model = model.to_empty(device="cpu")
    sd19 = convert_official_state_dict(official_state_dict(19), "x19.pth")
    with pytest.raises(StateDictMismatch, match=r"layer6.conv4.weight.*19 in the file, 11 in the model"):
        load_state_dict_strict(model, sd19, "x19.pth", display=ours_to_official)


def _tiny_checkpoint(path, num_classes=5, meta_classes=None):
    cfg = Config(data=DataConfig(dataset="synthetic", root=""),
                 model=ModelConfig(backbone="resnet18", context_channels=16, decoder_channels=16, edge_channels=8))
    torch.manual_seed(0)
    model = build_model(cfg.model, num_classes).eval()
    meta = {"classes": [f"c{i}" for i in range(meta_classes or num_classes)], "num_classes": meta_classes or num_classes,
            "channel_order": "RGB", "mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [65, 65]}
    save_checkpoint(str(path), model.state_dict(), meta, config_to_dict(cfg))
    return model


def test_our_checkpoint_round_trip_and_class_count_error(tmp_path):
    ref = _tiny_checkpoint(tmp_path / "a.pt")
    model, meta = load_model(str(tmp_path / "a.pt"), edge_heads=True)
    assert meta["channel_order"] == "RGB" and meta["std"] == [0.25] * 3
    with torch.no_grad():
        for k, v in ref(X).items():
            assert torch.equal(model(X)[k], v), k
    inference, _ = load_model(str(tmp_path / "a.pt"))
    assert inference.edges is None
    _tiny_checkpoint(tmp_path / "b.pt", num_classes=5, meta_classes=7)
    with pytest.raises(StateDictMismatch, match=r"b.pt: meta says 7 classes but 'decoder.conv4.weight' has 5"):
        load_model(str(tmp_path / "b.pt"))
    torch.save({"foo": torch.zeros(1)}, tmp_path / "c.pt")
    with pytest.raises(Exception, match="neither a dml_csr checkpoint"):
        load_model(str(tmp_path / "c.pt"))
