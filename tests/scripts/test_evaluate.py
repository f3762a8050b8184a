"""scripts/evaluate.py end to end on a tiny checkpoint and synthetic faces: protocol record, scores consistent with
the pooled confusion, re-scoring the saved predictions without a model, and the error paths."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest
from helpers import ROOT
from helpers.scripts import load_script, run_script
from helpers.tiny_checkpoint import write_config, write_tiny_checkpoint

from dml_csr.data.dataset import read_label, read_split_list
from dml_csr.data.synthetic import write_dataset
from dml_csr.evaluation.metrics import scores_from_confusion

CONFIG = os.path.join(ROOT, "configs", "synthetic_rnn_g.yaml")


def run(*args):
    return run_script("evaluate", "--no-progress", *args)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval")
    root = str(tmp / "data")
    write_dataset(root, {"test": 3}, size=(56, 72))  # not the network's 64x64: the inverse mapping matters
    cfg = write_config(str(tmp / "tiny.yaml"), root)
    ckpt = write_tiny_checkpoint(str(tmp / "run" / "best.pt"))
    return tmp, root, cfg, ckpt


def test_checkpoint_scores_protocol_and_rescoring(setup):
    tmp, root, cfg, ckpt = setup
    out = str(tmp / "out")
    r = run("--config", cfg, "--checkpoint", ckpt, "--split", "test", "--flip", "--scales", "0.75,1",
            "--out", out, "--save-predictions")
    assert r.returncode == 0, r.stderr
    assert "background included" in r.stdout and "skin" in r.stdout
    rec = json.load(open(os.path.join(out, "metrics.json")))
    proto = rec["protocol"]
    assert proto["flip"] is True and proto["scales"] == [0.75, 1.0] and proto["split"] == "test"
    assert proto["resolution"]["network_input"] == [64, 64] and "original" in proto["resolution"]["scored_at"]
    import hashlib
    assert proto["checkpoint_sha256"] == hashlib.sha256(open(ckpt, "rb").read()).hexdigest()
    assert proto["miou_includes_background"] is True and proto["classes"][0] == "background"
    assert proto["dataset_root"] == os.path.abspath(root) and proto["num_samples"] == 3
    # the confusion matrix counts every scored pixel of the original label maps
    mat = np.array(rec["confusion"])
    labels = [read_label(lp) for _, _, lp in read_split_list(root, "test")]
    assert mat.sum() == sum(int((lab != 255).sum()) for lab in labels)
    for k, n in enumerate(mat.sum(1)):
        assert n == sum(int((lab == k).sum()) for lab in labels)
    again = scores_from_confusion(mat, proto["classes"], {"overall": [2, 3, 4, 5, 6, 7, 8, 9]})
    assert rec["scores"]["miou"] == pytest.approx(again["miou"])
    assert rec["scores"]["groups"]["overall"] == pytest.approx(again["groups"]["overall"])
    # the saved predictions are at the original resolution and score the same without a model
    names = [n for n, _, _ in read_split_list(root, "test")]
    from dml_csr.data.labels import get_spec

    pal = get_spec("synthetic").palette
    for n, lab in zip(names, labels):
        pred = read_label(os.path.join(out, "labels", f"{n}.png"))
        assert pred.shape == lab.shape
        # the colour PNG: photo | truth | prediction, 4 white pixels apart
        colour = cv2.imread(os.path.join(out, "colour", f"{n}.png"))[..., ::-1]
        h, w = lab.shape
        assert colour.shape == (h, 3 * w + 8, 3)
        photo = cv2.imread(os.path.join(root, "test", "images", f"{n}.jpg"))
        assert np.array_equal(colour[:, :w], photo[..., ::-1])
        assert np.array_equal(colour[:, w + 4: 2 * w + 4][lab != 255], pal[lab[lab != 255]])
        assert np.array_equal(colour[:, 2 * w + 8:], pal[pred])
    out2 = str(tmp / "out2")
    r2 = run("--predictions", os.path.join(out, "labels"), "--data", root, "--dataset", "synthetic",
             "--split", "test", "--out", out2)
    assert r2.returncode == 0, r2.stderr
    rec2 = json.load(open(os.path.join(out2, "metrics.json")))
    assert rec2["confusion"] == rec["confusion"] and rec2["protocol"]["source"] == "predictions"


def test_a_prediction_that_cannot_be_written_stops_with_its_path(setup):
    """cv2.imwrite returns False instead of raising: a lost prediction used to go unnoticed (exit 0)."""
    tmp, root, cfg, ckpt = setup
    out = tmp / "blocked"
    name = read_split_list(root, "test")[0][0]
    (out / "labels" / f"{name}.png").mkdir(parents=True)  # a folder where the label PNG goes
    r = run("--config", cfg, "--checkpoint", ckpt, "--split", "test", "--out", str(out), "--save-predictions")
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error: could not write") and f"{name}.png" in err
    assert not [n for n in os.listdir(out / "labels") if n.startswith(".tmp-")]


def test_class_count_mismatch_names_both_numbers_and_files(setup):
    tmp, root, cfg, _ = setup
    ckpt19 = write_tiny_checkpoint(str(tmp / "c19" / "best.pt"), dataset="synthetic19")
    r = run("--config", cfg, "--checkpoint", ckpt19)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert "19 classes" in err and "has 11" in err and ckpt19 in err and cfg in err


def test_missing_and_wrong_size_predictions(setup, tmp_path):
    _, root, _, _ = setup
    names = [n for n, _, _ in read_split_list(root, "test")]
    import cv2
    cv2.imwrite(str(tmp_path / f"{names[0]}.png"), np.zeros((56, 72), np.uint8))
    r = run("--predictions", str(tmp_path), "--data", root, "--dataset", "synthetic", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "2 of 3" in r.stderr and names[1] in r.stderr
    for n in names[1:]:
        cv2.imwrite(str(tmp_path / f"{n}.png"), np.zeros((10, 10), np.uint8))
    r = run("--predictions", str(tmp_path), "--data", root, "--dataset", "synthetic", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "original resolution" in r.stderr and names[1] in r.stderr


def test_usage_errors(capsys):
    script = load_script("evaluate")
    with pytest.raises(SystemExit) as e:
        script.parse_args(["--checkpoint", "x.pt"])
    assert e.value.code == 2 and "--config" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args(["--predictions", "d"])
    assert "--data and --dataset" in capsys.readouterr().err
    with pytest.raises(ValueError, match="0.75,1,1.25"):
        script.parse_scales("0.75;1")


def test_evaluate_script_scores_the_checkpoint_rnn_g(rnn_g_run):
    tmp, _, sets, best = rnn_g_run
    out = tmp / "eval"
    r = run_script("evaluate", "--config", CONFIG, "--set", *sets, "--checkpoint", best, "--split", "test",
                   "--out", str(out), "--no-progress", "--flip")
    assert r.returncode == 0, r.stderr
    rec = json.load(open(out / "metrics.json"))
    assert rec["protocol"]["model"] == "rnn_g" and rec["protocol"]["num_samples"] == 3
    mat = np.array(rec["confusion"])
    assert mat.shape == (11, 11) and mat.sum() == 3 * 64 * 64
    assert 0.0 <= rec["scores"]["pixel_accuracy"] <= 1.0 and "mean F1" in r.stdout


# ---------------------------------------------------------------- prediction folders scored against mask folders

def _write_maps(folder, maps: dict) -> None:
    import cv2
    os.makedirs(folder, exist_ok=True)
    for name, arr in maps.items():
        assert cv2.imwrite(os.path.join(folder, f"{name}.png"), np.asarray(arr, np.uint8))


def _score(tmp_path, preds: dict, masks: dict, *extra):
    _write_maps(str(tmp_path / "pred"), preds)
    _write_maps(str(tmp_path / "gt"), masks)
    out = tmp_path / "out"
    r = run("--predictions", str(tmp_path / "pred"), "--masks", str(tmp_path / "gt"), "--out", str(out), *extra)
    return r, (json.load(open(out / "metrics.json")) if r.returncode == 0 else None)


def test_masks_folder_pools_one_confusion_counted_by_hand(tmp_path):
    # lfw_pl: 0 background, 1 skin, 2 hair; the 255 of b is ignored
    preds = {"a": [[0, 1, 2], [2, 1, 1]], "b": [[1, 0], [0, 2]]}
    masks = {"a": [[0, 1, 1], [2, 2, 1]], "b": [[1, 1], [0, 255]]}
    r, rec = _score(tmp_path, preds, masks, "--dataset", "lfw_pl")
    assert r.returncode == 0, r.stderr
    # rows = ground truth: a gives (0,0) (1,1) (1,2) (2,2) (2,1) (1,1); b gives (1,1) (1,0) (0,0)
    assert rec["confusion"] == [[2, 0, 0], [1, 3, 1], [0, 1, 1]]
    s = rec["scores"]
    assert s["per_class"]["skin"]["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    assert s["per_class"]["hair"]["f1"] == pytest.approx(0.5)
    assert s["mean_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert s["miou"] == pytest.approx((2 / 3 + 3 / 6 + 1 / 3) / 3)
    assert s["pixel_accuracy"] == pytest.approx(6 / 9)
    proto = rec["protocol"]
    assert proto["masks"] == str(tmp_path / "gt") and proto["dataset_root"] is None and proto["split"] is None
    assert proto["num_samples"] == 2 and proto["class_mapping"] is None


def test_masks_and_images_must_pair_by_stem(tmp_path):
    import cv2
    _write_maps(str(tmp_path / "pred"), {"a": [[0, 1]], "c": [[0, 1]]})
    _write_maps(str(tmp_path / "gt"), {"a": [[0, 1]], "d": [[1, 1]]})
    args = ["--predictions", str(tmp_path / "pred"), "--masks", str(tmp_path / "gt"), "--dataset", "lfw_pl",
            "--out", str(tmp_path / "out")]
    r = run(*args)
    err = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "1 prediction(s) without" in err and str(tmp_path / "pred" / "c.png") in err
    os.remove(tmp_path / "pred" / "c.png")
    r = run(*args)
    err = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "1 mask(s) without" in err and str(tmp_path / "gt" / "d.png") in err
    os.remove(tmp_path / "gt" / "d.png")
    (tmp_path / "img").mkdir()
    r = run(*args, "--images", str(tmp_path / "img"))
    assert r.returncode == 2 and str(tmp_path / "img") in r.stderr  # an empty images folder
    cv2.imwrite(str(tmp_path / "img" / "a.jpg"), np.zeros((3, 2, 3), np.uint8))
    r = run(*args, "--images", str(tmp_path / "img"))
    err = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "a.jpg' is 2x3 (WxH)" in err and "a.png' is 2x1" in err
    cv2.imwrite(str(tmp_path / "img" / "a.jpg"), np.zeros((1, 2, 3), np.uint8))
    r = run(*args, "--images", str(tmp_path / "img"))
    assert r.returncode == 0, r.stderr
    assert json.load(open(tmp_path / "out" / "metrics.json"))["protocol"]["images"] == str(tmp_path / "img")


@pytest.mark.parametrize("value", [11, 255])
def test_prediction_values_beyond_the_classes_are_refused(setup, tmp_path, value):
    """Prediction PNGs carry class indices only: 255 would drop a pixel from the score, so it is refused too."""
    _, root, _, _ = setup
    import cv2
    names = [n for n, _, _ in read_split_list(root, "test")]
    for n in names:
        cv2.imwrite(str(tmp_path / f"{n}.png"), np.zeros((56, 72), np.uint8))
    bad = np.zeros((56, 72), np.uint8)
    bad[3, 4] = value
    cv2.imwrite(str(tmp_path / f"{names[1]}.png"), bad)
    r = run("--predictions", str(tmp_path), "--data", root, "--dataset", "synthetic", "--out", str(tmp_path / "o"))
    err = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert f"'{tmp_path / names[1]}.png' has value {value}" in err and "'synthetic' has 11 classes" in err


def test_pred_dataset_maps_helen_predictions_onto_celebamask_by_name(tmp_path):
    # Helen order: 1 skin 2 left_brow 4 left_eye 5 right_eye 6 nose 8 inner_mouth 10 hair
    # CelebAMask-HQ order: 2 nose 3 eye_g 4 l_eye 5 r_eye 6 l_brow 10 mouth 13 hair 17 neck
    preds = {"a": [[2, 10, 8], [1, 0, 6]], "b": [[4, 5]]}
    masks = {"a": [[6, 13, 10], [17, 0, 2]], "b": [[5, 3]]}
    r, rec = _score(tmp_path, preds, masks, "--dataset", "celebamask_hq", "--pred-dataset", "helen")
    assert r.returncode == 0, r.stderr
    mat = np.array(rec["confusion"])
    # Helen has no neck nor eye_g: those ground-truth pixels are ignored (the skin predicted on the neck too)
    assert mat.sum() == 6 and mat[17].sum() == 0 and mat[3].sum() == 0 and mat[:, 1].sum() == 0
    assert [mat[k, k] for k in (0, 2, 6, 10, 13)] == [1, 1, 1, 1, 1] and mat[5, 4] == 1
    s = rec["scores"]
    assert s["per_class"]["neck"]["f1"] != s["per_class"]["neck"]["f1"]  # NaN: out of the means
    assert s["per_class"]["r_eye"]["f1"] == 0.0 and s["per_class"]["l_eye"]["f1"] == 0.0
    assert s["mean_f1"] == pytest.approx(4 / 6) and s["pixel_accuracy"] == pytest.approx(5 / 6)
    m = rec["protocol"]["class_mapping"]
    assert m["pred_dataset"] == "helen" and m["mapped"]["inner_mouth"] == "mouth" and m["to_background"] == []
    assert m["ignored_ground_truth"] == ["eye_g", "l_ear", "r_ear", "hat", "ear_r", "neck_l", "neck", "cloth"]


def test_pred_dataset_sends_classes_without_counterpart_to_background(tmp_path):
    # CelebAMask-HQ predictions (18 cloth, 14 hat, 6 l_brow) scored on Helen's order (10 hair, 2 left_brow)
    r, rec = _score(tmp_path, {"a": [[18, 14, 6]]}, {"a": [[0, 10, 2]]}, "--dataset", "helen",
                    "--pred-dataset", "celebamask_hq")
    assert r.returncode == 0, r.stderr
    mat = np.array(rec["confusion"])
    assert mat.sum() == 3 and mat[0, 0] == 1 and mat[10, 0] == 1 and mat[2, 2] == 1
    assert rec["scores"]["per_class"]["hair"]["f1"] == 0.0
    assert "cloth" in rec["protocol"]["class_mapping"]["to_background"]


def test_pred_dataset_bounds_the_values_by_the_predictions_dataset(tmp_path):
    """11 is a valid CelebAMask-HQ class but not a Helen one: the predictions' dataset decides."""
    r, _ = _score(tmp_path, {"a": [[11, 0]]}, {"a": [[0, 0]]}, "--dataset", "celebamask_hq", "--pred-dataset", "helen")
    err = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and "a.png' has value 11" in err and "'helen' has 11 classes" in err


def test_smooth_paste_differs_from_nearest_and_is_recorded(setup):
    tmp, root, cfg, ckpt = setup
    labels = {}
    for paste in ("nearest", "smooth", "logits"):
        out = tmp / f"paste_{paste}"
        extra = ["--paste", paste] if paste != "nearest" else []  # nearest is the default
        r = run("--config", cfg, "--checkpoint", ckpt, "--split", "test", "--out", str(out), "--save-predictions",
                *extra)
        assert r.returncode == 0, r.stderr
        proto = json.load(open(out / "metrics.json"))["protocol"]
        assert proto["paste"] == paste and ("bilinear" in proto["resolution"]["scored_at"]) == (paste != "nearest")
        assert ("log-probabilities" in proto["resolution"]["scored_at"]) == (paste == "logits")
        labels[paste] = [read_label(str(out / "labels" / f"{n}.png")) for n, _, _ in read_split_list(root, "test")]
    near, smooth, logits = (np.stack(labels[p]) for p in ("nearest", "smooth", "logits"))
    differ = float((near != smooth).mean())
    assert 0 < differ < 0.2, differ  # the same model: mostly the same labels, but not pixel for pixel
    assert float((logits != smooth).mean()) < differ  # a few pixels apart here; tests/evaluation checks why


def test_new_option_usage_errors(capsys):
    script = load_script("evaluate")
    cases = [(["--predictions", "p", "--data", "d", "--masks", "m", "--dataset", "helen"], "one of the two"),
             (["--predictions", "p", "--data", "d", "--images", "i", "--dataset", "helen"], "--images goes with"),
             (["--predictions", "p", "--masks", "m", "--dataset", "helen", "--paste", "smooth"], "--paste"),
             (["--config", "c", "--checkpoint", "x", "--pred-dataset", "helen"], "score a --predictions"),
             (["--config", "c", "--checkpoint", "x", "--paste", "linear"], "invalid choice")]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as e:
            script.parse_args(argv)
        assert e.value.code == 2 and expected in capsys.readouterr().err, argv


def test_a_registry_name_as_checkpoint(setup, tmp_path, monkeypatch):
    """--checkpoint NAME: the cached, verified file is scored, its hash recorded with the name, and the default
    output goes under runs/NAME/ (not into the cache); an uncached name offline fails in one line."""
    import hashlib
    import shutil

    from dml_csr import hub

    tmp, root, cfg, ckpt = setup
    body = open(ckpt, "rb").read()
    monkeypatch.setenv("DML_CSR_HOME", str(tmp_path / "cache"))
    monkeypatch.setitem(hub.WEIGHTS, "tiny_eval", hub.Weights("tiny_eval", "tiny_eval.pt", "dml_csr", "test",
                                                             url="http://127.0.0.1:9/tiny_eval.pt", size=len(body),
                                                             sha256=hashlib.sha256(body).hexdigest()))
    r = run("--config", cfg, "--checkpoint", "tiny_eval", "--split", "test")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "tiny_eval" in r.stderr
    os.makedirs(os.path.dirname(hub.weights_path("tiny_eval")), exist_ok=True)
    shutil.copy(ckpt, hub.weights_path("tiny_eval"))
    monkeypatch.chdir(tmp_path)
    r = run("--config", cfg, "--checkpoint", "tiny_eval", "--split", "test")
    assert r.returncode == 0, r.stderr
    proto = json.load(open(tmp_path / "runs" / "tiny_eval" / "eval_test" / "metrics.json"))["protocol"]
    assert proto["checkpoint_name"] == "tiny_eval" and proto["checkpoint_sha256"] == hashlib.sha256(body).hexdigest()


def test_evaluations_with_other_options_never_replace_each_other(setup):
    """Without --out the folder is named after the split and the options that change the numbers; an existing
    metrics.json is replaced only with --overwrite."""
    tmp, root, cfg, ckpt = setup
    base = ["--config", cfg, "--checkpoint", ckpt, "--split", "test"]
    first = run(*base)
    second = run(*base, "--flip", "--scales", "0.75,1,1.25", "--paste", "smooth")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    folder = os.path.dirname(ckpt)
    plain = os.path.join(folder, "eval_test", "metrics.json")
    tested = os.path.join(folder, "eval_test_flip_scales0.75-1-1.25_smooth", "metrics.json")
    assert json.load(open(plain))["protocol"]["flip"] is False
    assert json.load(open(tested))["protocol"]["scales"] == [0.75, 1.0, 1.25]
    before = os.stat(plain).st_mtime_ns
    again = run(*base)
    assert again.returncode == 2 and again.stderr.strip() == (
        f"error: '{plain}' exists (an earlier evaluation); pass --overwrite to replace it, or --out to write elsewhere")
    assert os.stat(plain).st_mtime_ns == before
    assert run(*base, "--overwrite").returncode == 0 and os.stat(plain).st_mtime_ns > before


def test_unreadable_predictions_and_masks_are_named_and_the_others_scored(tmp_path):
    """A 0-byte prediction, a 0-byte mask and a prediction that is a symbolic link loop cost their own samples only:
    each is named in one line, the rest is scored (the confusion counts sample d alone), metrics.json lists them
    and the exit status is 1."""
    _write_maps(str(tmp_path / "pred"), {"a": [[1, 2]], "b": [[1, 1]], "d": [[2, 2]]})
    _write_maps(str(tmp_path / "gt"), {"a": [[1, 2]], "b": [[1, 1]], "c": [[0, 0]], "d": [[2, 0]]})
    (tmp_path / "pred" / "a.png").write_bytes(b"")
    (tmp_path / "gt" / "b.png").write_bytes(b"")
    os.symlink("c.png", tmp_path / "pred" / "c.png")
    out = tmp_path / "out"
    r = run("--predictions", str(tmp_path / "pred"), "--masks", str(tmp_path / "gt"), "--dataset", "synthetic",
            "--out", str(out))
    assert r.returncode == 1, r.stderr
    assert "3 sample(s) could not be read and were left out of the scores" in r.stderr
    for line in (f"label file '{tmp_path / 'pred' / 'a.png'}' is empty (0 bytes)",
                 f"label file '{tmp_path / 'gt' / 'b.png'}' is empty (0 bytes)",
                 f"label file '{tmp_path / 'pred' / 'c.png'}' is a symbolic link loop"):
        assert f"  {line}\n" in r.stderr
    assert "Traceback" not in r.stderr
    rec = json.load(open(out / "metrics.json"))
    assert [s["name"] for s in rec["protocol"]["skipped"]] == ["a", "b", "c"] and rec["protocol"]["num_samples"] == 1
    mat = np.array(rec["confusion"])
    assert mat.sum() == 2 and mat[2, 2] == 1 and mat[0, 2] == 1


@pytest.mark.parametrize("workers", [0, 2])
def test_a_model_scores_the_readable_samples_and_names_the_others(setup, tmp_path, workers):
    """Scoring a checkpoint on a split with a 0-byte photo and a 0-byte label among good samples: both are named in
    one line each, in the split's order (read on ``data.workers`` threads first), the good one is scored as it is
    alone (the same confusion as a split of that sample only, none scored twice in place of another), metrics.json
    lists them, and the exit status is 1."""
    _, root, cfg, ckpt = setup
    import shutil

    bad = str(tmp_path / "data")
    shutil.copytree(root, bad)
    names = [n for n, _, _ in read_split_list(bad, "test")]
    (tmp_path / "data" / "test" / "images" / f"{names[0]}.jpg").write_bytes(b"")
    (tmp_path / "data" / "test" / "labels" / f"{names[1]}.png").write_bytes(b"")
    r = run("--config", cfg, "--set", f"data.root={bad}", f"data.workers={workers}", "--checkpoint", ckpt, "--split",
            "test", "--out", str(tmp_path / "out"))
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-3:] == ["2 sample(s) could not be read and were left out of the scores:",
                          f"  image file '{bad}/test/images/{names[0]}.jpg' is empty (0 bytes)",
                          f"  label file '{bad}/test/labels/{names[1]}.png' is empty (0 bytes)"], r.stderr
    rec = json.load(open(tmp_path / "out" / "metrics.json"))
    assert [s["name"] for s in rec["protocol"]["skipped"]] == names[:2] and rec["protocol"]["num_samples"] == 1
    alone = str(tmp_path / "alone")
    shutil.copytree(root, alone)
    (tmp_path / "alone" / "test_list.txt").write_text(
        [line for line in open(os.path.join(root, "test_list.txt")) if names[2] in line][0])
    r = run("--config", cfg, "--set", f"data.root={alone}", "--checkpoint", ckpt, "--split", "test", "--out",
            str(tmp_path / "out_alone"))
    assert r.returncode == 0, r.stderr
    assert json.load(open(tmp_path / "out_alone" / "metrics.json"))["confusion"] == rec["confusion"]


def test_with_skip_bad_a_sample_of_mismatched_sizes_is_left_out_too(setup, tmp_path):
    _, root, cfg, ckpt = setup
    import shutil

    bad = str(tmp_path / "data")
    shutil.copytree(root, bad)
    name = read_split_list(bad, "test")[0][0]
    cv2.imwrite(os.path.join(bad, "test", "labels", f"{name}.png"), np.zeros((10, 10), np.uint8))
    r = run("--config", cfg, "--set", f"data.root={bad}", "--checkpoint", ckpt, "--split", "test", "--out",
            str(tmp_path / "strict"))
    assert r.returncode == 2 and "size mismatch" in r.stderr.strip().splitlines()[-1], r.stderr
    r = run("--config", cfg, "--set", f"data.root={bad}", "data.skip_bad=true", "--checkpoint", ckpt, "--split",
            "test", "--out", str(tmp_path / "lenient"))
    assert r.returncode == 1 and "size mismatch" in r.stderr.strip().splitlines()[-1], r.stderr
    rec = json.load(open(tmp_path / "lenient" / "metrics.json"))
    assert [s["name"] for s in rec["protocol"]["skipped"]] == [name] and rec["protocol"]["num_samples"] == 2


def test_nothing_to_score_is_one_line_not_nan_scores(setup, tmp_path):
    _, root, _, _ = setup
    empty = tmp_path / "root"
    (empty / "test").mkdir(parents=True)
    (empty / "test_list.txt").write_text("")
    (tmp_path / "pred").mkdir()
    r = run("--predictions", str(tmp_path / "pred"), "--data", str(empty), "--dataset", "synthetic")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"error: split 'test' of '{empty}' lists no sample (test_list.txt is empty); nothing to score"]
    names = [n for n, _, _ in read_split_list(root, "test")]
    for n in names:
        (tmp_path / "pred" / f"{n}.png").write_bytes(b"")
    r = run("--predictions", str(tmp_path / "pred"), "--data", root, "--dataset", "synthetic", "--out",
            str(tmp_path / "o"))
    err = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 2 and err.startswith(f"error: none of the {len(names)} samples could be read; first: ")
    assert not (tmp_path / "o" / "metrics.json").exists()


@pytest.mark.parametrize("scales", ["inf", "nan", "0", "1,-1", "100"])
def test_scales_that_are_not_finite_or_out_of_range_are_one_line(setup, scales):
    _, _, cfg, ckpt = setup
    r = run("--config", cfg, "--checkpoint", ckpt, "--scales", scales)
    assert r.returncode == 2 and r.stderr.startswith(f"error: --scales = '{scales}'; expected comma-separated "
                                                     "numbers, each a finite number > 0 and <= 8")
    assert r.stderr.count("\n") == 1


def test_crf_scores_liu_et_al_s_cnn_crf_in_its_own_folder(setup):
    """--crf N (or eval.crf_iterations) runs the dense CRF on each image's probabilities before they are mapped back:
    its own default folder, the CRF's settings in metrics.json (the kernels pydensecrf's documentation suggests), and
    other labels than without it; out of range is one line."""
    tmp, root, cfg, ckpt = setup
    r = run("--config", cfg, "--checkpoint", ckpt, "--split", "test", "--crf", "5")
    assert r.returncode == 0, r.stderr
    folder = os.path.join(os.path.dirname(ckpt), "eval_test_crf5")
    rec = json.load(open(os.path.join(folder, "metrics.json")))
    assert "scales [1.0], --crf 5" in r.stdout
    assert rec["protocol"]["crf"] == {"iterations": 5, "bilateral_weight": 10.0, "bilateral_xy": 80.0,
                                      "bilateral_rgb": 13.0, "spatial_weight": 3.0, "spatial_xy": 3.0,
                                      "normalization": "symmetric"}
    r = run("--config", cfg, "--set", "eval.crf_iterations=0", "--checkpoint", ckpt, "--split", "test", "--out",
            str(tmp / "no_crf"))
    plain = json.load(open(tmp / "no_crf" / "metrics.json"))
    assert plain["protocol"]["crf"] is None and plain["confusion"] != rec["confusion"]
    assert np.array(plain["confusion"]).sum() == np.array(rec["confusion"]).sum()  # the same pixels, other labels
    # --crf-kernel: other kernels, in the folder's name, metrics.json and the protocol line; with both weights 0
    # no message moves the probabilities, and the scores are those without the CRF
    r = run("--config", cfg, "--checkpoint", ckpt, "--split", "test", "--crf", "1", "--crf-kernel",
            "bilateral_weight=0", "spatial_weight=0", "--crf-kernel", "normalization=row")  # the flag repeats
    assert r.returncode == 0, r.stderr
    off = json.load(open(os.path.join(os.path.dirname(ckpt), "eval_test_crf1_bilateral_weight0-spatial_weight0-"
                                      "normalizationrow", "metrics.json")))
    assert off["protocol"]["crf"] == {**rec["protocol"]["crf"], "iterations": 1, "bilateral_weight": 0.0,
                                      "spatial_weight": 0.0, "normalization": "row"}
    assert "--crf 1 --crf-kernel bilateral_weight=0 spatial_weight=0 normalization=row" in r.stdout
    assert off["confusion"] == plain["confusion"]
    # the config's kernels (eval.crf_kernels), which --crf-kernel overrides, and which the CRF off ignores
    r = run("--config", cfg, "--set", "eval.crf_kernels.bilateral_weight=0", "eval.crf_kernels.spatial_weight=7",
            "--checkpoint", ckpt, "--split", "test", "--crf", "1", "--crf-kernel", "spatial_weight=0", "--out",
            str(tmp / "config_kernels"))
    assert r.returncode == 0, r.stderr
    from_config = json.load(open(tmp / "config_kernels" / "metrics.json"))
    assert from_config["protocol"]["crf"]["bilateral_weight"] == from_config["protocol"]["crf"]["spatial_weight"] == 0
    assert from_config["confusion"] == plain["confusion"]
    r = run("--config", cfg, "--set", "eval.crf_kernels.bilateral_weight=0", "--checkpoint", ckpt, "--split", "test",
            "--crf", "0", "--out", str(tmp / "crf_off"))
    assert r.returncode == 0 and json.load(open(tmp / "crf_off" / "metrics.json"))["protocol"]["crf"] is None
    r = run("--config", cfg, "--checkpoint", ckpt, "--crf-kernel", "bilateral_rgb=20")  # the config's CRF is off
    assert r.returncode == 2 and r.stderr.strip() == ("error: CRF kernel settings {'bilateral_rgb': 20.0} need the "
                                                      "CRF on: --crf N (or eval.crf_iterations)"), r.stderr
    r = run("--config", cfg, "--checkpoint", ckpt, "--crf", "2", "--crf-kernel", "theta_a=3")
    assert r.returncode == 2 and "argument --crf-kernel: dense CRF setting 'theta_a' is unknown" in r.stderr
    r = run("--config", cfg, "--checkpoint", ckpt, "--crf", "2", "--crf-kernel", "bilateral_rgb=20", "--crf-kernel",
            "bilateral_rgb=30")  # the flag repeats; a setting does not
    assert r.returncode == 2 and "error: --crf-kernel sets bilateral_rgb twice (20.0 and 30.0); give each setting " \
        "once" in r.stderr, r.stderr
    r = run("--predictions", str(tmp), "--masks", str(tmp), "--dataset", "synthetic", "--crf", "5")
    assert r.returncode == 2 and "drop --checkpoint, --paste, --score-at, --align, --crf and --crf-kernel" in \
        r.stderr, r.stderr
    r = run("--config", cfg, "--checkpoint", ckpt, "--split", "test", "--crf", "51")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].endswith(
        "argument --crf: '51'; expected a whole number >= 0 and <= 50"), r.stderr
