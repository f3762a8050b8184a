"""load_model: our checkpoints (config, metadata, class-count checks) and the authors' files (their metadata)."""
import pytest
import torch
from helpers.official_weights import check_same_tensors, official_state_dict

from dml_csr import load_model
from dml_csr.checkpoint import save_checkpoint
from dml_csr.config import Config, DataConfig, ModelConfig, config_to_dict
from dml_csr.loading import build_from_official, official_meta
from dml_csr.models import build_model
from dml_csr.models.official import StateDictMismatch

X = torch.randn(1, 3, 65, 65)


def test_load_model_on_an_authors_file(official_file, official_sd):
    model, meta = load_model(str(official_file))
    assert not model.training and model.edges is None
    check_same_tensors(model, official_sd, edges=False)
    assert meta["num_classes"] == 11 and meta["classes"][0] == "background" and len(meta["classes"]) == 11
    assert meta["channel_order"] == "BGR" and meta["input_size"] == [473, 473]
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406]) and meta["std"] == pytest.approx([0.229, 0.224, 0.225])
    full, _ = load_model(str(official_file), edge_heads=True)
    check_same_tensors(full, official_sd, edges=True)
    with torch.no_grad():
        assert torch.equal(model(X)["parsing"], full(X)["parsing"])


def test_19_class_file_gets_celebamask_meta(official_sd):
    sd = official_state_dict(19)
    model = build_from_official({k: v for k, v in sd.items() if not k.startswith("edge_layer.")}, "x19")
    assert model.num_classes == 19
    assert official_meta(19)["dataset"] == "celebamask_hq" and len(official_meta(19)["classes"]) == 19


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
