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


def test_errors_are_one_line_with_exit_status_2(official_file, tmp_path):
    from helpers.scripts import run_script

    torch.save({"foo": torch.zeros(1)}, tmp_path / "other.pth")
    for args, message in (([str(tmp_path / "nope.pth")], "nope.pth' does not exist"),
                          ([str(tmp_path / "other.pth")], "no 'layer6.conv4.weight' entry"),
                          ([str(official_file), "--dataset", "celebamask_hq"], "has 11 classes but dataset"),
                          ([str(official_file), "--keep-edges", "--dataset", "nope"], "unknown dataset 'nope'")):
        r = run_script("convert_official", *args, str(tmp_path / "out.pt"))
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], (args, r.stderr)
