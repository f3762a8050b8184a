"""Drawing label maps: colours from the registry, overlays that show skin on light and dark skin, RGB saved as RGB."""
import cv2
import numpy as np
import pytest

from dml_csr.data.drawing import ALPHA, colorize, overlay, palette_for, save_rgb, side_by_side
from dml_csr.data.labels import get_spec


@pytest.mark.parametrize("dataset", ["helen", "lapa", "celebamask_hq"])
def test_the_skin_overlay_shows_on_light_and_dark_skin(dataset):
    """Skin drawn in a skin tone vanishes on light skin: the default overlay must move both tones far (an RGB
    distance of at least 90 of 441)."""
    palette = palette_for(dataset, get_spec(dataset).num_classes)
    for tone in ((230, 190, 170), (90, 60, 45)):  # light and dark skin, RGB
        photo = np.full((2, 2, 3), tone, np.uint8)
        out = overlay(photo, np.ones((2, 2), np.uint8), palette)
        assert np.linalg.norm(out[0, 0].astype(float) - tone) >= 90, (dataset, tone)
    assert 0.5 <= ALPHA < 1


def test_colours_come_from_the_registry_and_unknown_datasets_get_fixed_ones():
    spec = get_spec("helen")
    np.testing.assert_array_equal(palette_for("helen", 11), spec.palette)
    other = palette_for("mine", 7)
    assert other.shape == (7, 3) and (other[0] == 0).all()
    np.testing.assert_array_equal(other, palette_for(None, 7))  # the same colours every time
    labels = np.array([[0, 1], [10, 255]], np.uint8)
    rgb = colorize(labels, spec.palette)
    np.testing.assert_array_equal(rgb[0, 1], spec.palette[1])
    np.testing.assert_array_equal(rgb[1, 1], [255, 255, 255])  # ignore is white


def test_rgb_pictures_are_saved_as_rgb(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 200  # red
    path = str(tmp_path / "red.png")
    save_rgb(path, rgb)
    np.testing.assert_array_equal(cv2.imread(path)[0, 0], [0, 0, 200])  # OpenCV reads BGR: red is last


def test_the_strip_shows_photo_truth_and_prediction_or_the_prediction_alone():
    pal = get_spec("helen").palette
    photo, truth, pred = np.full((3, 4, 3), 7, np.uint8), np.ones((3, 4), np.uint8), np.zeros((3, 4), np.uint8)
    strip = side_by_side(photo, truth, pred, pal, gap=2)
    assert strip.shape == (3, 4 * 3 + 2 * 2, 3)
    np.testing.assert_array_equal(strip[:, :4], photo)
    np.testing.assert_array_equal(strip[0, 6], pal[1][::-1])  # truth in BGR after the first gap
    assert side_by_side(None, None, pred, pal).shape == (3, 4, 3)
