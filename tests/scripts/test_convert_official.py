"""scripts/convert_official.py: an authors' file becomes our checkpoint, with class names and input convention."""
import torch
from helpers.scripts import load_script

from dml_csr import load_model

X = torch.randn(1, 3, 65, 65)


def test_convert_official_writes_our_checkpoint(official_file, tmp_path):
    script = load_script("convert_official")
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
