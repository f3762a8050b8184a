"""Raw dataset layouts as their owners ship them, written small under a test's tmp_path, and what reads the result."""
import os
import subprocess
import sys

import cv2
import numpy as np

from dml_csr.data.dataset import FaceParsingDataset
from dml_csr.data.labels import get_spec
from dml_csr.data.transforms import TrainTransform

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def img(h, w, seed):
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)


def run_cli(script, *args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", script), *args], capture_output=True,
                          text=True, env=env, timeout=120)


def load_all(root, dataset):
    spec = get_spec(dataset)
    for split in ("train", "val", "test"):
        ds = FaceParsingDataset(root, split, spec, TrainTransform((24, 24), spec))
        for i in range(len(ds)):
            s = ds[i]
            assert s["image"].shape == (3, 24, 24)


def write_celebamask(raw, orig=(100, 170_000, 190_000, 5)):
    os.makedirs(os.path.join(raw, "CelebA-HQ-img"))
    with open(os.path.join(raw, "CelebA-HQ-to-CelebA-mapping.txt"), "w") as f:
        f.write("idx orig_idx orig_file\n")
        for idx, o in enumerate(orig):
            f.write(f"{idx} {o} {o + 1:06d}.jpg\n")
    for idx in range(len(orig)):
        cv2.imwrite(os.path.join(raw, "CelebA-HQ-img", f"{idx}.jpg"), img(128, 128, idx))
        d = os.path.join(raw, "CelebAMask-HQ-mask-anno", str(idx // 2000))
        os.makedirs(d, exist_ok=True)
        masks = {"skin": (100, 400, 100, 400), "l_eye": (200, 230, 300, 350), "hair": (0, 150, 0, 512)}
        if idx == 1:
            masks.pop("l_eye")  # an absent part has no file
        for part, (y0, y1, x0, x1) in masks.items():
            m = np.zeros((512, 512), np.uint8)
            m[y0:y1, x0:x1] = 255
            cv2.imwrite(os.path.join(d, f"{idx:05d}_{part}.png"), m)


def write_lapa(raw, per_split=2):
    for s, split in enumerate(("train", "val", "test")):
        for k in ("images", "labels", "landmarks"):
            os.makedirs(os.path.join(raw, split, k))
        for i in range(per_split):
            name = f"{split}{i}"
            lab = np.zeros((30, 40), np.uint8)
            lab[5:25, 5:35] = 1
            lab[10:14, 8:14] = 4
            lab[10:14, 26:32] = 5
            lab[0:4, :] = 10
            cv2.imwrite(os.path.join(raw, split, "images", name + ".jpg"), img(30, 40, s * 10 + i))
            cv2.imwrite(os.path.join(raw, split, "labels", name + ".png"), lab)
            with open(os.path.join(raw, split, "landmarks", name + ".txt"), "w") as f:
                f.write("106\n" + "".join(f"{k * 0.3:.2f} {k * 0.2:.2f}\n" for k in range(106)))


def write_helen(raw):
    os.makedirs(os.path.join(raw, "images"))
    lists = {"exemplars.txt": ["100_1", "101_2"], "tuning.txt": ["200_1"], "testing.txt": ["300_1"]}
    k = 0
    for fn, names in lists.items():
        with open(os.path.join(raw, fn), "w") as f:
            for name in names:
                k += 1
                f.write(f"{k} , {name}\n")
                cv2.imwrite(os.path.join(raw, "images", name + ".jpg"), img(20, 30, k))
                d = os.path.join(raw, "labels", name)
                os.makedirs(d)
                for c in range(11):
                    m = np.zeros((20, 30), np.uint8)
                    if c == 0:
                        m[:] = 128
                    elif c == 1:
                        m[2:18, 2:28] = 200  # skin beats background
                    elif c == 6:
                        m[8:12, 12:18] = 250  # nose beats skin
                    elif c == 2:
                        m[4:6, 20:26] = 90  # weaker than skin's 200: stays skin
                    cv2.imwrite(os.path.join(d, f"{name}_lbl{c:02d}.png"), m)


def write_helen_relabelled(raw, with_lists=False, train=2):
    """The relabelled variant: NAME_image.jpg + NAME_label.png (+ a visualisation to ignore) in split folders;
    ``train`` training pairs."""
    layout = {"train": ["100_1", "101_2"] + [f"{1000 + i}_1" for i in range(train - 2)], "test": ["300_1"]}
    for k, (folder, names) in enumerate(sorted(layout.items())):
        d = os.path.join(raw, "helenstar_release", folder)
        os.makedirs(d)
        for j, name in enumerate(names):
            cv2.imwrite(os.path.join(d, f"{name}_image.jpg"), img(20, 30, 10 * k + j))
            lab = np.zeros((20, 30), np.uint8)
            lab[2:18, 2:28] = 1
            lab[8:12, 12:18] = 6
            lab[5:7, 4:10] = 2  # the subject's left brow
            cv2.imwrite(os.path.join(d, f"{name}_label.png"), lab)
            cv2.imwrite(os.path.join(d, f"{name}_viz.png"), np.dstack([lab * 20] * 3))
    if with_lists:  # the original lists in the root decide the split instead of the folders
        for fn, names in {"exemplars.txt": ["100_1"], "tuning.txt": ["300_1"], "testing.txt": ["101_2"]}.items():
            with open(os.path.join(raw, fn), "w") as f:
                f.writelines(f"{i} , {n}\n" for i, n in enumerate(names, 1))


def write_lfw(raw):
    lists = {"parts_train.txt": [("Aaron_Eckhart", "1"), ("Zoe_Ball", "0002")],
             "parts_validation.txt": [("Ann_Lee", "12")], "parts_test.txt": [("Bo_Li", "0003")]}
    os.makedirs(os.path.join(raw, "parts_lfw_funneled_gt_images"))
    for fn, rows in lists.items():
        with open(os.path.join(raw, fn), "w") as f:
            for person, n in rows:
                f.write(f"{person} {n}\n")
                name = f"{person}_{int(n):04d}"
                os.makedirs(os.path.join(raw, "lfw_funneled", person), exist_ok=True)
                cv2.imwrite(os.path.join(raw, "lfw_funneled", person, name + ".jpg"), img(25, 25, len(name)))
                col = np.zeros((25, 25, 3), np.uint8)
                col[:] = (255, 0, 0)  # BGR blue: background
                col[5:20, 5:20] = (0, 255, 0)  # green: skin
                col[0:5, 5:20] = (0, 0, 255)  # red: hair
                cv2.imwrite(os.path.join(raw, "parts_lfw_funneled_gt_images", name + ".ppm"), col)


# Your own data: photos and colour masks in two folders, five classes named your own way (prepare_custom.py)
OWN_CLASSES = ("nothing", "lid_left", "lid_right", "snout", "fur")
OWN_COLOURS = ((0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))  # RGB, in the order above


def own_label(h=48, w=64):
    """The class map every own photo carries: fur on top, the subject's left lid on the image's right."""
    lab = np.zeros((h, w), np.uint8)
    lab[: h // 5] = 4
    lab[h // 3: h // 2, w * 5 // 8: w * 7 // 8] = 1
    lab[h // 3: h // 2, w // 8: w * 3 // 8] = 2
    lab[h * 5 // 8: h * 5 // 6, w * 3 // 8: w * 5 // 8] = 3
    return lab


def write_own(folder, n=10, h=48, w=64):
    """``photos/imK.jpg`` and ``masks/imK.png`` (colour PNGs), ``classes.txt`` and ``colors.txt`` under ``folder``."""
    for sub in ("photos", "masks"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    with open(os.path.join(folder, "classes.txt"), "w") as f:
        f.write("\n".join(OWN_CLASSES) + "\n")
    with open(os.path.join(folder, "colors.txt"), "w") as f:
        f.write("".join(f"{r} {g} {b}\n" for r, g, b in OWN_COLOURS))
    lab = own_label(h, w)
    for i in range(n):
        photo = img(h, w, 100 + i)
        photo[lab == 1] = (40, 40, 220)  # something to learn: each class has a colour of its own in the photo
        photo[lab == 2] = (40, 220, 40)
        photo[lab == 3] = (220, 40, 40)
        cv2.imwrite(os.path.join(folder, "photos", f"im{i}.jpg"), photo)
        rgb = np.array(OWN_COLOURS, np.uint8)[lab]
        cv2.imwrite(os.path.join(folder, "masks", f"im{i}.png"), np.ascontiguousarray(rgb[..., ::-1]))


def write_facesynthetics(raw, n=4, size=32):
    """The download as it unpacks: ``{id}.png``, ``{id}_seg.png`` (classes 0..18, 255 ignore), ``{id}_ldmks.txt``
    (70 lines 'x y'), six-digit ids."""
    os.makedirs(raw, exist_ok=True)
    for i in range(n):
        fid = f"{i:06d}"
        cv2.imwrite(os.path.join(raw, f"{fid}.png"), img(size, size, 200 + i))
        seg = (np.arange(size * size).reshape(size, size) // 7 % 19).astype(np.uint8)
        seg[0, : i + 1] = 255
        cv2.imwrite(os.path.join(raw, f"{fid}_seg.png"), seg)
        pts = np.stack([np.linspace(2, size - 3, 70) + i, np.linspace(size - 3, 2, 70) ** 0.5 * 3], 1)
        np.savetxt(os.path.join(raw, f"{fid}_ldmks.txt"), pts, fmt="%.4f")
