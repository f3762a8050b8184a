"""Checkpoint files and run directories: the schema, weights_only loads, killed writes cleared, the checkpoint to resume
from; load_model: our checkpoints (config, metadata, class-count checks) and the authors' files (their metadata)."""
import os

import pytest
import torch
from helpers.official_weights import check_same_tensors, official_state_dict

from dml_csr import load_model
from dml_csr.checkpoint import (FORMAT, CheckpointError, RunPaths, atomic_torch_save, build_from_official,
                                find_resume_checkpoint, load_checkpoint, make_meta, official_meta, save_checkpoint)
from dml_csr.config import Config, DataConfig, ModelConfig, config_to_dict, load_config
from dml_csr.models import build_model
from dml_csr.models.official import StateDictMismatch


def test_save_and_load_round_trip_the_schema(tmp_path):
    cfg = load_config(None, ["data.dataset=lfw_pl", "data.root=x", "data.input_size=[96, 80]",
                             "model.channel_order=RGB"])
    meta = make_meta(cfg)
    assert meta == {"classes": ["background", "skin", "hair"], "dataset": "lfw_pl", "num_classes": 3,
                    "channel_order": "RGB", "mean": list(cfg.model.mean), "std": list(cfg.model.std),
                    "input_size": [96, 80], "model_name": "dml_csr"}
    path = str(tmp_path / "a" / "ck.pt")  # the folder is made
    save_checkpoint(path, {"w": torch.arange(3.0)}, meta, {"name": "x"}, epoch=4)
    ckpt = load_checkpoint(path)
    assert ckpt["format"] == FORMAT and ckpt["meta"] == meta and ckpt["config"] == {"name": "x"}
    assert ckpt["epoch"] == 4 and torch.equal(ckpt["model"]["w"], torch.arange(3.0))
    assert os.listdir(tmp_path / "a") == ["ck.pt"]  # no temporary file left


def test_loads_refuse_what_is_not_a_plain_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt' does not exist"):
        load_checkpoint(str(tmp_path / "nope.pt"))
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="cut.pt' cannot be loaded with weights_only=True"):
        load_checkpoint(str(tmp_path / "cut.pt"))

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt' cannot be loaded with weights_only=True"):
        load_checkpoint(str(tmp_path / "evil.pt"))


def test_run_paths_order_prune_and_the_checkpoint_to_resume(tmp_path):
    paths = RunPaths(str(tmp_path / "run"))
    with pytest.raises(CheckpointError, match="has no checkpoints/epoch_\\*.pt"):
        os.makedirs(paths.ckpt_dir)
        find_resume_checkpoint(paths.root)
    for epoch in (2, 10, 9, 100):
        atomic_torch_save({"epoch": epoch}, paths.epoch_ckpt(epoch))
    assert [os.path.basename(p) for p in paths.checkpoints()] == [
        "epoch_0002.pt", "epoch_0009.pt", "epoch_0010.pt", "epoch_0100.pt"]  # by number, not by name
    assert find_resume_checkpoint(paths.root) == paths.epoch_ckpt(100)
    assert find_resume_checkpoint(paths.epoch_ckpt(9)) == paths.epoch_ckpt(9)  # a file is taken as it is
    paths.prune(2)
    assert paths.checkpoints() == [paths.epoch_ckpt(10), paths.epoch_ckpt(100)]
    paths.prune(0)  # always keeps the newest
    assert paths.checkpoints() == [paths.epoch_ckpt(100)]
    with pytest.raises(CheckpointError, match="neither a checkpoint file nor a run directory"):
        find_resume_checkpoint(str(tmp_path / "elsewhere"))
    assert (paths.config, paths.metrics, paths.best) == tuple(
        os.path.join(paths.root, f) for f in ("config.yaml", "metrics.jsonl", "best.pt"))


def test_killed_writes_are_cleared_and_messages_stay_on_one_line(tmp_path):
    paths = RunPaths(str(tmp_path / "run"))
    os.makedirs(paths.ckpt_dir)
    for folder in (paths.ckpt_dir, paths.root):
        open(os.path.join(folder, ".tmp-abc123.pt"), "wb").write(b"x" * 100)
    atomic_torch_save({"epoch": 1}, paths.epoch_ckpt(1))
    assert sorted(os.path.basename(p) for p in paths.remove_partial_writes()) == [".tmp-abc123.pt"] * 2
    assert os.listdir(paths.ckpt_dir) == ["epoch_0001.pt"]
    with pytest.raises(CheckpointError, match="is a directory; give a checkpoint file"):
        load_checkpoint(paths.root)

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(str(tmp_path / "evil.pt"))
    assert "\n" not in str(e.value) and "evil.pt" in str(e.value)


def test_exported_files_and_half_model_folders_are_named_for_what_they_are(tmp_path):
    """What scripts/export.py writes is not a checkpoint: each is refused in one line saying what it is (a TorchScript
    archive whatever its name, as export.py's model.ts.pt), instead of torch's weights_only complaint."""
    scripted = str(tmp_path / "model.ts.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    cases = {scripted: "is a TorchScript model", str(tmp_path / "m.onnx"): "is an ONNX model",
             str(tmp_path / "m.xml"): "is an OpenVINO model"}
    for path in list(cases)[1:]:
        open(path, "wb").write(b"x")
    for path, kind in cases.items():
        with pytest.raises(CheckpointError, match=kind + r" \(scripts/export.py\), not a checkpoint") as e:
            load_checkpoint(path)
        assert "\n" not in str(e.value) and path in str(e.value)
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="holds model.safetensors but no config.json"):
        load_checkpoint(str(folder))
    torch.save({"w": torch.zeros(2)}, tmp_path / "plain.pt")
    assert torch.equal(load_checkpoint(str(tmp_path / "plain.pt"))["w"], torch.zeros(2))  # a torch.save zip is one


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


def test_weights_that_are_not_finite_are_refused_naming_the_first(tmp_path):
    """A state dict holding NaN loaded silently and predicted background everywhere: it is refused, naming the
    first tensor (in the file's order) that holds a value that is not finite and how many it holds."""
    path = tmp_path / "nan.pt"
    _tiny_checkpoint(path)
    obj = torch.load(path, weights_only=True)
    names = [k for k, t in obj["model"].items() if t.is_floating_point()]
    first, later = names[3], names[-1]
    obj["model"][first].view(-1)[:2] = float("nan")
    obj["model"][later].view(-1)[0] = float("inf")
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as e:
        load_model(str(path))
    assert str(e.value) == (f"{path}: weight '{first}' holds 2 of {obj['model'][first].numel()} values that are not "
                            "finite (NaN or infinity); the file is damaged or from a run that diverged")


@pytest.mark.parametrize("key,value,expected", [
    ("std", [0, 0, 0], "'std' = [0, 0, 0]; expected 3 finite numbers > 0"),
    ("mean", [0.5, float("inf"), 0.5], "'mean' = [0.5, inf, 0.5]; expected 3 finite numbers"),
    ("input_size", [100000, 100000], "'input_size' = [100000, 100000]; expected [height, width], whole numbers from 8 "
                                     "to 4096"),
])
def test_meta_that_is_not_finite_or_out_of_range_is_refused_on_load(tmp_path, key, value, expected):
    path = tmp_path / "m.pt"
    _tiny_checkpoint(path)
    obj = torch.load(path, weights_only=True)
    obj["meta"][key] = value
    torch.save(obj, path)
    with pytest.raises(CheckpointError) as e:
        load_model(str(path))
    assert str(e.value) == f"{path}: meta: {expected}"
