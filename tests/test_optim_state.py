"""Schedulers and clip_grad_norm_ against PyTorch step by step; optimizer and scheduler state
that resumes exactly; parameter groups."""
import math
import warnings

import numpy as np
import pytest

import convkit
from convkit import nn, optim
from conftest import needs_torch, torch


def _sgd_pair(momentum=0.9, **kw):
    p = nn.Parameter(np.zeros(2))
    tp = torch.nn.Parameter(torch.zeros(2, dtype=torch.float32))
    return (optim.SGD([p], lr=0.1, momentum=momentum, **kw),
            torch.optim.SGD([tp], lr=0.1, momentum=momentum, **kw))


SCHEDULES = {
    "step": (lambda o: optim.StepLR(o, 3, 0.1),
             lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.1), 20),
    "multistep": (lambda o: optim.MultiStepLR(o, [2, 5, 5, 9], 0.3),
                  lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5, 5, 9], 0.3), 20),
    "cosine": (lambda o: optim.CosineAnnealingLR(o, 7, 0.001),
               lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 7, 0.001), 30),
    "exponential": (lambda o: optim.ExponentialLR(o, 0.8),
                    lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.8), 15),
    "linear": (lambda o: optim.LinearLR(o, 0.25, 0.9, 6),
               lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.25, 0.9, 6), 12),
    "linear-default": (lambda o: optim.LinearLR(o),
                       lambda o: torch.optim.lr_scheduler.LinearLR(o), 9),
    "lambda": (lambda o: optim.LambdaLR(o, lambda e: 0.5 * (1 + math.cos(e / 3))),
               lambda o: torch.optim.lr_scheduler.LambdaLR(
                   o, lambda e: 0.5 * (1 + math.cos(e / 3))), 12),
    "sequential": (lambda o: optim.SequentialLR(o, [optim.LinearLR(o, 0.1, total_iters=5),
                                                    optim.CosineAnnealingLR(o, 15)], [5]),
                   lambda o: torch.optim.lr_scheduler.SequentialLR(
                       o, [torch.optim.lr_scheduler.LinearLR(o, 0.1, total_iters=5),
                           torch.optim.lr_scheduler.CosineAnnealingLR(o, 15)], [5]), 25),
    "sequential3": (lambda o: optim.SequentialLR(o, [optim.ExponentialLR(o, 0.9),
                                                     optim.StepLR(o, 3, 0.5),
                                                     optim.MultiStepLR(o, [0, 2, 4], 0.7)],
                                                 [4, 10]),
                    lambda o: torch.optim.lr_scheduler.SequentialLR(
                        o, [torch.optim.lr_scheduler.ExponentialLR(o, 0.9),
                            torch.optim.lr_scheduler.StepLR(o, 3, 0.5),
                            torch.optim.lr_scheduler.MultiStepLR(o, [0, 2, 4], 0.7)],
                        [4, 10]), 20),
    "sequential-lambda": (lambda o: optim.SequentialLR(
                              o, [optim.LambdaLR(o, lambda e: 0.5 + e),
                                  optim.LinearLR(o, 0.3, 0.8, 4)], [3]),
                          lambda o: torch.optim.lr_scheduler.SequentialLR(
                              o, [torch.optim.lr_scheduler.LambdaLR(o, lambda e: 0.5 + e),
                                  torch.optim.lr_scheduler.LinearLR(o, 0.3, 0.8, 4)], [3]), 12),
    "onecycle": (lambda o: optim.OneCycleLR(o, 1.0, total_steps=25),
                 lambda o: torch.optim.lr_scheduler.OneCycleLR(o, 1.0, total_steps=25), 24),
    "onecycle3": (lambda o: optim.OneCycleLR(o, [0.5], epochs=3, steps_per_epoch=7,
                                             three_phase=True, anneal_strategy="linear",
                                             pct_start=0.25),
                  lambda o: torch.optim.lr_scheduler.OneCycleLR(
                      o, [0.5], epochs=3, steps_per_epoch=7, three_phase=True,
                      anneal_strategy="linear", pct_start=0.25), 20),
}


@needs_torch
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_give_pytorchs_learning_rates_and_momenta_exactly(name):
    make_c, make_t, n = SCHEDULES[name]
    oc, ot = _sgd_pair()
    sc, st = make_c(oc), make_t(ot)
    seq_c, seq_t = [], []
    for _ in range(n):
        seq_c.append((oc.lr, oc.param_groups[0]["momentum"], sc.get_last_lr()))
        seq_t.append((ot.param_groups[0]["lr"], ot.param_groups[0]["momentum"],
                      st.get_last_lr()))
        ot.step()
        sc.step()
        st.step()
    assert seq_c == seq_t
    assert len({lr for lr, _, _ in seq_c}) > 2  # the schedule moved


@needs_torch
@pytest.mark.parametrize("kw", [dict(patience=2, cooldown=1, factor=0.5),
                                dict(mode="max", threshold_mode="abs", threshold=0.01,
                                     patience=1, min_lr=0.02),
                                dict(patience=0, eps=0.05, factor=0.9)])
def test_reduce_on_plateau_follows_pytorch(kw):
    metrics = [1, 0.9, 0.95, 0.95, 0.95, 0.8, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.86, 0.7,
               0.7, 0.7, 0.7, 0.7]
    oc, ot = _sgd_pair()
    sc = optim.ReduceLROnPlateau(oc, **kw)
    st = torch.optim.lr_scheduler.ReduceLROnPlateau(ot, **kw)
    got, want = [], []
    for m in metrics:
        sc.step(m)
        st.step(m)
        got.append(oc.lr)
        want.append(ot.param_groups[0]["lr"])
    assert got == want
    assert got[-1] < 0.1 or kw.get("eps") == 0.05


@needs_torch
def test_one_cycle_cycles_adams_beta1_like_pytorch():
    p = nn.Parameter(np.zeros(2))
    tp = torch.nn.Parameter(torch.zeros(2, dtype=torch.float32))
    oc, ot = optim.Adam([p], lr=1e-3), torch.optim.Adam([tp], lr=1e-3)
    sc = optim.OneCycleLR(oc, 0.01, total_steps=12, base_momentum=0.8, max_momentum=0.9)
    st = torch.optim.lr_scheduler.OneCycleLR(ot, 0.01, total_steps=12, base_momentum=0.8,
                                             max_momentum=0.9)
    for _ in range(11):
        assert oc.param_groups[0]["betas"] == ot.param_groups[0]["betas"]
        assert oc.lr == ot.param_groups[0]["lr"]
        ot.step()
        sc.step()
        st.step()
    with pytest.raises(ValueError, match="total_steps"):
        sc.step()
        sc.step()


def test_schedule_errors_are_clear():
    opt = optim.Adagrad([nn.Parameter(np.zeros(2))])
    with pytest.raises(ValueError, match="cycle_momentum"):
        optim.OneCycleLR(opt, 0.1, total_steps=10)
    with pytest.raises(ValueError, match="total_steps"):
        optim.OneCycleLR(opt, 0.1, cycle_momentum=False)
    with pytest.raises(ValueError, match="increasing"):
        optim.MultiStepLR(opt, [3, 1])
    with pytest.raises(ValueError, match="T_max"):
        optim.CosineAnnealingLR(opt, 0)
    with pytest.raises(TypeError, match="optimizer"):
        optim.StepLR("sgd", 2)
    with pytest.raises(ValueError, match="factor"):
        optim.ReduceLROnPlateau(opt, factor=1.5)


@needs_torch
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])
def test_clip_grad_norm_matches_pytorch(norm_type, max_norm):
    rng = np.random.default_rng(7)
    grads = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (5,), (2, 2, 3)]]
    ps, tps = [], []
    for g in grads:
        p = nn.Parameter(np.zeros(g.shape))
        p.grad[...] = g
        ps.append(p)
        tp = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float32))
        tp.grad = torch.from_numpy(g.copy())
        tps.append(tp)
    total = optim.clip_grad_norm_(ps, max_norm, norm_type=norm_type)
    want = torch.nn.utils.clip_grad_norm_(tps, max_norm, norm_type=norm_type)
    assert abs(total - float(want)) <= 1e-6 * float(want)
    for p, tp in zip(ps, tps):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=2e-6, atol=1e-8)
    if max_norm > 1e5:  # nothing to clip: the gradients are untouched
        for p, g in zip(ps, grads):
            assert np.array_equal(p.grad, g)


def test_clip_grad_norm_nonfinite():
    p = nn.Parameter(np.zeros(3))
    p.grad[...] = [1.0, np.inf, 0.0]
    with pytest.raises(RuntimeError, match="error_if_nonfinite"):
        optim.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    assert p.grad[1] == np.inf  # untouched
    assert optim.clip_grad_norm_(p, 1.0) == math.inf  # a single Parameter is accepted too


def _train(opt_factory, steps, seed=3, resume_at=None, sched_factory=None):
    """A few steps of a tiny regression; optionally rebuilt from state_dicts at resume_at."""
    rng = np.random.default_rng(seed)
    convkit.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    x = rng.standard_normal((steps, 16, 4)).astype(np.float32)
    t = rng.standard_normal((steps, 16, 2)).astype(np.float32)
    loss = nn.MSELoss()
    opt = opt_factory(model.parameters())
    sched = sched_factory(opt) if sched_factory else None
    for i in range(steps):
        if i == resume_at:
            ms, os_, ss = model.state_dict(), opt.state_dict(), sched and sched.state_dict()
            model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
            model.load_state_dict(ms)
            opt = opt_factory(model.parameters())
            sched = sched_factory(opt) if sched_factory else None
            opt.load_state_dict(os_)
            if sched:
                sched.load_state_dict(ss)
        loss(model(x[i]), t[i])
        opt.zero_grad()
        model.backward(loss.backward())
        opt.step()
        if sched:
            sched.step()
    return model.state_dict()


OPTIMIZERS = {
    "sgd": lambda p: optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd-damp": lambda p: optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.2),
    "adam": lambda p: optim.Adam(p, lr=0.01, weight_decay=1e-3),
    "adam-amsgrad": lambda p: optim.Adam(p, lr=0.01, amsgrad=True),
    "adamw": lambda p: optim.AdamW(p, lr=0.01, weight_decay=0.1, amsgrad=True),
    "adagrad": lambda p: optim.Adagrad(p, lr=0.05),
    "rmsprop": lambda p: optim.RMSprop(p, lr=0.01, momentum=0.5),
    "adadelta": lambda p: optim.Adadelta(p),
    "adagrad-decay": lambda p: optim.Adagrad(p, lr=0.05, lr_decay=0.1,
                                             initial_accumulator_value=0.2),
    "rmsprop-centered": lambda p: optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_and_scheduler_state_resume_bit_exactly(name):
    sched = lambda o: optim.CosineAnnealingLR(o, 5)  # noqa: E731
    whole = _train(OPTIMIZERS[name], 9, sched_factory=sched)
    resumed = _train(OPTIMIZERS[name], 9, resume_at=4, sched_factory=sched)
    for k in whole:
        assert np.array_equal(whole[k], resumed[k]), k
    fresh = _train(OPTIMIZERS[name], 9, resume_at=None, seed=4)
    assert not np.array_equal(fresh["0.weight"], whole["0.weight"])


@needs_torch
@pytest.mark.parametrize("name", ["sgd", "adam", "adam-amsgrad", "adamw", "rmsprop", "adagrad",
                                  "adadelta", "rmsprop-centered", "adagrad-decay", "sgd-max"])
def test_a_pytorch_optimizer_state_continues_in_convkit(name):
    rng = np.random.default_rng(5)
    w0 = rng.standard_normal((3, 4)).astype(np.float32)
    grads = rng.standard_normal((6, 3, 4)).astype(np.float32)
    kw = {"sgd": dict(lr=0.1, momentum=0.9), "adam": dict(lr=0.01), "rmsprop":
          dict(lr=0.01, momentum=0.3), "adagrad": dict(lr=0.1), "adadelta": dict(lr=1.0),
          "adam-amsgrad": dict(lr=0.01, amsgrad=True),
          "adamw": dict(lr=0.01, weight_decay=0.2, amsgrad=True),
          "rmsprop-centered": dict(lr=0.01, momentum=0.3, centered=True),
          "adagrad-decay": dict(lr=0.1, lr_decay=0.2, initial_accumulator_value=0.3),
          "sgd-max": dict(lr=0.1, momentum=0.9, maximize=True)}[name]
    tcls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop,
            "adagrad": torch.optim.Adagrad, "adadelta": torch.optim.Adadelta,
            "adam-amsgrad": torch.optim.Adam, "adamw": torch.optim.AdamW,
            "rmsprop-centered": torch.optim.RMSprop, "adagrad-decay": torch.optim.Adagrad,
            "sgd-max": torch.optim.SGD}[name]
    ccls = {"sgd": optim.SGD, "adam": optim.Adam, "rmsprop": optim.RMSprop,
            "adagrad": optim.Adagrad, "adadelta": optim.Adadelta, "adam-amsgrad": optim.Adam,
            "adamw": optim.AdamW, "rmsprop-centered": optim.RMSprop,
            "adagrad-decay": optim.Adagrad, "sgd-max": optim.SGD}[name]
    tp = torch.nn.Parameter(torch.from_numpy(w0.copy()))
    topt = tcls([tp], **kw)
    for g in grads[:3]:
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
    p = nn.Parameter(tp.detach().numpy())
    copt = ccls([p], **kw)
    copt.load_state_dict(topt.state_dict())
    for g in grads[3:]:
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        p.grad[...] = g
        copt.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


@needs_torch
def test_adam_and_adamw_states_are_not_mixed_up():
    for mine, theirs in ((optim.Adam, torch.optim.AdamW), (optim.AdamW, torch.optim.Adam)):
        t = theirs([torch.nn.Parameter(torch.zeros(3))])
        with pytest.raises(ValueError, match="decoupled_weight_decay"):
            mine([nn.Parameter(np.zeros(3))]).load_state_dict(t.state_dict())


def test_optimizer_load_state_dict_rejects_other_states_and_changes_nothing():
    model = nn.Linear(3, 2)
    sgd = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    adam = optim.Adam(model.parameters())
    model.weight.grad[...] = 1.0
    sgd.step()
    adam.step()
    before = adam.state_dict()
    with pytest.raises(ValueError, match="momentum_buffer"):
        adam.load_state_dict(sgd.state_dict())
    bad = adam.state_dict()
    bad["state"][0]["exp_avg"] = np.zeros((5, 5), np.float32)
    with pytest.raises(ValueError, match="shape"):
        adam.load_state_dict(bad)
    other = optim.Adam(nn.Linear(3, 2).weight and [nn.Parameter(np.zeros(3))])
    with pytest.raises(ValueError, match="groups of sizes"):
        adam.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="param_groups"):
        adam.load_state_dict({"weights": 1})
    after = adam.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for i in before["state"]:
        for k, v in before["state"][i].items():
            assert np.array_equal(after["state"][i][k], v)


def test_parameter_groups_take_their_own_hyperparameters():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "weight_decay": 0.1}], lr=0.1)
    a.grad[...] = 1.0
    b.grad[...] = 1.0
    opt.step()
    np.testing.assert_allclose(a.data, 0.9)
    np.testing.assert_allclose(b.data, 1 - 0.5 * 1.1, rtol=1e-6)
    opt.lr = 0.01  # sets every group
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]
    with pytest.raises(ValueError, match="unknown option"):
        optim.SGD([{"params": [a], "betas": (0.9, 0.9)}], lr=0.1)
    with pytest.raises(ValueError, match="more than one group"):
        optim.SGD([{"params": [a]}, {"params": [a]}], lr=0.1)


def test_scheduler_state_dict_round_trip_and_wrong_state():
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    s = optim.MultiStepLR(opt, [2, 4], 0.5)
    for _ in range(3):
        s.step()
    state = s.state_dict()
    opt2 = optim.SGD([nn.Parameter(np.zeros(1))], lr=1.0)
    s2 = optim.MultiStepLR(opt2, [9], 0.1)
    s2.load_state_dict(state)
    opt2.lr = opt.lr
    for _ in range(3):
        s.step()
        s2.step()
        assert opt.lr == opt2.lr
    r = optim.ReduceLROnPlateau(opt)
    with pytest.raises(ValueError, match="another scheduler"):
        r.load_state_dict(optim.StepLR(opt2, 1).state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optim.StepLR(opt, 2).step()


@pytest.mark.parametrize("kw", [dict(momentum=0.0), dict(momentum=0.9),
                                dict(momentum=0.9, dampening=0.3, weight_decay=1e-2),
                                dict(momentum=0.8, nesterov=True, weight_decay=3e-3),
                                dict(momentum=0.0, weight_decay=0.1)])
def test_sgd_steps_are_numpys_float32_sequence_bit_for_bit(isa, kw):
    # optim.SGD updates each parameter in one core call; it must give the bits of PyTorch's
    # update spelled as separate float32 NumPy operations (no fused multiply-adds), on every
    # ISA, on sizes around the core's blocks and chunks, with NaN, Inf and -0 in the gradients,
    # any threads
    rng = np.random.default_rng(7)
    sizes = [1, 17, 513, 40000]
    lr, m = 0.05, kw.get("momentum", 0.0)
    d, wd, nesterov = kw.get("dampening", 0.0), kw.get("weight_decay", 0.0), kw.get("nesterov")
    before = convkit.get_num_threads()
    for threads in (1, 2):
        convkit.set_num_threads(threads)
        ps = [nn.Parameter(rng.standard_normal(n)) for n in sizes]
        want = [p.data.copy() for p in ps]
        bufs = [None] * len(sizes)
        opt = optim.SGD(ps, lr=lr, **kw)
        for step in range(3):
            for i, p in enumerate(ps):
                p.grad[...] = rng.standard_normal(p.grad.shape) * 10.0 ** rng.integers(-3, 3)
                if p.grad.size > 3:
                    p.grad[:3] = (np.nan, np.inf, -0.0) if step == 2 else p.grad[:3]
                g = p.grad.copy()
                if wd:
                    g = np.multiply(want[i], np.float32(wd)) + g
                if m:
                    if bufs[i] is None:
                        bufs[i] = g.copy()
                    else:
                        b = bufs[i] * np.float32(m)
                        bufs[i] = b + (g * np.float32(1.0 - d) if d else g)
                    g = bufs[i] * np.float32(m) + g if nesterov else bufs[i]
                want[i] = want[i] - g * np.float32(lr)
            opt.step()
            for i, p in enumerate(ps):
                assert p.data.dtype == np.float32
                assert np.array_equal(p.data, want[i], equal_nan=True), (threads, step, i)
                if m:
                    assert np.array_equal(opt.state[i]["momentum_buffer"], bufs[i],
                                          equal_nan=True)
    convkit.set_num_threads(before)


def test_zero_grad_zeroes_every_gradient():
    ps = [nn.Parameter(np.ones(n)) for n in (1, 5, 3000)]
    for p in ps:
        p.grad[...] = np.nan
    opt = optim.SGD(ps, lr=0.1)
    opt.zero_grad()
    assert all(not p.grad.any() and not np.signbit(p.grad).any() for p in ps)
    ps[1].grad = np.full(5, 2.0)  # float64: zeroed all the same
    opt.zero_grad()
    assert all(not p.grad.any() for p in ps) and ps[1].grad.dtype == np.float64


@pytest.mark.parametrize("kw", [dict(momentum=0.9, dampening=0.2),
                                dict(momentum=0.9, nesterov=True), dict(momentum=0.0)])
def test_sgd_with_a_gradient_the_core_cannot_update_in_place_takes_the_numpy_steps(kw):
    # a float64 .grad is not what the core updates in place: SGD does its NumPy steps instead
    rng = np.random.default_rng(3)
    p = nn.Parameter(rng.standard_normal(37))
    want, buf = p.data.copy(), None
    m, d, lr = kw["momentum"], kw.get("dampening", 0.0), 0.1
    opt = optim.SGD([p], lr=lr, **kw)
    for _ in range(3):
        p.grad = rng.standard_normal(37)  # float64
        g = p.grad.copy()
        f32 = np.empty(37, np.float32)  # the float32 scratch the NumPy steps write through
        if m:
            if buf is None:
                buf = g.copy()
            else:
                buf *= np.float32(m)
                buf += np.multiply(g, np.float32(1.0 - d), out=f32) if d else g
            if kw.get("nesterov"):
                np.multiply(buf, np.float32(m), out=f32)
                f32 += g
                g = f32.copy()
            else:
                g = buf
        want -= np.multiply(g, np.float32(lr), out=f32)
        opt.step()
        assert p.data.dtype == np.float32 and np.array_equal(p.data, want)


class _Warmup:  # a callable object: LambdaLR's state_dict keeps its attributes (PyTorch's rule)
    def __init__(self, n):
        self.n = n

    def __call__(self, e):
        return min(1.0, (e + 1) / self.n)


@needs_torch
def test_lambda_lr_per_group_and_its_state_as_pytorch():
    def pair():
        ps = [nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))]
        tps = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(3))]
        return (optim.SGD([{"params": [ps[0]]}, {"params": [ps[1]], "lr": 0.5}], lr=0.1),
                torch.optim.SGD([{"params": [tps[0]]}, {"params": [tps[1]], "lr": 0.5}], lr=0.1))
    oc, ot = pair()
    sc = optim.LambdaLR(oc, [_Warmup(4), lambda e: 0.9 ** e])
    st = torch.optim.lr_scheduler.LambdaLR(ot, [_Warmup(4), lambda e: 0.9 ** e])
    for _ in range(6):
        assert sc.get_last_lr() == st.get_last_lr()
        ot.step()
        sc.step()
        st.step()
    state = sc.state_dict()
    assert state["lr_lambdas"] == [{"n": 4}, None]
    oc2, _ = pair()
    sc2 = optim.LambdaLR(oc2, [_Warmup(9), lambda e: 0.9 ** e])
    sc2.load_state_dict(state)
    assert sc2.lr_lambdas[0].n == 4 and sc2.last_epoch == sc.last_epoch
    with pytest.raises(ValueError, match="2 lr_lambdas"):
        optim.LambdaLR(oc, [lambda e: 1.0])
    with pytest.raises(ValueError, match="start_factor"):
        optim.LinearLR(oc, start_factor=0.0)
    with pytest.raises(ValueError, match="end_factor"):
        optim.LinearLR(oc, end_factor=1.5)


def test_sequential_lr_resumes_exactly_and_checks_its_arguments():
    def make():
        p = nn.Parameter(np.zeros(2))
        opt = optim.SGD([p], lr=0.2, momentum=0.9)
        return opt, optim.SequentialLR(opt, [optim.LinearLR(opt, 0.2, total_iters=3),
                                             optim.CosineAnnealingLR(opt, 8)], [3])
    opt, sched = make()
    whole = []
    for i in range(12):
        whole.append(opt.lr)
        if i == 5:
            saved = (opt.state_dict(), sched.state_dict())
        opt.step()
        sched.step()
    opt2, sched2 = make()
    opt2.load_state_dict(saved[0])
    sched2.load_state_dict(saved[1])
    resumed = []
    for i in range(5, 12):
        resumed.append(opt2.lr)
        opt2.step()
        sched2.step()
    assert resumed == whole[5:]
    other = optim.SGD([nn.Parameter(np.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="milestones"):
        optim.SequentialLR(opt, [optim.StepLR(opt, 2)], [3])
    with pytest.raises(ValueError, match="another optimizer"):
        optim.SequentialLR(opt, [optim.StepLR(opt, 2), optim.StepLR(other, 2)], [3])
    with pytest.raises(TypeError, match="ReduceLROnPlateau"):
        optim.SequentialLR(opt, [optim.ReduceLROnPlateau(opt)], [])
