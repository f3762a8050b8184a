"""Config loading: inheritance, overrides, every error naming key and file, and the shipped configs."""
import json
import math
import os
import re

import pytest
import torch
import yaml

from dml_csr.config import ConfigError, config_from_dict, config_to_dict, load_config, save_config
from dml_csr.data.labels import label_spec
from dml_csr.models import build_model, count_parameters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


@pytest.fixture
def tree(tmp_path):
    write(tmp_path / "_base_/datasets/d.yaml", {"data": {"dataset": "helen", "root": "data/helen", "batch_size": 3}})
    write(tmp_path / "_base_/models/m.yaml", {"model": {"backbone": "resnet50", "context_channels": 128}})
    write(tmp_path / "_base_/schedules/s.yaml", {"train": {"epochs": 7, "lr": 0.01}, "data": {"batch_size": 5}})
    return tmp_path


def test_inheritance_later_base_and_child_win(tree):
    cfg_path = write(tree / "exp.yaml", {"_base_": ["_base_/datasets/d.yaml", "_base_/models/m.yaml",
                                                    "_base_/schedules/s.yaml"],
                                         "name": "exp", "train": {"epochs": 9}})
    cfg = load_config(cfg_path)
    assert cfg.name == "exp"
    assert cfg.data.dataset == "helen" and cfg.data.root == "data/helen"
    assert cfg.data.batch_size == 5  # the schedule base comes later than the dataset base
    assert cfg.model.backbone == "resnet50" and cfg.model.context_channels == 128
    assert cfg.train.epochs == 9 and cfg.train.lr == 0.01  # child overrides one key, keeps the sibling
    assert cfg.model.decoder_channels == 256  # dataclass default survives


def test_nested_bases_and_overrides(tree):
    write(tree / "mid.yaml", {"_base_": "_base_/datasets/d.yaml", "seed": 3})
    top = write(tree / "sub/top.yaml", {"_base_": "../mid.yaml"})
    cfg = load_config(top, ["train.epochs=2", "model.backbone=resnet18", "data.input_size=[64, 96]",
                            "loss.class_weights=[1, 2.5]", "eval.flip=true"])
    assert cfg.seed == 3 and cfg.data.dataset == "helen"
    assert cfg.train.epochs == 2 and cfg.model.backbone == "resnet18"
    assert cfg.data.input_size == (64, 96)
    assert cfg.loss.class_weights == [1.0, 2.5] and cfg.eval.flip is True


def test_unknown_key_names_key_file_and_choices(tree):
    p = write(tree / "typo.yaml", {"_base_": "_base_/datasets/d.yaml", "model": {"backbnoe": "resnet18"}})
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "model.backbnoe" in msg and p in msg and "backbone" in msg


def test_unknown_key_in_base_names_the_base_file(tree):
    write(tree / "_base_/models/bad.yaml", {"model": {"widht": 3}})
    p = write(tree / "exp.yaml", {"_base_": ["_base_/datasets/d.yaml", "_base_/models/bad.yaml"]})
    with pytest.raises(ConfigError, match=r"bad\.yaml.*model\.widht"):
        load_config(p)


def test_wrong_type_and_bad_choice(tree):
    p = write(tree / "t.yaml", {"_base_": "_base_/datasets/d.yaml", "train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"t\.yaml.*'train\.epochs' = 'ten'.*expected int"):
        load_config(p)
    p = write(tree / "c.yaml", {"_base_": "_base_/datasets/d.yaml", "model": {"backbone": "vgg"}})
    with pytest.raises(ConfigError, match=r"c\.yaml.*model\.backbone.*'resnet101_deepstem'.*'resnet50'"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"--set.*data\.input_size"):
        load_config(str(tree / "_base_/datasets/d.yaml"), ["data.input_size=[1, 2, 3]"])
    with pytest.raises(ConfigError, match="train.flip"):  # a bool where a section is expected is fine; bad key not
        load_config(str(tree / "_base_/datasets/d.yaml"), ["train.flip=true"])


def test_missing_required_and_missing_base(tree):
    with pytest.raises(ConfigError, match=r"missing required value 'data\.root'"):
        load_config(write(tree / "r.yaml", {"data": {"dataset": "helen"}}))
    p = write(tree / "b.yaml", {"_base_": "_base_/nope.yaml"})
    with pytest.raises(ConfigError, match=r"b\.yaml: _base_ file .*nope\.yaml.* does not exist"):
        load_config(p)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tree / "y.yaml", "data: [unclosed\n"))


def test_roundtrip_through_saved_yaml(tree, tmp_path):
    cfg = load_config(str(tree / "_base_/datasets/d.yaml"), ["model.mean=[0.5, 0.5, 0.5]"])
    out = str(tmp_path / "resolved.yaml")
    save_config(cfg, out)
    again = load_config(out)
    assert again == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


SHIPPED = sorted(os.path.relpath(os.path.join(d, f), os.path.join(ROOT, "configs"))
                 for d, _, fs in os.walk(os.path.join(ROOT, "configs")) if "_base_" not in d for f in fs
                 if f.endswith(".yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_build_the_model_they_state(name):
    """Every shipped config loads, names its run and data, and builds (on the meta device: no memory, no compute)
    a model with the parameter count its "# parameters:" line states."""
    path = os.path.join(ROOT, "configs", name)
    cfg = load_config(path)
    assert cfg.data.root and cfg.name
    stated = re.search(r"^# parameters: ([\d,]+)", open(path).read(), re.M)
    assert stated, f"{name} states no '# parameters: N' line"
    spec = label_spec(cfg)  # the model's classes: data.class_map may give it another dataset's
    with torch.device("meta"):
        model = build_model(cfg.model, spec.num_classes, spec.classes)
    assert count_parameters(model) == int(stated.group(1).replace(",", ""))

ABLATIONS = sorted(f for f in SHIPPED if f.startswith("ablations" + os.sep))
ABLATED = {"name", "model.context", "model.context_channels", "model.edge_heads", "model.edge_branches",
           "loss.lambdas", "train.cycles"}


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablations_differ_from_their_paper_config_only_in_the_ablated_keys(name):
    assert len(ABLATIONS) == 24  # 8 rows of Tables 4-6 for each of Helen, LaPa and CelebAMask-HQ
    ablation = _flat(config_to_dict(load_config(os.path.join(ROOT, "configs", name))))
    dataset = os.path.basename(name).split("_dml")[0].split("_baseline")[0].split("_ddgcn")[0]
    paper = _flat(config_to_dict(load_config(os.path.join(ROOT, "configs", f"{dataset}_dml_csr_r101.yaml"))))
    changed = {k for k in paper if paper[k] != ablation[k]}
    assert "train.cycles" in changed and changed <= ABLATED, changed


@pytest.mark.parametrize("name", [f for f in ABLATIONS if os.path.basename(f).startswith("helen_")])
def test_each_ablation_trains_a_step(name, tiny_synthetic, tmp_path):
    """The ablated keys on a micro model: one training step, with the loss terms the ablation leaves."""
    from helpers.micro import MICRO

    from dml_csr.training.trainer import train

    path = os.path.join(ROOT, "configs", name)
    cfg = load_config(path, MICRO + [f"data.root={tiny_synthetic}", f"output_dir={tmp_path}", "train.epochs=1",
                                     "train.iters_per_epoch=1", "model.pretrained=", "model.sync_bn=false",
                                     "data.scale_range=[1.0, 1.0]"])
    ablated = load_config(path)
    assert (cfg.model.context, cfg.model.edge_heads, cfg.model.edge_branches, cfg.loss.lambdas, cfg.train.cycles) == (
        ablated.model.context, ablated.model.edge_heads, ablated.model.edge_branches, ablated.loss.lambdas, 0)
    train(cfg, progress=False)
    loss = next(json.loads(line) for line in open(os.path.join(cfg.run_dir, "metrics.jsonl")) if '"train"' in line)
    terms = set(loss["loss"])
    heads = set(cfg.model.edge_branches) if cfg.model.edge_heads else set()
    assert ("edge_ce" in terms) == ("binary" in heads) and ("semantic_edge_ce" in terms) == ("category" in heads)
    assert math.isfinite(loss["loss"]["total"])


@pytest.mark.parametrize("override,message", [
    ("data.batch_size=0", r"'data.batch_size' = 0 is out of range; expected >= 1"),
    ("train.grad_accum=0", r"'train.grad_accum' = 0 is out of range; expected >= 1"),
    ("data.workers=-1", r"'data.workers' = -1 is out of range; expected >= 0"),
    ("train.epochs=-1", r"'train.epochs' = -1 is out of range"),
    ("train.cycles=-2", r"'train.cycles' = -2 is out of range"),
    ("train.rotation_prob=2", r"unknown key 'train.rotation_prob'"),
    ("data.rotation_prob=2", r"'data.rotation_prob' = 2.0 is out of range; expected between 0 and 1"),
    ("data.scale_range=[1.2, 0.8]", r"expected \[low, high\] with low <= high"),
    ("train.device=gpu", r"'train.device' = 'gpu'; expected auto, cpu, cuda, cuda:N or mps"),
])
def test_numbers_out_of_range_stop_with_one_line_naming_the_key(tree, override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(None, ["data.dataset=helen", "data.root=x", override])
    assert "--set" in str(e.value) and "\n" not in str(e.value)


def test_nothing_to_train_and_an_unknown_section_from_the_command_line_are_named():
    with pytest.raises(ConfigError, match="train nothing; expected at least one epoch"):
        load_config(None, ["data.dataset=helen", "data.root=x", "train.epochs=0"])
    with pytest.raises(ConfigError, match=r"^--set: unknown key 'nosuch'"):
        load_config(None, ["data.dataset=helen", "data.root=x", "nosuch.key=1"])


def test_scientific_notation_reads_as_a_float_everywhere(tree):
    """YAML 1.1 reads 1e-3 (no dot in the mantissa) as a string: a float field takes it as the number."""
    path = write(tree / "sci.yaml", "_base_: _base_/datasets/d.yaml\ntrain:\n  lr: 1e-3\n  cycle_lr: 5E-4\n")
    cfg = load_config(path, ["train.weight_decay=1e-5", "loss.alphas=[1e0, 1, 1e-1]"])
    assert (cfg.train.lr, cfg.train.cycle_lr, cfg.train.weight_decay) == (1e-3, 5e-4, 1e-5)
    assert cfg.loss.alphas == (1.0, 1.0, 0.1)
    with pytest.raises(ConfigError, match=r"'train.lr' = 'fast' is invalid; expected float"):
        load_config(path, ["train.lr=fast"])
    with pytest.raises(ConfigError, match=r"'train.epochs' = '1e3' is invalid; expected int"):
        load_config(path, ["train.epochs=1e3"])
