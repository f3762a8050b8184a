"""Typed configuration: dataclass defaults, then YAML files (with ``_base_`` inheritance), then ``--set`` overrides.

This is the only module that reads YAML files (through :func:`dml_csr._typed.safe_yaml`). ``load_config(path,
overrides)`` returns a validated :class:`Config`; any problem (unknown key, wrong type, a number that is not finite
or out of range, value outside its choices, missing required value, missing ``_base_`` file) raises
:class:`ConfigError` whose one-line message names the key, the file it came from and what was expected.

The YAML is read defensively, before anything else is done with it: a file over 1 MiB, an alias (``*name``: a few
hundred bytes of aliases expand to gigabytes) and nesting deeper than 64 levels are refused, and a value is shown in
a message cut to about 200 characters.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import yaml

from ._typed import (MAX_YAML_BYTES, ConfigError, build_dataclass, merge_into, read_yaml_mapping, read_yaml_text,
                     safe_yaml, shown, source, yaml_bases)
from .conventions import CHANNEL_ORDER, CRF_SETTING_RANGES, DEVICE_NAMES, IMAGENET_MEAN, IMAGENET_STD, INPUT_SIZE
from .files import write_bytes

__all__ = [
    "Config", "ConfigError", "DataConfig", "RootConfig", "LabelNoiseConfig", "read_yaml_mapping", "ModelConfig",
    "TrainConfig", "LossConfig", "EvalConfig", "CRFKernelConfig", "load_config", "config_to_dict", "config_from_dict",
    "save_config", "parse_override",
]

MISSING = dataclasses.MISSING
BACKBONES = ("resnet101_deepstem", "resnet18", "resnet34", "resnet50", "resnet101", "farl_vit_b16")


@dataclass
class LabelNoiseConfig:
    """Corrupted training labels for experiments (:mod:`dml_csr.data.noise`); validation and test stay clean."""
    rate: float = 0.0  # probability that a part of a training label map is corrupted (0: clean labels)
    kinds: list[Literal["shift", "swap", "drop"]] = field(default_factory=lambda: ["shift", "swap", "drop"])
    max_shift: int = 3  # pixels a shifted boundary moves at most
    seed: int = 0  # the draws depend on this and the sample's name only


@dataclass
class RootConfig:
    """One training root of several (``data.roots``), in the model's classes, drawn in proportion to ``weight``."""
    root: str = MISSING  # a prepared root with data.train_split
    dataset: str = ""  # its label registry key or custom ("": data.dataset)
    class_map: Optional[Union[str, dict[str, str]]] = None  # its classes -> the model's (default: by name)
    weight: float = 1.0


@dataclass
class DataConfig:
    """Where the data is and how samples are made from it."""
    # key of dml_csr.data.labels.DATASETS (helen, lapa, celebamask_hq, lfw_pl, facesynthetics, synthetic, ...), or
    # custom: the classes of <root>/label_names.txt and <root>/dataset.yaml (dml_csr.data.custom)
    dataset: str = MISSING
    root: str = MISSING  # a prepared root: <root>/{split}_list.txt, <root>/{split}/images, <root>/{split}/labels
    input_size: tuple[int, int] = INPUT_SIZE  # (height, width) fed to the network (the authors': 473x473)
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    batch_size: int = 8  # per process
    workers: int = 2
    scale_range: tuple[float, float] = (0.75, 1.25)
    rotation: float = 30.0  # degrees, +- range of the random rotation
    rotation_prob: float = 1.0
    flip: bool = False  # horizontal flip with left/right label swap: ours (neither the paper nor the authors flip)
    color_jitter: float = 0.0  # strength in [0, 1]; 0 disables
    edge_width: int = 1  # pixels; 1 as in the paper
    tanh_warp: float = 0.0  # RoI tanh warp of the crop's rim (data/tanh_warp.py; FaRL's LaPa model: 0.8); 0: none
    # frame each sample: the whole image (the authors'), or its face by the similarity of its own five landmarks
    # (landmarks/NAME.txt; LaPa's 106) onto data.template (FaRL's framing), the random scale/rotation/flip on top
    align: Literal["whole", "landmarks"] = "whole"
    template: Literal["root", "farl"] = "root"  # the root's face_template.json, or FaRL's five points
    skip_bad: bool = False  # skip unreadable samples with a warning instead of stopping
    max_samples: int = 0  # cap per split (0 = all); for quick experiments
    keypoints: bool = False  # read each sample's 5 landmarks (landmarks/NAME.txt) into batch["keypoints"]
    # how the random scale/rotation are drawn: "uniform" in the ranges (paper), or "normal" as the official code
    # (scale clip(N(1, .25), range), rotation clip(N(0, rotation), +-2*rotation)); official preset: rotation_prob .6
    aug_sampling: Literal["uniform", "normal"] = "uniform"
    label_noise: LabelNoiseConfig = field(default_factory=LabelNoiseConfig)
    # the root's classes -> the model's (dml_csr.data.class_map): a registry key whose class order the model uses
    # (matched by name), a mapping {root class: model class or ignore}, or a YAML file holding one; null: none
    class_map: Optional[Union[str, dict[str, str]]] = None
    # several training roots, each {root, dataset, class_map, weight}, sampled in proportion to weight
    # (dml_csr.data.mixture); data.root then is the root validated on (data.val_split) and its classes the model's
    roots: list[RootConfig] = field(default_factory=list)


@dataclass
class ModelConfig:
    """Which network to build. Channel order, mean and std are the input convention every consumer reads."""
    name: Literal["dml_csr", "rnn_g"] = "dml_csr"
    backbone: str = "resnet101_deepstem"  # one of BACKBONES, or timm/<name>: any timm model (.[timm] extra)
    output_stride: Literal[8, 16, 32] = 8
    # DDGCN, Table 4's baseline (a 3x3 conv + norm), or Table 5's PSP and DGCNet, with or without their pooling
    context: Literal["ddgcn", "conv", "psp", "psp_nopool", "dgcnet", "dgcnet_nopool"] = "ddgcn"
    edge_branches: list[Literal["binary", "category"]] = field(default_factory=lambda: ["binary", "category"])
    # "" (random init), "imagenet" (torchvision's), a path, a dml_csr.hub name; timm/<name>: "timm" or "timm:<tag>"
    pretrained: str = ""
    input_size: tuple[int, int] = (0, 0)  # (H, W) Swin's windows, FaRL's positions are laid out for; 0: data's
    norm: Literal["abn", "inplace_abn"] = "abn"  # pure-PyTorch ABN, or the inplace_abn kernels when installed
    sync_bn: bool = True  # synchronise norm statistics across processes under DDP
    context_channels: int = 512  # DDGCN head width (authors: 512)
    decoder_channels: int = 256  # parsing decoder width (authors: 256)
    edge_channels: int = 256  # edge module width (authors: 256)
    edge_heads: bool = True  # build the binary and category edge heads (training only)
    channel_order: Literal["BGR", "RGB"] = CHANNEL_ORDER  # the authors feed BGR...
    mean: tuple[float, float, float] = IMAGENET_MEAN  # ...normalised with the RGB ImageNet mean and std
    std: tuple[float, float, float] = IMAGENET_STD
    # recurrent-propagation model (Liu et al. 2017)
    rnn_channels: int = 32  # RNN-G widest layer (paper: 32); conv1/deconv6 use half, the spatial RNN a quarter
    two_stage: bool = False  # RNN-G: add the component networks (eye+brow, nose, mouth crops); Helen class layout
    # paper: first stage background/face/hair at rnn_stage1_size, crops of the full input from 5 keypoints (needs
    # data.keypoints); label_crops (ours): first stage parses every class, crops placed from a label map
    two_stage_variant: Literal["paper", "label_crops"] = "paper"
    rnn_stage1_size: tuple[int, int] = (128, 128)  # the paper variant's first-stage input (the paper: 128 x 128)
    rnn_components: list[str] = field(default_factory=lambda: ["eye", "nose", "mouth"])  # which of them (paper: all)
    rnn_norm: bool = True  # RNN-G: batch norm after each convolution (not in the paper; steadier SGD)
    rnn_variant: Literal["rnn_g", "rnn", "cnn_deep", "cnn_s"] = "rnn_g"  # Liu et al.'s baselines (models/rnn_g.py)
    rnn_input: Literal[128, 512] = 128  # 512: the Multi-Face network (two more 3x3x16 units, one more deconvolution)
    rnn_train: Literal["joint", "staged"] = "joint"  # staged: the paper's order (dml_csr.training.stages)


@dataclass
class LossConfig:
    """Weights of the multi-task loss (paper eq. 5) and the self-distillation (eq. 7)."""
    preset: Literal["paper", "official"] = "paper"
    lambdas: tuple[float, float, float, float, float] = (1.0, 1.0, 1.0, 4.0, 1.0)
    alphas: tuple[float, float, float] = (1.0, 1.0, 0.1)
    # w_j of the paper's category-edge attention: a list of C values, "inverse_frequency" (from the train split's
    # class histogram in info.json, normalised to mean 1; the paper gives no values) or null (all ones); resolved into
    # numbers by dml_csr.training.trainer.resolve_class_weights, the one reader of this field
    class_weights: Optional[Union[list[float], Literal["inverse_frequency"]]] = None
    lovasz: bool = True
    lovasz_per_image: bool = False  # Lovasz-softmax per image (True) or over the batch as one set (False, authors')
    temperature: float = 1.0  # softmax temperature of the self-distillation KL terms (eq. 7); the KL is scaled by T^2
    background_ratio: float = 0.0  # RNN-G: background pixels sampled at this many per foreground one (0: all)


@dataclass
class TrainConfig:
    """Optimisation, schedule and runtime of training."""
    epochs: int = 150  # first phase
    cycles: int = 0  # cyclical self-regulation cycles after the first phase (paper: 5)
    cycle_epochs: int = 10
    cycle_lr: float = 1e-5  # learning rate each cycle's cosine starts at (the paper's 1e-5; the authors' code 5e-4)
    cycle_lr_min: float = 0.0  # the cosine's floor (the authors' code: 1e-5)
    self_ensemble: Literal["eq6", "moving_average"] = "eq6"  # the paper's, or the authors' code's (self_correction)
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    poly_over: Literal["first_phase", "all"] = "first_phase"  # poly decays to 0 over the first phase (paper) or
    # over all epochs, cycles included (the authors' code: about 2.9e-4 left when the cycles start)
    warmup_epochs: float = 0.0
    stage1_epochs: int = 0  # model.rnn_train: staged: these first epochs train RNN-G's first stage, the rest its parts
    iters_per_epoch: int = 0  # 0 = a full pass over the training set
    val_every: int = 1
    precision: Literal["fp32", "bf16", "fp16", "fp64"] = "fp32"  # fp64: whole model in float64 (numerical checks)
    channels_last: bool = False
    grad_accum: int = 1
    compile: bool = False
    keep_last: int = 3
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    dist_timeout_s: float = 600.0  # a collective waiting longer fails (a dead rank stops the others)
    log_every: int = 10
    image_log_every: int = 1  # epochs between TensorBoard image grids (0 disables)
    init_from: str = ""  # a checkpoint of ours whose weights start the run (fine-tuning); a resume does not read it


@dataclass
class CRFKernelConfig:
    """The dense CRF's kernel settings (models/dense_crf.py ``CRFParams`` checks them); None: its default."""
    bilateral_weight: Optional[float] = None
    bilateral_xy: Optional[float] = None
    bilateral_rgb: Optional[float] = None
    spatial_weight: Optional[float] = None
    spatial_xy: Optional[float] = None
    normalization: Optional[Literal["symmetric", "row", "none"]] = None


@dataclass
class EvalConfig:
    """How evaluation and inference run."""
    batch_size: int = 4
    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    save_predictions: bool = False
    crf_iterations: int = 0  # Liu et al.'s CNN-CRF: mean-field steps of a dense CRF on the probabilities (0: none)
    crf_kernels: CRFKernelConfig = field(default_factory=CRFKernelConfig)  # its kernels (--crf-kernel overrides)
    # what picks best.pt and M_best: mean F1 over the foreground classes, Helen's overall F1 (parts merged), or mIoU
    select_metric: Literal["mean_f1", "overall_f1", "miou"] = "mean_f1"


@dataclass
class Config:
    """A whole experiment."""
    name: str = "default"
    seed: int = 0
    output_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    @property
    def run_dir(self) -> str:
        return os.path.join(self.output_dir, self.name)


# ----------------------------------------------------------------------------------------------------------- loading
def _read_yaml(path: str, origin: dict, chain: tuple[str, ...] = ()) -> dict:
    path = os.path.abspath(path)
    if path in chain:
        raise ConfigError(f"{chain[-1]}: _base_ cycle through {path}")
    if not os.path.isfile(path):
        where = f"{chain[-1]}: _base_ file" if chain else "config file"
        raise ConfigError(f"{where} {shown(path)} does not exist")  # a mutated _base_ may name 100 KB
    raw = safe_yaml(read_yaml_text(path), path)
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    merged: dict = {}
    for b in yaml_bases(raw, path):
        bpath = b if os.path.isabs(b) else os.path.join(os.path.dirname(path), b)
        merge_into(merged, _read_yaml(bpath, origin, chain + (path,)), {}, "")
    # origins of the bases were recorded by the recursive calls; this file's own keys override them
    merge_into(merged, raw, origin, path)
    return merged


def parse_override(item: str) -> tuple[str, Any]:
    """``"train.epochs=2"`` -> ``("train.epochs", 2)``; the value is parsed as YAML (without aliases)."""
    if "=" not in item:
        raise ConfigError(f"--set {shown(item)}: expected KEY=VALUE, e.g. train.epochs=2")
    key, value = item.split("=", 1)
    if len(value) > MAX_YAML_BYTES:
        raise ConfigError(f"--set {shown(key.strip())}: the value is {len(value)} characters; expected at most "
                          f"{MAX_YAML_BYTES}")
    try:
        parsed = safe_yaml(value, f"--set {shown(key.strip())[1:-1]}") if value != "" else ""
    except ConfigError as e:
        if "not valid YAML" not in str(e):
            raise
        parsed = value
    return key.strip(), parsed


def load_config(path: Optional[str] = None, overrides: Optional[list[str]] = None, source: str = "--set") -> Config:
    """Load and validate a config: defaults < ``path`` (and its ``_base_`` chain) < ``overrides`` (``KEY=VALUE``,
    given by the flag ``source``, which errors name)."""
    origin: dict[str, str] = {}
    raw = _read_yaml(path, origin) if path else {}
    for item in overrides or []:
        key, value = parse_override(item)
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{source} {key}: '{p}' is a value, not a section")
            node = nxt
        node[parts[-1]] = value
        origin[key] = source
    return config_from_dict(raw, origin)


def config_from_dict(raw: dict, origin: Optional[dict] = None) -> Config:
    """Validate a plain dict (e.g. from a checkpoint) into a :class:`Config`."""
    cfg = build_dataclass(Config, raw, "", origin or {})
    _check_together(cfg, origin or {})
    return cfg


# dotted key -> (lowest, highest) allowed, None = unbounded; checked after the types
RANGES = {
    "data.batch_size": (1, None), "data.workers": (0, None), "data.max_samples": (0, None),
    "data.rotation": (0, None), "data.rotation_prob": (0, 1), "data.label_noise.rate": (0, 1),
    "data.label_noise.max_shift": (1, None), "data.color_jitter": (0, 1), "data.edge_width": (1, None),
    "train.epochs": (0, None), "train.cycles": (0, None), "train.cycle_epochs": (1, None),
    "train.grad_accum": (1, None), "train.stage1_epochs": (0, None),
    "train.iters_per_epoch": (0, None), "train.val_every": (0, None), "train.keep_last": (1, None),
    "train.lr": (0, None), "train.cycle_lr": (0, None), "train.cycle_lr_min": (0, None), "train.momentum": (0, 1),
    "train.weight_decay": (0, None), "train.poly_power": (0, None), "train.warmup_epochs": (0, None),
    "train.dist_timeout_s": (1, None), "train.log_every": (1, None), "train.image_log_every": (0, None),
    "eval.batch_size": (1, None), "loss.temperature": (1e-6, None), "loss.background_ratio": (0, None),
    "eval.crf_iterations": (0, 50), "data.tanh_warp": (0, 1),
    **{f"eval.crf_kernels.{k}": bounds for k, bounds in CRF_SETTING_RANGES.items()},  # when set
}
# list keys: every value in (low, high]
LIST_RANGES = {
    "data.input_size": (0, 4096), "data.scale_range": (0, math.inf), "eval.scales": (0, 8),
    "model.rnn_stage1_size": (0, 4096), "model.std": (0, math.inf), "loss.lambdas": (-1, math.inf),
    "loss.alphas": (-1, math.inf),
}


def _get(cfg: Config, key: str) -> Any:
    return functools.reduce(getattr, key.split("."), cfg)


def _check_ranges(cfg: Config, origin: dict) -> None:
    for key, (lo, hi) in RANGES.items():
        value = _get(cfg, key)
        if value is None:  # an optional setting left to its default
            continue
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            expected = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise ConfigError(f"{source(origin, key)}: '{key}' = {shown(value)} is out of range; expected {expected}")
    for key, (lo, hi) in LIST_RANGES.items():  # lo < 0: values >= 0, else > lo
        values = list(_get(cfg, key) or ())
        if not values and key == "eval.scales":
            raise ConfigError(f"{source(origin, key)}: '{key}' = []; expected one scale or more, e.g. [1.0]")
        if any((v < 0 if lo < 0 else v <= lo) or v > hi for v in values):
            raise ConfigError(f"{source(origin, key)}: '{key}' = {shown(values)}; expected "
                              f"{'values >= 0' if lo < 0 else 'positive values'}{f' up to {hi:g}' * (hi < math.inf)}")
    if cfg.data.scale_range[0] > cfg.data.scale_range[1]:
        raise ConfigError(f"{source(origin, 'data.scale_range')}: 'data.scale_range' = {list(cfg.data.scale_range)}; "
                          f"expected [low, high] with low <= high")
    t = cfg.train
    if t.epochs == 0 and t.cycles == 0:  # (cycle_epochs >= 1 above)
        raise ConfigError(f"{source(origin, 'train.epochs')}: train.epochs = {t.epochs} and train.cycles = {t.cycles} "
                          f"train nothing; expected at least one epoch")
    _check_roots(cfg, origin)
    if not re.fullmatch(DEVICE_NAMES, t.device):
        raise ConfigError(f"{source(origin, 'train.device')}: 'train.device' = {shown(t.device)}; expected auto, cpu, "
                          f"cuda, cuda:N or mps")


def _check_model(cfg: Config, origin: dict) -> None:
    """The backbone's name and its weights; a timm or FaRL backbone's unset ``model.input_size``: data.input_size."""
    m, timm = cfg.model, cfg.model.backbone.startswith("timm/")
    if m.backbone not in BACKBONES and not (timm and len(m.backbone) > len("timm/")):
        raise ConfigError(f"{source(origin, 'model.backbone')}: 'model.backbone' = {shown(m.backbone)} is invalid; expected "
                          f"one of {', '.join(map(repr, BACKBONES))} or 'timm/<name>' (any timm model)")
    if m.pretrained.split(":")[0] == "timm" and not timm:
        raise ConfigError(f"{source(origin, 'model.pretrained')}: model.pretrained = {shown(m.pretrained)} is for timm "
                          f"backbones; model.backbone is {shown(m.backbone)} (a path or a weights name is expected)")
    if tuple(m.input_size) == (0, 0) and (timm or m.backbone == "farl_vit_b16"):
        m.input_size = tuple(cfg.data.input_size)
    if tuple(m.input_size) != (0, 0) and min(m.input_size) <= 0:
        raise ConfigError(f"{source(origin, 'model.input_size')}: 'model.input_size' = {list(m.input_size)}; expected "
                          "positive values, or [0, 0] for data.input_size")


def _check_roots(cfg: Config, origin: dict) -> None:
    """Each ``data.roots`` entry names a root and draws with a positive, finite weight."""
    for i, r in enumerate(cfg.data.roots):
        key = f"data.roots[{i}]"
        if not r.root:
            raise ConfigError(f"{source(origin, key)}: '{key}.root' is empty; expected a prepared root")
        if not (0 < r.weight < float("inf")):
            raise ConfigError(f"{source(origin, key)}: '{key}.weight' = {r.weight!r}; expected a positive number")


def _check_together(cfg: Config, origin: dict) -> None:
    """Values out of range, and values that are valid alone but not together."""
    _check_ranges(cfg, origin)
    _check_model(cfg, origin)
    m, t = cfg.model, cfg.train
    if m.rnn_train == "staged" and not (m.name == "rnn_g" and m.two_stage and 0 < t.stage1_epochs < t.epochs and
                                        t.warmup_epochs < min(t.stage1_epochs, t.epochs - t.stage1_epochs)):
        raise ConfigError(f"{source(origin, 'model.rnn_train')}: model.rnn_train = staged (one stage after the other) "
                          f"expects model.name=rnn_g, model.two_stage=true, 0 < train.stage1_epochs < train.epochs "
                          f"and train.warmup_epochs shorter than either stage (each warms up again)")
    if cfg.data.template != "root" and cfg.data.align != "landmarks":
        raise ConfigError(f"{source(origin, 'data.template')}: data.template = {cfg.data.template} is the template "
                          f"faces are framed onto with data.align=landmarks; set that too, or drop data.template")
    if t.stage1_epochs and m.rnn_train != "staged":
        raise ConfigError(f"{source(origin, 'train.stage1_epochs')}: train.stage1_epochs needs model.rnn_train=staged")
    if m.name == "rnn_g" and m.two_stage and m.two_stage_variant == "paper" and not cfg.data.keypoints:
        raise ConfigError(f"{source(origin, 'model.two_stage_variant')}: model.two_stage_variant = paper places its "
                          f"crops from 5 keypoints; set data.keypoints=true (each sample's landmarks/NAME.txt, as "
                          f"prepare_synthetic.py writes them) or model.two_stage_variant=label_crops")


# ----------------------------------------------------------------------------------------------------------- saving
def config_to_dict(cfg: Config) -> dict:
    """A plain, YAML-safe dict (tuples become lists)."""
    def plain(x):
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return {k: plain(v) for k, v in x.items()} if isinstance(x, dict) else x
    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Config, path: str) -> None:
    """Write the resolved config as YAML, atomically."""
    write_bytes(path, yaml.safe_dump(config_to_dict(cfg), sort_keys=False).encode())
