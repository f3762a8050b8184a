"""Backbone weight files: read without pickle from .pth and .safetensors, checked key by key; the input convention
of the weights against the config's."""
import pytest
import torch

from dml_csr.models.weights import check_convention, check_state_dict, read_state_dict


def test_a_safetensors_file_and_a_wrapped_pth_file_read_the_same(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")
    sd = {"a.weight": torch.randn(3, 2), "b": torch.arange(4)}
    safetensors.save_file(sd, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "w.pth")
    for name in ("w.safetensors", "w.pth"):
        got = read_state_dict(str(tmp_path / name))
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:20])
    with pytest.raises(ValueError, match=r"cut.safetensors' is not a readable safetensors file") as e:
        read_state_dict(str(tmp_path / "cut.safetensors"))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused_naming_the_tensor(tmp_path, value):
    sd = {"conv1.weight": torch.ones(2, 2), "layer1.0.bn1.running_var": torch.ones(4), "steps": torch.arange(3)}
    sd["layer1.0.bn1.running_var"][2] = value
    torch.save(sd, tmp_path / "diverged.pth")
    with pytest.raises(ValueError, match=r"diverged.pth': tensor 'layer1.0.bn1.running_var' holds NaN or infinity"):
        read_state_dict(str(tmp_path / "diverged.pth"))


def test_what_a_model_drops_is_not_checked(tmp_path):
    torch.save({"conv1.weight": torch.ones(2), "fc.weight": torch.full((2,), float("nan"))}, tmp_path / "w.pth")
    assert read_state_dict(str(tmp_path / "w.pth"), keep=lambda k: not k.startswith("fc.")).keys() == {"conv1.weight"}
    with pytest.raises(ValueError, match="tensor 'fc.weight' holds NaN"):
        read_state_dict(str(tmp_path / "w.pth"))


def test_a_pickled_object_is_refused(tmp_path):
    torch.save({"state_dict": {"a": torch.zeros(1)}, "opt": object()}, tmp_path / "pickle.pth")
    with pytest.raises(ValueError, match=r"pickle.pth' cannot be loaded with weights_only=True"):
        read_state_dict(str(tmp_path / "pickle.pth"))


def test_check_state_dict_names_the_first_problem():
    expected = {"a": (2, 3), "head.weight": (10, 2)}
    check_state_dict(expected, {"a": torch.zeros(2, 3)}, "f.pth", optional=("head.weight",))
    check_state_dict(expected, {"a": torch.zeros(2, 3), "head.weight": torch.zeros(4, 2)}, "f.pth",
                     ignore_shape=("head.weight",))
    with pytest.raises(KeyError, match=r"f.pth: .*missing: \['a'\] \(1 in all\), unexpected: \['b'\]"):
        check_state_dict(expected, {"b": torch.zeros(1), "head.weight": torch.zeros(10, 2)}, "f.pth")
    with pytest.raises(ValueError, match=r"f.pth: 'a' has shape \(3, 2\), the backbone expects \(2, 3\)"):
        check_state_dict(expected, {"a": torch.zeros(3, 2), "head.weight": torch.zeros(10, 2)}, "f.pth")


def test_the_convention_is_refused_or_warned_naming_the_keys(caplog):
    rgb = ("RGB", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    check_convention(rgb, ("RGB", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), "w")
    check_convention(None, rgb, "w")  # not checked
    with pytest.raises(ValueError, match=r"^model.channel_order, model.std of this config \(BGR, mean \[0.5, 0.5, "
                                         r"0.5\], std \[1.0, 1.0, 1.0\]\) differ from the input convention of w "):
        check_convention(("BGR", (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)), rgb, "w")
    with caplog.at_level("WARNING"):
        check_convention(("RGB", (0.4, 0.5, 0.5), (0.25, 0.25, 0.25)), rgb, "w", refuse=False)
    assert "model.mean of this config" in caplog.text and "set model.channel_order: RGB" in caplog.text
