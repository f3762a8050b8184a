"""The shared conventions: bilinear resizing with aligned corners, identity at the same size and under tracing."""
import warnings

import torch

from dml_csr.conventions import resize_bilinear


def test_resize_bilinear_aligns_corners():
    logits = torch.randn(2, 3, 5, 7)
    up = resize_bilinear(logits, (17, 25))
    assert up.shape == (2, 3, 17, 25)
    # align_corners=True: the corners are the original corner values, the centre line is an exact average
    torch.testing.assert_close(up[..., 0, 0], logits[..., 0, 0])
    torch.testing.assert_close(up[..., -1, -1], logits[..., -1, -1])
    torch.testing.assert_close(up[..., 0, 12], logits[..., 0, 3])
    torch.testing.assert_close(up[..., 2, 0], (logits[..., 0, 0] + logits[..., 1, 0]) / 2)
    same = torch.randn(1, 2, 9, 9)
    assert resize_bilinear(same, (9, 9)) is same  # no copy at the same size


def test_resize_bilinear_stays_dynamic_when_traced():
    """Traced at a size where the input already has the target size, the graph still resizes other sizes."""
    def f(x, y):
        return resize_bilinear(x, y.shape[-2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(f, (torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)))
    x, y = torch.randn(1, 1, 3, 5), torch.randn(1, 1, 6, 10)
    assert traced(x, y).shape == (1, 1, 6, 10)
    torch.testing.assert_close(traced(x, y), resize_bilinear(x, (6, 10)))
