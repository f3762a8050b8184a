"""The dense CRF on network crops (evaluation's batches, FaceParser's): colours from their uint8 BGR pixels, and above
256x256 run at a size that fits and resized back."""
import pytest
import torch
from helpers.crf import two_halves

from dml_csr.inference import crf_probs
from dml_csr.models import dense_crf


def test_a_batch_larger_than_the_crf_takes_is_resized_and_its_labels_follow_the_colour_edge(monkeypatch):
    monkeypatch.setattr(dense_crf, "MAX_PIXELS", 32 * 32)  # the real 256 x 256 takes minutes a step on a CPU
    h, w = 60, 64
    image, probs, truth = two_halves(h, w, seed=4)
    run = dense_crf.dense_crf
    seen = []
    monkeypatch.setattr(dense_crf, "dense_crf", lambda p, im, params: seen.append(p.shape) or run(p, im, params))
    out = crf_probs(probs, image, 5)
    assert seen == [(1, 2, 30, 33)] and out.shape == probs.shape  # run at the largest size that fits
    assert torch.allclose(out.sum(1), torch.ones(1, h, w), atol=1e-5)
    before = (probs.argmax(1)[0] == truth).float().mean().item()
    after = (out.argmax(1)[0] == truth).float().mean().item()
    assert before < 0.8 and after > 0.98, (before, after)  # the edge column blurs in the resizing


def test_kernel_settings_reach_the_crf_and_zero_weights_leave_the_probabilities_as_they_were():
    """crf_probs takes a CRFParams: with both kernels' weights 0 no message moves Q, so the probabilities come back
    unchanged; a stronger appearance kernel than the default changes them further than the default does."""
    image, probs, truth = two_halves(24, 24, seed=2)
    off = crf_probs(probs, image, dense_crf.crf_params(5, {"bilateral_weight": 0, "spatial_weight": 0}))
    assert torch.allclose(off, probs, atol=1e-6)
    default, strong = (crf_probs(probs, image, p) for p in (5, dense_crf.crf_params(5, {"bilateral_weight": 40})))
    assert (strong - probs).abs().sum() > (default - probs).abs().sum() > 0.1


def test_crf_params_name_the_unknown_setting_and_the_changed_ones():
    with pytest.raises(ValueError, match=r"^dense CRF setting 'theta_a' is unknown; expected one of bilateral_weight, "):
        dense_crf.crf_params(5, {"theta_a": 3})
    with pytest.raises(ValueError, match=r"dense CRF spatial_xy = -1"):
        dense_crf.crf_params(5, {"spatial_xy": -1})
    p = dense_crf.crf_params(3, {"normalization": "row", "bilateral_rgb": 20, "spatial_weight": 3.0})
    assert p.iterations == 3 and dense_crf.changed_kernels(p) == {"bilateral_rgb": 20.0, "normalization": "row"}
    assert dense_crf.kernel_text(dense_crf.changed_kernels(p)) == "bilateral_rgb=20 normalization=row"
    assert dense_crf.kernel_text({"bilateral_xy": 2.5}, assign="", between="-") == "bilateral_xy2.5"


@pytest.mark.parametrize("setting,value", [("bilateral_xy", 8.0), ("bilateral_rgb", 60.0), ("spatial_xy", 1.0),
                                           ("normalization", "none"), ("normalization", "row")])
def test_each_kernel_setting_changes_the_answer(setting, value):
    """Every setting reaches the computation: changed alone, the probabilities differ from the defaults' answer."""
    g = torch.Generator().manual_seed(0)  # an unsure network on a noisy image: every message matters
    image = torch.randint(0, 256, (1, 3, 20, 20), generator=g, dtype=torch.uint8)
    probs = torch.softmax(0.5 * torch.randn(1, 3, 20, 20, generator=g), 1)
    default = crf_probs(probs, image, 1)
    other = crf_probs(probs, image, dense_crf.crf_params(1, {setting: value}))
    assert (other - default).abs().max() > 1e-2, setting


def test_no_iterations_return_the_probabilities_untouched_even_above_the_crfs_size(monkeypatch):
    monkeypatch.setattr(dense_crf, "MAX_PIXELS", 16 * 16)  # the resizing would move them
    image, probs, _ = two_halves(40, 40, seed=1)
    assert crf_probs(probs, image, dense_crf.CRFParams(iterations=0)) is probs
    assert crf_probs(probs, image, 0) is probs


def test_kernel_widths_too_narrow_for_float32_and_negative_zero_are_settled_at_the_door():
    with pytest.raises(ValueError, match=r"dense CRF bilateral_rgb = 1e-20; expected a finite number >= 0.001"):
        dense_crf.crf_params(5, {"bilateral_rgb": 1e-20})
    p = dense_crf.crf_params(5, {"bilateral_weight": -0.0, "bilateral_xy": 20.0000001})
    assert str(p.bilateral_weight) == "0.0" and dense_crf.kernel_text(dense_crf.changed_kernels(p), "", "-") == \
        "bilateral_weight0-bilateral_xy20.0000001"


def test_the_configs_kernel_keys_are_the_crfs_settings():
    import dataclasses

    from dml_csr.config import ConfigError, CRFKernelConfig, load_config
    from dml_csr.conventions import CRF_SETTING_RANGES
    assert tuple(f.name for f in dataclasses.fields(CRFKernelConfig)) == dense_crf.KERNEL_SETTINGS
    assert set(CRF_SETTING_RANGES) == set(dense_crf.KERNEL_SETTINGS) - {"normalization"}
    base = ["data.dataset=synthetic", "data.root=unused"]
    with pytest.raises(ConfigError, match=r"'eval.crf_kernels.bilateral_xy' = 0.0 is out of range; expected between "
                                          r"0.001 and"):
        load_config(None, base + ["eval.crf_kernels.bilateral_xy=0"])
    assert load_config(None, base + ["eval.crf_kernels={bilateral_rgb: 20}"]).eval.crf_kernels.bilateral_rgb == 20
