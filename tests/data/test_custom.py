"""Roots that declare their own classes: label_names.txt and dataset.yaml read into a class layout, every problem a
line naming the file, key and value."""
import numpy as np
import pytest

from dml_csr.config import ConfigError, load_config
from dml_csr.data.custom import custom_problems, read_custom_spec
from dml_csr.data.class_map import label_spec
from dml_csr.data.labels import fallback_palette, flip_permutation


def _root(tmp_path, names, description=None):
    (tmp_path / "label_names.txt").write_text("\n".join(names) + "\n\n")
    if description is not None:
        (tmp_path / "dataset.yaml").write_text(description)
    return str(tmp_path)


def test_names_colours_pairs_groups_and_the_mean_f1(tmp_path):
    root = _root(tmp_path, ["void", "ear_l", "ear_r", "nose", "hair"],
                 "colors:\n  nose: [1, 2, 3]\npairs:\n  - [ear_l, ear_r]\ngroups:\n  ears: [ear_l, ear_r]\n"
                 "mean_f1: [ear_l, ear_r, nose]\n")
    spec = read_custom_spec(root)
    assert spec.classes == ("void", "ear_l", "ear_r", "nose", "hair") and spec.name == "custom"
    assert spec.flip_pairs == ((1, 2),) and flip_permutation(spec).tolist() == [0, 2, 1, 3, 4]
    assert spec.groups == {"ears": (1, 2)} and spec.mean_f1_indices == (1, 2, 3)
    expected = fallback_palette(5)
    expected[3] = (1, 2, 3)  # the others: the fixed colours of a 5-class layout
    assert np.array_equal(spec.palette, expected)
    cfg = load_config(None, ["data.dataset=custom", f"data.root={root}"])
    assert label_spec(cfg) == spec
    (tmp_path / "plain").mkdir()
    plain = read_custom_spec(_root(tmp_path / "plain", ["bg", "x"]))
    assert plain.mean_f1_indices == (1,) and plain.flip_pairs == () and plain.groups == {}


def test_every_problem_is_a_line_naming_file_key_and_value(tmp_path):
    root = _root(tmp_path, ["bg", "a", "b", "a"],
                 "colours:\n  a: [1, 2, 3]\ncolors: [[0, 0, 0], [1, 2]]\npairs:\n  - [a, c]\n  - [b]\n"
                 "groups:\n  g: []\nmean_f1: [z]\n")
    problems = custom_problems(root)
    path = f"{root}/dataset.yaml"
    assert problems == [
        f"'{root}/label_names.txt' names the class 'a' twice; expected unique names",
        f"{path}: unknown key 'colours'; valid keys: colors, pairs, groups, mean_f1",
        f"{path}: colors: lists 2 colours for 4 classes; expected one a class",
        f"{path}: colors.a: [1, 2]; expected [r, g, b], three integers in 0..255",
        f"{path}: pairs[0]: 'c' is not a class of the root; classes: bg, a, b, a",
        f"{path}: pairs[1]: ['b']; expected [left, right], two class names",
        f"{path}: groups.g: expected a non-empty list of class names",
        f"{path}: mean_f1: 'z' is not a class of the root; classes: bg, a, b, a",
    ]
    with pytest.raises(ConfigError) as e:
        read_custom_spec(root)
    assert str(e.value) == problems[0] + f" (and 7 more: scripts/check_dataset.py {root} lists them)"
    with pytest.raises(FileNotFoundError, match="label_names.txt there"):
        read_custom_spec(str(tmp_path / "nowhere"))
    (tmp_path / "dataset.yaml").write_text("pairs: [a, b\n")
    assert custom_problems(root)[-1].startswith(f"dataset description '{path}': not valid YAML")
