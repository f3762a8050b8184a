"""Config loading: inheritance, overrides, every error naming key and file, and the shipped configs."""
import json
import math
import os
import re

import pytest
import torch
import yaml

from dml_csr.config import ConfigError, config_from_dict, config_to_dict, load_config, save_config
from dml_csr.data.class_map import label_spec
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
    with pytest.raises(ConfigError, match=r"--set.*train\.stage1_epochs needs model\.rnn_train=staged"):
        load_config(str(tree / "_base_/datasets/d.yaml"), ["train.stage1_epochs=2"])
    staged = ["model.name=rnn_g", "model.two_stage=true", "model.two_stage_variant=label_crops",
              "model.rnn_train=staged", "train.epochs=8", "train.stage1_epochs=6"]
    with pytest.raises(ConfigError, match=r"rnn_train = staged .* and train\.warmup_epochs shorter than either stage"):
        load_config(str(tree / "_base_/datasets/d.yaml"), staged + ["train.warmup_epochs=3"])
    with pytest.raises(ConfigError, match=r"rnn_train = staged \(one stage after the other\) expects model\.name"):
        load_config(str(tree / "_base_/datasets/d.yaml"), staged + ["model.two_stage=false"])


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


DATASETS = ("helen", "lapa", "celebamask_hq")
TABLE5 = ("psp", "psp_nopool", "dgcnet", "dgcnet_nopool")


def _dataset(name):
    return next(d for d in DATASETS if os.path.basename(name).startswith(d + "_"))


@pytest.mark.parametrize("name", ABLATIONS)
def test_ablations_differ_from_their_paper_config_only_in_the_ablated_keys(name):
    # 8 rows of Tables 4-6 and Table 5's 4 other context modules, for each of Helen, LaPa and CelebAMask-HQ
    assert len(ABLATIONS) == 36
    ablation = _flat(config_to_dict(load_config(os.path.join(ROOT, "configs", name))))
    paper = _flat(config_to_dict(load_config(os.path.join(ROOT, "configs", f"{_dataset(name)}_dml_csr_r101.yaml"))))
    changed = {k for k in paper if paper[k] != ablation[k]}
    assert "train.cycles" in changed and changed <= ABLATED, changed


@pytest.mark.parametrize("dataset,context", [(d, c) for d in DATASETS for c in TABLE5])
def test_table5_ablations_differ_from_the_ddgcn_row_only_in_the_context(dataset, context):
    """Table 5 compares context modules added to the baseline: each row is the +DDGCN row with another context."""
    row = _flat(config_to_dict(load_config(os.path.join(ROOT, "configs", "ablations", f"{dataset}_{context}.yaml"))))
    ddgcn = _flat(config_to_dict(load_config(os.path.join(ROOT, "configs", "ablations", f"{dataset}_ddgcn.yaml"))))
    assert {k for k in ddgcn if ddgcn[k] != row[k]} == {"name", "model.context"}
    assert row["model.context"] == context


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


def test_backbones_timm_names_and_their_pretrained_options():
    """timm/<name> is any timm model (checked when built); "timm" and "timm:<tag>" weights belong to those only; a
    timm or FaRL backbone is laid out for data.input_size unless model.input_size says otherwise."""
    base = ["data.dataset=helen", "data.root=x", "data.input_size=[512, 448]"]
    cfg = load_config(None, base + ["model.backbone=timm/convnext_base", "model.pretrained=timm:fb_in22k_ft_in1k"])
    assert (cfg.model.backbone, cfg.model.input_size) == ("timm/convnext_base", (512, 448))
    assert load_config(None, base + ["model.backbone=farl_vit_b16", "model.input_size=[448, 448]"]).model.input_size \
        == (448, 448)
    assert load_config(None, base).model.input_size == (0, 0)  # the authors' ResNet does not depend on it
    for bad, message in (("model.backbone=timm/", r"'model.backbone' = 'timm/' is invalid; expected one of "
                                                  r"'resnet101_deepstem', .*'farl_vit_b16' or 'timm/<name>'"),
                         ("model.pretrained=timm", r"model.pretrained = 'timm' is for timm backbones; model.backbone "
                                                   r"is 'resnet101_deepstem'"),
                         ("model.input_size=[0, 64]", r"'model.input_size' = \[0, 64\]; expected positive values")):
        with pytest.raises(ConfigError, match=message) as e:
            load_config(None, base + [bad])
        assert "--set" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("key,value", [
    ("train.lr", ".nan"), ("train.momentum", ".nan"), ("data.rotation_prob", ".nan"), ("train.dist_timeout_s", ".nan"),
    ("train.warmup_epochs", ".nan"), ("train.lr", ".inf"), ("loss.temperature", "-.inf"), ("train.cycle_lr", "1e999"),
    ("eval.scales", "[1.0, .nan]"), ("model.mean", "[0.4, .inf, 0.4]"), ("loss.lambdas", "[1, 1, 1, .nan, 1]"),
])
def test_a_float_that_is_not_finite_is_named(tree, key, value):
    """NaN compares false with every bound, so a range check alone lets it through: every float is checked finite."""
    section, name = key.split(".")
    path = write(tree / "nan.yaml", f"_base_: _base_/datasets/d.yaml\n{section}:\n  {name}: {value}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: '{key}") and "is not a finite number; expected a finite float" in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("override,message", [
    ("data.input_size=[100000, 100000]", r"'data.input_size' = \[100000, 100000\]; expected positive values up to "
                                         r"4096"),
    ("model.std=[0, 0, 0]", r"'model.std' = \[0.0, 0.0, 0.0\]; expected positive values$"),
    ("eval.scales=[]", r"'eval.scales' = \[\]; expected one scale or more"),
    ("eval.scales=[0.5, 100]", r"'eval.scales' = \[0.5, 100.0\]; expected positive values up to 8"),
    ("loss.alphas=[1, -1, 1]", r"'loss.alphas' = \[1.0, -1.0, 1.0\]; expected values >= 0"),
])
def test_lists_of_numbers_are_checked_in_range(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        load_config(None, ["data.dataset=helen", "data.root=x", override])
    assert "\n" not in str(e.value)


BOMB = """\
data: {dataset: helen, root: x, nosuch: 1}
a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
eval: {scales: *g}
"""


def test_yaml_aliases_are_refused_before_anything_is_built(tree):
    """A 400-byte nested alias bomb (9^7 = 4.8 million strings once expanded) is refused from the parser's events,
    before the unknown key of its first line is even looked at; an alias in a --set value too."""
    path = write(tree / "bomb.yaml", BOMB)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == (f"{path}: line 3: YAML alias '*a' is not accepted (aliases can expand to gigabytes); "
                            "write the value out")
    with pytest.raises(ConfigError, match=r"^--set eval.scales: line 1: YAML alias '\*s' is not accepted"):
        load_config(None, ["data.dataset=helen", "data.root=x", "eval.scales=[&s 1.0, *s]"])
    merge = write(tree / "merge.yaml", "base: &b {lr: 0.1}\ntrain:\n  <<: *b\n")
    with pytest.raises(ConfigError, match="line 3: YAML alias '\\*b' is not accepted"):
        load_config(merge)


def test_hostile_yaml_is_one_short_line(tree):
    """Deep nesting, huge values and keys, a huge file, bytes that are not UTF-8 and a _base_ of the wrong kind: each
    one line of at most a few hundred characters naming the file."""
    deep = write(tree / "deep.yaml", "data: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"deep.yaml: line 1: nested more than 64 levels deep"):
        load_config(deep)
    long_value = write(tree / "long.yaml", "_base_: _base_/datasets/d.yaml\neval:\n  scales: [" +
                       ", ".join(["'x'"] * 200000) + "]\n")
    long_key = write(tree / "key.yaml", "_base_: _base_/datasets/d.yaml\ntrain:\n  " + "k" * 1000 + ": 1\n")
    digits = write(tree / "digits.yaml", "_base_: _base_/datasets/d.yaml\ntrain:\n  epochs: " + "9" * 5000 + "\n")
    for path, start in ((long_value, "'eval.scales[0]' = 'x' is invalid"), (long_key, "unknown key 'train.kkkk"),
                        (digits, "a value cannot be read (Exceeds the limit")):
        with pytest.raises(ConfigError) as e:
            load_config(path)
        message = str(e.value).replace(path, "FILE")  # its length apart from where the test's folder happens to be
        assert start in message and len(message) < 600 and "\n" not in message, message[:300]
    big = tree / "big.yaml"
    big.write_text("# " + "x" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match=r"big.yaml' is 1048579 bytes; expected at most 1048576 \(1 MiB\)"):
        load_config(str(big))
    latin = tree / "latin.yaml"
    latin.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin.yaml' is not UTF-8 text \(byte 9\)"):
        load_config(str(latin))
    with pytest.raises(ConfigError, match=r"bases.yaml: '_base_' = \[1, 2\]; expected a file name or a list of them"):
        load_config(write(tree / "bases.yaml", "_base_: [1, 2]\n"))
    with pytest.raises(ConfigError) as e:  # found by tests/helpers/fuzz.py: the missing file's name was the message
        load_config(write(tree / "far.yaml", "_base_: " + "x" * 100000 + "\n"))
    assert str(e.value).startswith(f"{tree / 'far.yaml'}: _base_ file '{tree}/xxx") and len(str(e.value)) < 600
    assert str(e.value).endswith("(str, cut) does not exist")


def test_a_value_in_a_message_is_cut_to_about_200_characters():
    from dml_csr._typed import shown

    assert shown(list(range(10))) == repr(list(range(10)))
    cut = shown(list(range(10 ** 6)))  # built only as far as shown
    assert len(cut) < 240 and cut.startswith("[0, 1, 2") and cut.endswith("... (list, cut)")
    assert len(shown("x" * 10 ** 6)) < 240 and len(shown({"k": ["v" * 1000] * 1000})) < 240
    with pytest.raises(ConfigError) as e:
        load_config(None, ["data.dataset=helen", "data.root=x", "train.device=" + "g" * 10000])
    assert len(str(e.value)) < 400 and "expected auto, cpu, cuda, cuda:N or mps" in str(e.value)
