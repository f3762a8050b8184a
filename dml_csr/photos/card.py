"""The model card of a shared model (``README.md`` of the folder ``scripts/export.py --format hf`` writes): what a
reader of the Hub page needs before using the weights, made from the checkpoint and its run.

Sections: the classes with their colours, the input convention and size, the training data and its licence (the
terms of the dataset travel with the weights: CelebAMask-HQ and LaPa are for non-commercial research only), the test
metrics of the run's ``metrics.json`` files with the protocol switches they were scored with, how to load the model,
and the citation. The YAML header is what the Hub indexes (library, licence, task, tags).
"""
from __future__ import annotations

from typing import Optional, Sequence

from ..data import drawing
from ..data.face_template import framed_by_landmarks

__all__ = ["DATA_TERMS", "model_card"]

# dataset -> (the Hub's licence id, one line on the data and the terms its annotations come with)
DATA_TERMS = {
    "celebamask_hq": ("other", "CelebAMask-HQ (Lee et al., CVPR 2020): its agreement allows non-commercial research "
                               "and educational use only, so these weights are for non-commercial use only."),
    "lapa": ("other", "LaPa (Liu et al., AAAI 2020): released for non-commercial research only, so these weights are "
                      "for non-commercial use only."),
    "helen": ("other", "Helen (Le et al., ECCV 2012) with Smith et al.'s labels (CVPR 2013): Flickr photos released "
                       "for research; the photos stay their owners'. Check the dataset's terms before any commercial "
                       "use."),
    "lfw_pl": ("other", "LFW part labels (Kae et al., CVPR 2013) on Labeled Faces in the Wild: released for research; "
                        "check the dataset's terms before any commercial use."),
    "synthetic": ("apache-2.0", "procedural faces rendered by dml_csr itself (dml_csr.data.synthetic): no third-party "
                                "images or labels; the weights carry the code's licence, Apache-2.0."),
}
DATA_TERMS["synthetic19"] = DATA_TERMS["synthetic"]
AUTHORS_TERMS = ("Trained and released by the DML-CSR authors (Zheng et al.); InsightFace, which hosts their code, "
                 "states that models trained on its annotated data are for non-commercial research only.")
CITATION = """@inproceedings{zheng2022dmlcsr,
  title     = {Decoupled Multi-task Learning with Cyclical Self-Regulation for Face Parsing},
  author    = {Zheng, Qingping and Deng, Jiankang and Zhu, Zheng and Li, Ying and Zafeiriou, Stefanos},
  booktitle = {IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2022}
}"""
RNN_G_CITATION = """@inproceedings{liu2017recurrent,
  title     = {Face Parsing via Recurrent Propagation},
  author    = {Liu, Sifei and Shi, Jianping and Liang, Ji and Yang, Ming-Hsuan},
  booktitle = {British Machine Vision Conference (BMVC)},
  year      = {2017}
}"""


def _licence(meta: dict) -> tuple[str, str]:
    dataset = meta.get("dataset", "")
    hub_id, terms = DATA_TERMS.get(dataset, ("other", f"dataset '{dataset}': its terms are not recorded here; "
                                                      "check them before any use of these weights."))
    if meta.get("source") == "official":
        return "other", f"{terms} {AUTHORS_TERMS}"
    return hub_id, terms


def _header(meta: dict, hub_id: str) -> list[str]:
    tags = ["face-parsing", "semantic-segmentation", meta.get("model_name", "dml_csr").replace("_", "-"), "safetensors"]
    lines = ["---", "library_name: dml_csr", f"license: {hub_id}"]
    if hub_id == "other":
        lines.append("license_name: dataset-terms")
    return lines + ["pipeline_tag: image-segmentation", "tags:"] + [f"- {t}" for t in tags] + ["---", ""]


def _classes(meta: dict) -> list[str]:
    palette = drawing.palette_for(meta.get("dataset"), len(meta["classes"]))
    rows = ["| index | class | colour (RGB) |", "| --- | --- | --- |"]
    for i, (name, rgb) in enumerate(zip(meta["classes"], palette.tolist())):
        rows.append(f"| {i} | {name} | #{rgb[0]:02x}{rgb[1]:02x}{rgb[2]:02x} ({rgb[0]}, {rgb[1]}, {rgb[2]}) |")
    return rows


def _input(meta: dict, config: dict) -> list[str]:
    h, w = meta["input_size"]
    m = config.get("model", {})
    arch = (f"backbone {m.get('backbone')}, output stride {m.get('output_stride')}" if meta.get("model_name") ==
            "dml_csr" else f"width {m.get('rnn_channels')}")
    crop = f"`{(meta.get('crop') or {}).get('kind', 'whole_image')}`"
    if framed_by_landmarks(meta.get("crop")):
        crop += (", each face framed by its five landmarks onto the template in training (`data.align: landmarks`; "
                 "parse photos with `detect=True` or given faces)")
    return [f"- network: {meta.get('model_name', 'dml_csr')} ({arch}), {len(meta['classes'])} classes, the inference "
            "model (training-only edge heads dropped)",
            f"- input: {h}x{w} pixels, {meta['channel_order']} channel order, scaled to [0, 1], then normalised with "
            f"mean {list(meta['mean'])} and std {list(meta['std'])}",
            f"- crop: {crop}" + (f", RoI tanh-warped with factor {meta['tanh_warp']:g}" if meta.get("tanh_warp")
                                   else "") + " (the checkpoint's crop convention; `FaceParser` applies it, and pastes "
            "the labels back at the photo's own size)",
            "- output: `{\"parsing\": (B, C, h, w)}` logits; the argmax is the class of each pixel"]


def _metrics(records: Sequence[dict], own: str = "whole") -> list[str]:
    """The metrics table: the test split's rows first, of them those framed as the model was trained (``own``)."""
    if not records:
        return ["No metrics were recorded for this checkpoint (score it with `scripts/evaluate.py` and export "
                "again to list them here)."]
    records = sorted(records, key=lambda r: (r["protocol"].get("split") != "test",
                                             r["protocol"].get("align", "whole") != own))
    lines = ["Scored by `scripts/evaluate.py`: one confusion matrix pooled over the split, label 255 ignored; mean F1 "
             "over the foreground classes, mIoU with background. Each row names its switches; the authors' "
             "protocol is flip False, scales [1.0], paste nearest, score at original, align whole, CRF off.", "",
             "| split | images | flip | scales | paste | score at | align | CRF | mean F1 | mIoU | mIoU fg | "
             "pixel acc | overall F1 |", "|" + " --- |" * 13]
    for r in records:
        p, s = r["protocol"], r["scores"]
        overall = s.get("groups", {}).get("overall")
        lines.append(f"| {p.get('split')} | {p.get('num_samples')} | {p.get('flip')} | {p.get('scales')} | "
                     f"{p.get('paste')} | {p.get('score_at', 'original')} | {p.get('align', 'whole')} | "
                     f"{_crf(p.get('crf'))} | {_pct(s['mean_f1'])} | {_pct(s['miou'])} | {_pct(s['miou_fg'])} | "
                     f"{_pct(s['pixel_accuracy'])} | {_pct(overall)} |")
    declared = [r["protocol"]["mean_f1_classes"] for r in records if r["protocol"].get("mean_f1_classes")]
    if declared:
        lines += ["", "Mean F1 over the classes declared for it: " + ", ".join(declared[0])]
    first = records[0]["scores"]["per_class"]
    lines += ["", "Per-class F1 (first row's scoring): " + ", ".join(f"{c} {_pct(v['f1'])}" for c, v in first.items())]
    return lines


def _crf(record: Optional[dict]) -> str:
    """A row's dense CRF: off, or its mean-field steps and the kernel settings other than the defaults."""
    if not record:
        return "off"
    from ..models.dense_crf import CRFParams, changed_kernels, kernel_text

    changed = kernel_text(changed_kernels(CRFParams(**record)))
    return f"{record['iterations']} steps" + (f" ({changed})" if changed else "")


def _pct(x: Optional[float]) -> str:
    return "n/a" if x is None or x != x else f"{100 * x:.2f}"


def _usage(name: str) -> list[str]:
    return ["```python", "from dml_csr import FaceParser, load_model",
            f'parser = FaceParser.from_pretrained("{name}")   # or the downloaded folder\'s path',
            'labels = parser("face.jpg")                    # (H, W) class indices at the photo\'s size',
            'labels = parser("group.jpg", detect=True)     # every face found, aligned, parsed, composited back',
            f'model, meta = load_model("{name}")          # the bare network and its metadata', "```", "",
            "```sh", f"python scripts/predict.py photos/ --checkpoint {name} --out preds", "```", "",
            "`model.safetensors` is read without pickle and checked against the size and sha256 that `config.json` "
            "records; `hf://OWNER/REPO@REVISION` pins a branch, a tag or a commit."]


def model_card(meta: dict, config: dict, metrics: Sequence[dict] = (), repo: str = "") -> str:
    """The card's Markdown: ``meta`` and ``config`` of the checkpoint, ``metrics`` its ``metrics.json`` records,
    ``repo`` the Hub repository it is meant for (``OWNER/REPO``; a placeholder when unknown)."""
    hub_id, terms = _licence(meta)
    name = f"hf://{repo or 'OWNER/REPO'}"
    title = f"{meta.get('model_name', 'dml_csr')} face parsing, {meta.get('dataset')} classes"
    citation = RNN_G_CITATION if meta.get("model_name") == "rnn_g" else CITATION
    body = (_header(meta, hub_id) + [f"# {title}", "",
            "A face-parsing model (a class for every pixel of a face), exported by the dml_csr framework "
            "(`scripts/export.py --format hf`).", "", "## Classes", ""] + _classes(meta)
            + ["", "## Input", ""] + _input(meta, config)
            + ["", "## Training data and licence", "", terms]
            + ["", "## Metrics", ""]
            + _metrics(metrics, "landmarks" if framed_by_landmarks(meta.get("crop")) else "whole")
            + ["", "## How to load", ""] + _usage(name)
            + ["", "## Citation", "", "```bibtex", citation, "```"])
    return "\n".join(body) + "\n"
