"""Self-ensemble (eq. 6), its running sum, the cycle index and the self-regulation state a run carries."""
import io

import pytest
import torch
from torch import nn

from dml_csr.training.self_correction import (RunningSum, SelfRegulation, cycle_position, model_state, moving_average,
                                            self_ensemble)


# ------------------------------------------------------------------------------------------------------ eq. 6
def _toy_states(n, seed=0):
    torch.manual_seed(seed)
    states = []
    for _ in range(n):
        m = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
        with torch.no_grad():
            m[1].running_mean.normal_()
            m[1].num_batches_tracked.fill_(int(torch.randint(0, 100, ())))
        states.append({k: v.clone() for k, v in m.state_dict().items()})
    return states


def test_self_ensemble_matches_eq6():
    best, *cycle = _toy_states(4)
    rs = RunningSum(dtype=torch.float64)
    for s in cycle:
        rs.add(s)
    for k in (1, 2, 5):
        out = self_ensemble(best, rs, k)
        for name, b in best.items():
            if b.is_floating_point():
                expected = k / (k + 1) * b.double() + sum(s[name].double() for s in cycle) / ((k + 1) * len(cycle))
                assert out[name].dtype == b.dtype
                assert torch.allclose(out[name].double(), expected, atol=1e-7, rtol=0)
            else:  # integer buffers: the latest model's value
                assert out[name].item() == cycle[-1][name].item()
    # k = 1 weighs the best model and the cycle's mean equally
    half = self_ensemble(best, rs, 1)
    w = "0.weight"
    assert torch.allclose(half[w], 0.5 * best[w] + 0.5 * sum(s[w] for s in cycle) / 3, atol=1e-7)


def test_self_ensemble_of_two_models_and_errors():
    best, a, b = _toy_states(3, seed=1)
    rs = RunningSum()
    rs.add(a)
    rs.add(b)
    out = self_ensemble(best, rs, 2)
    assert torch.allclose(out["0.bias"], 2 / 3 * best["0.bias"] + (a["0.bias"] + b["0.bias"]) / 6, atol=1e-7)
    assert out["1.num_batches_tracked"].item() == b["1.num_batches_tracked"].item()
    with pytest.raises(ValueError, match="holds no model"):
        self_ensemble(best, RunningSum(), 1)
    partial = RunningSum()
    partial.add({"0.weight": a["0.weight"]})
    with pytest.raises(KeyError, match="lacks"):
        self_ensemble(best, partial, 1)


def test_running_sum_state_roundtrip_and_key_check():
    states = _toy_states(3, seed=2)
    rs = RunningSum()
    rs.add(states[0])
    rs.add(states[1])
    buf = io.BytesIO()
    torch.save(rs.state_dict(), buf)
    buf.seek(0)
    restored = RunningSum()
    restored.load_state_dict(torch.load(buf, weights_only=True))
    restored.add(states[2])
    rs.add(states[2])
    assert restored.count == 3
    for k in rs.sums:
        assert torch.equal(restored.sums[k], rs.sums[k])
    mean = self_ensemble(states[0], restored, 0)  # k = 0: the plain mean of the summed models
    assert torch.allclose(mean["0.weight"], sum(s["0.weight"] for s in states) / 3, atol=1e-7)
    with pytest.raises(KeyError, match="same architecture"):
        rs.add({"0.weight": states[0]["0.weight"]})
    rs.reset()
    with pytest.raises(ValueError, match="no model"):
        self_ensemble(states[0], rs, 0)


def test_cycle_position():
    assert cycle_position(0, 150, 10) == (0, 0)
    assert cycle_position(149, 150, 10) == (0, 149)
    assert cycle_position(150, 150, 10) == (1, 0)
    assert cycle_position(159, 150, 10) == (1, 9)
    assert cycle_position(199, 150, 10) == (5, 9)


# ------------------------------------------------------------------------------------- the self-regulation state
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.bn = nn.BatchNorm1d(2)


def _set(net, value):
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
    return net


def test_self_regulation_teacher_sum_and_aggregate():
    """E = 2, N = 2: the best first-phase student teaches cycle 1; its end aggregates it with the cycle's two
    students as eq. 6 says (k = 1: halves), and the re-estimation callback sees the aggregate."""
    csr, net = SelfRegulation(first_phase_epochs=2, cycle_epochs=2), _Net()
    assert csr.teacher_for_epoch(0, net) is None
    csr.observe(0, 0.5, _set(net, 1.0))
    csr.observe(1, 0.4, _set(net, 2.0))  # worse: M_best stays the epoch-0 weights
    assert csr.phase1_best == 0.5 and csr.end_of_cycle(1, net, lambda m: None) is None
    teacher = csr.teacher_for_epoch(2, net)
    assert torch.equal(teacher.fc.weight, torch.ones(2, 2)) and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    csr.after_epoch(2, _set(net, 3.0))
    assert csr.end_of_cycle(2, net, lambda m: None) is None  # not the cycle's last epoch
    csr.after_epoch(3, _set(net, 5.0))
    csr.observe(3, 0.9, net)  # a cycle's score does not touch M_best
    seen = []

    def reestimate(m):
        seen.append(m.fc.weight.clone())
        m.bn.running_mean.fill_(7.0)

    new = csr.end_of_cycle(3, net, reestimate)
    expected = 0.5 * 1.0 + (3.0 + 5.0) / (2 * 2)
    assert torch.allclose(seen[0], torch.full((2, 2), expected))
    assert torch.allclose(new.fc.weight, torch.full((2, 2), expected))
    assert torch.equal(csr.teacher_state["bn.running_mean"], torch.full((2,), 7.0))
    assert csr.teacher_for_epoch(4, net) is new and csr.running.count == 0
    assert torch.equal(csr.best_state["fc.weight"], torch.ones(2, 2)) and csr.phase1_best == 0.5


def test_self_regulation_state_round_trips_through_a_weights_only_checkpoint():
    csr, net = SelfRegulation(1, 3), _Net()
    csr.observe(0, 0.7, _set(net, 1.0))
    csr.teacher_for_epoch(1, net)
    csr.after_epoch(1, _set(net, 4.0))
    buf = io.BytesIO()
    torch.save(csr.state_dict(), buf)
    buf.seek(0)
    restored = SelfRegulation(1, 3)
    restored.load_state_dict(torch.load(buf, weights_only=True))
    for c in (csr, restored):
        c.after_epoch(2, _set(net, 7.0))
        c.after_epoch(3, _set(net, 10.0))
    a = csr.end_of_cycle(3, net, lambda m: None)
    b = restored.end_of_cycle(3, net, lambda m: None)
    assert torch.equal(a.fc.weight, b.fc.weight)
    assert torch.allclose(b.fc.weight, torch.full((2, 2), 0.5 * 1.0 + (4.0 + 7.0 + 10.0) / 6))
    assert restored.phase1_best == 0.7 and set(model_state(net)) == set(restored.teacher_state)


# ------------------------------------------------------------------------ the authors' running average (official)
def test_moving_average_is_schps_step():
    avg, new = _toy_states(2, seed=4)
    out = moving_average(avg, new, 0.25)
    for name, t in new.items():
        if t.is_floating_point():
            assert torch.allclose(out[name].double(), 0.75 * avg[name].double() + 0.25 * t.double(), atol=1e-7)
        else:
            assert out[name].item() == t.item()
    first = moving_average(None, new, 1.0)  # the first aggregation is the student itself
    assert all(torch.equal(first[k], new[k]) for k in new)
    with pytest.raises(ValueError, match="alpha"):
        moving_average(avg, new, 0.0)


def test_self_regulation_moving_average_aggregates_after_the_first_phase_and_every_cycle():
    """E = 2, N = 1, K = 2: the aggregate after epoch 2 is the last first-phase student (not the best one), then
    the mean of the students at the end of the first phase and of each cycle; every aggregate is re-estimated."""
    csr, net = SelfRegulation(2, 1, ensemble="moving_average", cycles=2), _Net()
    csr.observe(0, 0.9, _set(net, 1.0))  # the best first-phase student: not used by the authors' code
    csr.observe(1, 0.1, _set(net, 2.0))
    calls = []
    first = csr.end_of_cycle(1, net, lambda m: calls.append(m.fc.weight.clone()))
    assert torch.equal(first.fc.weight, torch.full((2, 2), 2.0)) and csr.teacher_for_epoch(2, net) is first
    csr.after_epoch(2, _set(net, 5.0))
    second = csr.end_of_cycle(2, net, lambda m: calls.append(m.fc.weight.clone()))
    assert torch.allclose(second.fc.weight, torch.full((2, 2), (2.0 + 5.0) / 2))
    csr.after_epoch(3, _set(net, 11.0))
    third = csr.end_of_cycle(3, net, lambda m: calls.append(m.fc.weight.clone()))
    assert torch.allclose(third.fc.weight, torch.full((2, 2), (2.0 + 5.0 + 11.0) / 3))
    assert len(calls) == 3 and csr.running.count == 0
    assert not SelfRegulation(2, 1, ensemble="moving_average", cycles=0).aggregates_after(1)
    assert not SelfRegulation(2, 1).aggregates_after(1)  # eq. 6: cycle ends only
