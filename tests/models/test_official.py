"""The authors' state_dicts: the name mapping against their listing, every layout variant, errors naming keys."""
from collections import OrderedDict

import pytest
import torch
from helpers.official_weights import check_same_tensors, official_entries, official_state_dict

from dml_csr.config import ModelConfig
from dml_csr.checkpoint import build_from_official
from dml_csr.models import build_model
from dml_csr.models.official import StateDictMismatch, official_to_ours, ours_to_official


def test_name_mapping_is_a_bijection_with_the_listing():
    entries = official_entries()
    with torch.device("meta"):
        ours = build_model(ModelConfig(), 11).state_dict()
    mapped = [official_to_ours(e["name"]) for e in entries]
    assert len(set(mapped)) == len(entries) == 779
    assert set(mapped) == set(ours)  # complete both ways
    for e, name in zip(entries, mapped):
        assert list(ours[name].shape) == e["shape"], e["name"]
        assert ours_to_official(name) == e["name"]
    with pytest.raises(KeyError):
        official_to_ours("head.weight")


@pytest.mark.parametrize("variant", ["module_prefix", "wrapper_no_edges", "no_num_batches_tracked"])
def test_layout_variants_load_and_reproduce_tensors(official_sd, variant):
    sd = OrderedDict(official_sd)
    if variant == "module_prefix":
        obj = OrderedDict(("module." + k, v) for k, v in sd.items())
        edges = True
    elif variant == "wrapper_no_edges":
        sd = OrderedDict((k, v) for k, v in sd.items() if not k.startswith("edge_layer."))
        obj, edges = {"state_dict": sd}, False
    else:
        sd = OrderedDict((k, v) for k, v in sd.items() if not k.endswith("num_batches_tracked"))
        obj, edges = sd, True
    model = build_from_official(obj, variant, edge_heads=edges)
    check_same_tensors(model, sd, edges)


def test_load_errors_name_what_differs(official_sd, tmp_path):
    sd = OrderedDict(official_sd)
    bad = OrderedDict(sd)
    bad["layer7.conv.weight"] = torch.zeros(1)
    with pytest.raises(StateDictMismatch, match="layer7.conv.weight"):
        build_from_official(bad, "unknown.pth")
    bad = OrderedDict(sd)
    del bad["context.dualgcn.conv_adj.weight"]
    with pytest.raises(StateDictMismatch, match=r"missing from the file: context\.dualgcn\.conv_adj\.weight"):
        build_from_official(bad, "missing.pth")
    bad = OrderedDict(sd)
    bad["layer2.0.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    with pytest.raises(StateDictMismatch, match=r"shape.pth: 'layer2.0.conv2.weight' has shape \(128, 128, 1, 1\) "
                                                r"in the file but \(128, 128, 3, 3\)"):
        build_from_official(bad, "shape.pth")
    no_edges = OrderedDict((k, v) for k, v in sd.items() if not k.startswith("edge_layer."))
    with pytest.raises(StateDictMismatch, match="edge_heads=False"):
        build_from_official(no_edges, "noedges.pth", edge_heads=True)
    # an 11-class model cannot take a 19-class file: the error names the class layer and both counts
    from dml_csr.models.official import convert_official_state_dict, load_state_dict_strict
    with torch.device("meta"):
        model = build_model(ModelConfig(edge_heads=False), 11)
    model = model.to_empty(device="cpu")
    sd19 = convert_official_state_dict(official_state_dict(19), "x19.pth")
    with pytest.raises(StateDictMismatch, match=r"layer6.conv4.weight.*19 in the file, 11 in the model"):
        load_state_dict_strict(model, sd19, "x19.pth", display=ours_to_official)