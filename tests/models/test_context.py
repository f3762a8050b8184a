"""The context modules of the paper's Table 5 against their papers' definitions, written out here: PSPNet's pyramid
pooling (bins 1, 2, 3, 6; C/4 channels a level) and DGCNet's two graphs (an n x n adjacency over the positions of the
map downsampled by 8, a feature graph of C/4 nodes of C/2 features); each "-pooling" variant without its pooling; and
every context of model.context in a DML-CSR that trains a step."""
import math

import pytest
import torch
import torch.nn.functional as F

from dml_csr.models.context import CONTEXTS, DualGraph, PyramidPooling
from dml_csr.models.dml_csr import DMLCSR
from dml_csr.models.norm import make_norm

NORM = make_norm("abn")


def _bin_average(x, b):
    """PSPNet's b x b pyramid level: bin (i, j) averages rows floor(i H / b) .. ceil((i + 1) H / b) - 1 and the same
    for columns."""
    h, w = x.shape[-2:]
    out = torch.empty(*x.shape[:2], b, b)
    for i in range(b):
        for j in range(b):
            rows = slice(math.floor(i * h / b), math.ceil((i + 1) * h / b))
            cols = slice(math.floor(j * w / b), math.ceil((j + 1) * w / b))
            out[:, :, i, j] = x[:, :, rows, cols].mean(dim=(-2, -1))
    return out


def test_psp_pools_into_1_2_3_and_6_bins_of_a_quarter_of_the_channels():
    x = torch.randn(2, 16, 13, 11)
    psp = PyramidPooling(16, 8, NORM).eval()
    for b, stage in zip((1, 2, 3, 6), psp.stages):
        pooled = stage[0](x)
        assert torch.allclose(pooled, _bin_average(x, b), atol=1e-6)
        assert tuple(stage(x).shape) == (2, 16 // 4, b, b)  # "1/N of the original" for N = 4 levels
    assert tuple(psp(x).shape) == (2, 8, 13, 11)
    assert psp.bottleneck[0].in_channels == 16 + 4 * 4  # the input and the four upsampled levels


def test_psp_without_pooling_keeps_every_level_at_full_resolution_and_the_same_parameters():
    x = torch.randn(2, 16, 13, 11)
    nopool = CONTEXTS["psp_nopool"](16, 8, NORM).eval()
    assert not any(isinstance(m, torch.nn.AdaptiveAvgPool2d) for m in nopool.modules())
    assert all(tuple(stage(x).shape) == (2, 4, 13, 11) for stage in nopool.stages)
    pooled = CONTEXTS["psp"](16, 8, NORM)
    assert [p.shape for p in nopool.parameters()] == [p.shape for p in pooled.parameters()]


def _softmax_rows(a):
    e = torch.exp(a - a.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize("downsample", [True, False])
def test_dgcnet_coordinate_graph_is_over_the_positions_of_the_downsampled_map(downsample):
    """GCN-S: nodes are the n = h w positions of V = D(X) (D: three stride-2 convs, h = ceil(H / 8)); A_s =
    softmax(theta(V)^T phi(V)) is n x n with rows summing to 1. Without pooling, V = X and n = H W."""
    x = torch.randn(2, 16, 19, 13)
    graph = DualGraph(16, NORM, downsample=downsample).eval()
    v = graph.down(x)
    h, w = (math.ceil(19 / 8), math.ceil(13 / 8)) if downsample else (19, 13)
    assert tuple(v.shape) == (2, 16, h, w)
    gcn = graph.coordinate
    theta, phi = gcn.theta(v).reshape(2, 8, h * w), gcn.phi(v).reshape(2, 8, h * w)  # C' = C / 2 features a node
    want = _softmax_rows(torch.einsum("bci,bcj->bij", theta, phi))
    adjacency = gcn.adjacency(v)
    assert tuple(adjacency.shape) == (2, h * w, h * w)
    assert torch.allclose(adjacency, want, atol=1e-6) and torch.allclose(adjacency.sum(-1), torch.ones(2, h * w))
    assert tuple(graph(x).shape) == (2, 16, 19, 13)


def test_dgcnet_feature_graph_projects_onto_c_over_4_nodes_of_c_over_2_features():
    """GCN-F: B_F = theta(X) (N x HW, N = C / 4), V_F = phi(X) B_F^T (D x N, D = C / 2); A_F is N x N, W_F D x D."""
    x = torch.randn(2, 16, 7, 5)
    gcn = DualGraph(16, NORM).eval().feature
    v, projection = gcn.project(x)
    b_f, features = gcn.theta(x).reshape(2, 4, 35), gcn.phi(x).reshape(2, 8, 35)
    assert tuple(projection.shape) == (2, 4, 35) and torch.allclose(projection, b_f)
    assert tuple(v.shape) == (2, 8, 4) and torch.allclose(v, torch.einsum("bdp,bnp->bdn", features, b_f), atol=1e-5)
    assert tuple(gcn.conv_adj.weight.shape) == (4, 4, 1) and tuple(gcn.conv_wf.weight.shape) == (8, 8, 1)


class _Pyramid(torch.nn.Module):
    """Four maps at strides 4, 8, 16, 32 with channels unlike a ResNet's."""
    channels = (6, 10, 12, 20)

    def __init__(self):
        super().__init__()
        self.convs = torch.nn.ModuleList(torch.nn.Conv2d(3, c, 3, stride=s, padding=1)
                                         for c, s in zip(self.channels, (4, 8, 16, 32)))

    def forward(self, x):
        return [conv(x) for conv in self.convs]


@pytest.mark.parametrize("context", sorted(CONTEXTS))
def test_each_context_trains_a_step_on_maps_at_strides_4_to_32(context):
    """No head assumes the authors' layer3 at stride 8: the parsing and edges come out at the first map's size, and
    every parameter of the context gets a gradient."""
    torch.manual_seed(0)
    model = DMLCSR(_Pyramid(), 5, NORM, context_channels=16, decoder_channels=8, edge_channels=8, context=context)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, target = torch.randn(2, 3, 64, 96), torch.randint(0, 5, (2, 16, 24))
    out = model(x)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "parsing": (2, 5, 16, 24), "edge": (2, 2, 16, 24), "semantic_edge": (2, 5, 16, 24)}
    loss = F.cross_entropy(out["parsing"], target) + out["edge"].mean() + out["semantic_edge"].mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.context.parameters())
    before = [p.detach().clone() for p in model.context.parameters()]
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.context.parameters()))
