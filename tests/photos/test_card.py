"""dml_csr.photos.card: the model card names the classes with their colours, the input convention, the data's
licence (non-commercial where the dataset says so), the test metrics with their protocol switches, how to load the
model and the citation."""
from __future__ import annotations

import pytest

from dml_csr.checkpoint import official_meta
from dml_csr.data.labels import get_spec
from dml_csr.photos.card import model_card

META = {"classes": list(get_spec("lapa").classes), "dataset": "lapa", "num_classes": 11, "channel_order": "RGB",
        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input_size": [128, 96], "model_name": "dml_csr",
        "crop": {"kind": "landmarks"}}
CONFIG = {"model": {"backbone": "resnet18", "output_stride": 16}}


def _record(split="test", flip=False, scales=(1.0,), paste="nearest", mean_f1=0.8657, overall=None, **switches) -> dict:
    scores = {"mean_f1": mean_f1, "miou": 0.7825, "miou_fg": 0.7611, "pixel_accuracy": 0.9543,
              "per_class": {c: {"f1": 0.5 + i / 100, "iou": 0.4, "pixels": 10} for i, c in enumerate(META["classes"])},
              "groups": {} if overall is None else {"overall": overall}}
    return {"protocol": {"split": split, "num_samples": 60, "flip": flip, "scales": list(scales), "paste": paste,
                         **switches}, "scores": scores}


def test_the_card_names_classes_input_licence_metrics_loading_and_citation():
    card = model_card(META, CONFIG, [_record(), _record(flip=True, scales=(0.75, 1.0), paste="smooth",
                                                        mean_f1=0.8817, overall=0.9, score_at="input",
                                                        align="landmarks", mean_f1_classes=["skin", "nose"])],
                      repo="someone/lapa-parser")
    assert card.startswith("---\nlibrary_name: dml_csr\nlicense: other\nlicense_name: dataset-terms\n"
                           "pipeline_tag: image-segmentation\n")
    palette = get_spec("lapa").palette
    for i, c in enumerate(META["classes"]):
        r, g, b = (int(v) for v in palette[i])
        assert f"| {i} | {c} | #{r:02x}{g:02x}{b:02x} ({r}, {g}, {b}) |" in card
    assert "input: 128x96 pixels, RGB channel order" in card
    assert "mean [0.5, 0.5, 0.5] and std [0.25, 0.25, 0.25]" in card
    assert "backbone resnet18, output stride 16" in card and "crop: `landmarks`" in card
    assert "LaPa (Liu et al., AAAI 2020): released for non-commercial research only" in card
    # the protocol switches of each record: the authors' defaults where an older metrics.json does not name them
    assert "| test | 60 | False | [1.0] | nearest | original | whole | off | 86.57 | 78.25 | 76.11 | 95.43 | n/a |" \
        in card
    assert "| test | 60 | True | [0.75, 1.0] | smooth | input | landmarks | off | 88.17 | 78.25 | 76.11 | 95.43 | " \
           "90.00 |" in card
    assert "background 50.00, skin 51.00" in card
    assert "Mean F1 over the classes declared for it: skin, nose" in card
    assert 'FaceParser.from_pretrained("hf://someone/lapa-parser")' in card
    assert "--checkpoint hf://someone/lapa-parser" in card
    assert "@inproceedings{zheng2022dmlcsr," in card and card.count("```") % 2 == 0


@pytest.mark.parametrize("dataset,licence,words", [
    ("celebamask_hq", "other", "non-commercial research and educational use only"),
    ("synthetic", "apache-2.0", "no third-party images or labels"),
    ("helen", "other", "Check the dataset's terms before any commercial use"),
    ("my_faces", "other", "dataset 'my_faces': its terms are not recorded here"),
])
def test_the_licence_follows_the_training_data(dataset, licence, words):
    card = model_card({**META, "dataset": dataset}, CONFIG)
    assert f"license: {licence}\n" in card and words in card
    assert "No metrics were recorded for this checkpoint" in card and "hf://OWNER/REPO" in card


def test_the_authors_weights_carry_their_terms():
    card = model_card(official_meta(19), {"model": {"backbone": "resnet101_deepstem", "output_stride": 8}})
    assert "license: other" in card and "CelebAMask-HQ" in card
    assert "Trained and released by the DML-CSR authors" in card and "input: 473x473 pixels, BGR channel order" in card


def test_a_model_trained_on_landmark_framed_faces_says_how_to_feed_it():
    crop = {"kind": "template", "points": [[0.6, 0.4], [0.4, 0.4], [0.5, 0.55], [0.6, 0.7], [0.4, 0.7]],
            "input_size": [128, 96], "align": "landmarks"}
    card = model_card({**META, "crop": crop}, CONFIG, [_record()])
    assert "crop: `template`, each face framed by its five landmarks onto the template in training" in card
    assert "`detect=True`" in card
    card = model_card({**META, "crop": crop}, CONFIG, [_record(mean_f1=0.5), _record(align="landmarks")])
    assert card.index("| whole | off | 50.00 |") > card.index("| landmarks | off | 86.57 |")  # its own framing first
    measured = {k: v for k, v in crop.items() if k != "align"}  # a template measured on whole-image crops
    assert "framed by its five landmarks" not in model_card({**META, "crop": measured}, CONFIG, [_record()])


def test_each_row_names_its_crf_and_the_test_split_comes_first():
    """A CRF run is told from a plain one, with the kernel settings it changed; a validation run is listed after the
    test split's rows, and the per-class F1 is the first (a test) row's."""
    crf = {"iterations": 5, "bilateral_weight": 10.0, "bilateral_xy": 80.0, "bilateral_rgb": 20.0,
           "spatial_weight": 3.0, "spatial_xy": 3.0, "normalization": "symmetric"}  # as metrics.json records it
    val = _record(split="val", mean_f1=0.5, crf=crf)
    val["scores"]["per_class"] = {c: {"f1": 0.1, "iou": 0.1, "pixels": 1} for c in META["classes"]}
    card = model_card(META, CONFIG, [val, _record(crf={**crf, "bilateral_rgb": 13.0}), _record()])
    rows = [line for line in card.splitlines() if line.startswith(("| test |", "| val |"))]
    assert [r.split(" | ")[7] for r in rows] == ["5 steps", "off", "5 steps (bilateral_rgb=20)"]
    assert rows[2].startswith("| val |") and "background 50.00" in card and "## Metrics" in card
