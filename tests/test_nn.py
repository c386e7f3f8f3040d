"""Layer API, optimizers, models: against a PyTorch twin with the same weights."""
import numpy as np
import pytest

import convkit
from convkit import functional as F, models, nn, optim

from conftest import assert_close, needs_torch, torch


def _batch(rng, n=16, c=1, size=28):
    return rng.random((n, c, size, size)).astype(np.float32), rng.integers(0, 10, n)


def _torch_twin(model, dtype):
    """A torch.nn.Sequential with the same layers and weights as a convkit Sequential."""
    tnn = torch.nn
    layers = []
    for layer in model:
        if isinstance(layer, nn.Conv2d):
            t = tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                           layer.stride, layer.padding)
        elif isinstance(layer, nn.Linear):
            t = tnn.Linear(layer.in_features, layer.out_features)
        else:
            t = {nn.ReLU: tnn.ReLU, nn.Tanh: tnn.Tanh, nn.Flatten: tnn.Flatten,
                 nn.Sigmoid: tnn.Sigmoid}.get(type(layer))
            if t is not None:
                t = t()
            elif isinstance(layer, nn.MaxPool2d):
                t = tnn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
            elif isinstance(layer, nn.AvgPool2d):
                t = tnn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
        if hasattr(layer, "weight"):
            t.weight.data = torch.tensor(layer.weight.data, dtype=dtype)
            t.bias.data = torch.tensor(layer.bias.data, dtype=dtype)
        layers.append(t)
    return tnn.Sequential(*layers)


@needs_torch
@pytest.mark.parametrize("flavour", [dict(), dict(activation="tanh", pool="avg"),
                                     dict(in_channels=3, input_size=32)])
def test_lenet5_matches_pytorch_twin(rng, flavour):
    convkit.manual_seed(0)
    model = models.lenet5(**flavour)
    x, y = _batch(rng, c=flavour.get("in_channels", 1), size=flavour.get("input_size", 28))
    twin = _torch_twin(model, torch.float64)
    crit = nn.CrossEntropyLoss()
    loss = crit(model(x), y)
    model.zero_grad()
    dx = model.backward(crit.backward())
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(twin(xt), torch.tensor(y))
    lt.backward()
    assert abs(loss - lt.item()) <= 1e-4 * abs(lt.item())
    assert_close(dx, xt.grad.numpy(), 1e-4, "input grad")
    tparams = list(twin.parameters())
    assert len(tparams) == len(model.parameters())
    for (name, p), t in zip(model.named_parameters(), tparams):
        assert_close(p.grad, t.grad.numpy(), 1e-4, name)


OPTIMIZERS = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.02, momentum=0.9)),
    ("SGD", dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=1e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    ("Adam", dict(lr=1e-3, weight_decay=1e-2, amsgrad=True)),
    ("AdamW", dict(lr=1e-3)),
    ("AdamW", dict(lr=1e-3, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
    ("Adagrad", dict(lr=1e-2, weight_decay=1e-3)),
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, momentum=0.5, weight_decay=1e-3)),
    ("Adadelta", dict(lr=1.0)),
    ("Adadelta", dict(lr=0.5, rho=0.8, weight_decay=1e-3)),
    # PyTorch's keyword options
    ("SGD", dict(lr=0.02, momentum=0.9, weight_decay=1e-3, maximize=True)),
    ("SGD", dict(lr=0.02, maximize=True)),
    ("Adam", dict(lr=1e-3, weight_decay=1e-2, amsgrad=True, maximize=True)),
    ("Adam", dict(lr=1e-3, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=1e-3, weight_decay=0.1, maximize=True)),
    ("Adagrad", dict(lr=1e-2, lr_decay=0.1, initial_accumulator_value=0.5, maximize=True)),
    ("Adagrad", dict(lr=1e-2, weight_decay=1e-3, lr_decay=0.01)),
    ("RMSprop", dict(lr=1e-3, centered=True)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, momentum=0.5, weight_decay=1e-3, centered=True,
                     maximize=True)),
    ("Adadelta", dict(lr=0.5, weight_decay=1e-3, maximize=True)),
]


@needs_torch
@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZERS)])
def test_optimizers_match_pytorch_over_5_steps(rng, name, kw):
    """Same gradients -> same weights: the convkit LeNet-5 trains 5 steps; the torch optimizer
    updates a float32 copy of the weights from the very same gradients."""
    convkit.manual_seed(1)
    model = models.lenet5()
    params = model.parameters()
    tparams = [torch.tensor(p.data, dtype=torch.float32, requires_grad=True) for p in params]
    opt = getattr(optim, name)(params, **kw)
    topt = getattr(torch.optim, name)(tparams, **kw)
    crit = nn.CrossEntropyLoss()
    for _ in range(5):
        x, y = _batch(rng)
        crit(model(x), y)
        opt.zero_grad()
        model.backward(crit.backward())
        for p, t in zip(params, tparams):
            t.grad = torch.tensor(p.grad)
        opt.step()
        topt.step()
    for p, t in zip(params, tparams):
        assert_close(p.data, t.detach().numpy(), 1e-4, name)


@needs_torch
def test_lenet5_full_twin_trains_the_same(rng):
    """Five SGD-with-momentum steps of the convkit model and of a float64 torch twin."""
    convkit.manual_seed(2)
    model = models.lenet5()
    twin = _torch_twin(model, torch.float64)
    opt = optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    topt = torch.optim.SGD(twin.parameters(), lr=0.02, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    for _ in range(5):
        x, y = _batch(rng)
        crit(model(x), y)
        opt.zero_grad()
        model.backward(crit.backward())
        opt.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.tensor(x, dtype=torch.float64)),
                                          torch.tensor(y)).backward()
        topt.step()
    for p, t in zip(model.parameters(), twin.parameters()):
        assert_close(p.data, t.detach().numpy(), 1e-4)


def test_parameter_count_and_names():
    m = models.lenet5()
    assert sum(p.data.size for p in m.parameters()) == 61706
    names = [n for n, _ in m.named_parameters()]
    assert names[:2] == ["0.weight", "0.bias"] and names[-1] == "11.bias" and len(names) == 10
    m3 = models.lenet5(in_channels=3, input_size=32, num_classes=7)
    assert m3(np.zeros((2, 3, 32, 32))).shape == (2, 7)
    assert "Conv2d(1, 6, kernel_size=(5, 5)" in repr(m) and "(11): Linear" in repr(m)


def test_gradients_accumulate_and_zero_grad(rng):
    m = models.lenet5()
    x, y = _batch(rng, n=4)
    crit = nn.CrossEntropyLoss()
    crit(m(x), y)
    m.zero_grad()
    m.backward(crit.backward())
    g1 = [p.grad.copy() for p in m.parameters()]
    crit(m(x), y)
    m.backward(crit.backward())
    for p, g in zip(m.parameters(), g1):
        assert_close(p.grad, 2 * g, 1e-6)
    m.zero_grad()
    assert all(not p.grad.any() for p in m.parameters())


def test_init_is_pytorch_default_and_seeded():
    convkit.manual_seed(5)
    a = nn.Linear(100, 30)
    convkit.manual_seed(5)
    b = nn.Linear(100, 30)
    assert np.array_equal(a.weight.data, b.weight.data)
    assert np.abs(a.weight.data).max() <= 0.1 and np.abs(a.weight.data).max() > 0.09
    c = nn.Conv2d(6, 16, 5)
    bound = 1 / np.sqrt(150)
    assert np.abs(c.weight.data).max() <= bound and np.abs(c.bias.data).max() <= bound


def test_dropout_train_eval(rng):
    d = nn.Dropout(0.5)
    x = np.ones((100, 100), np.float32)
    y = d(x)
    assert set(np.unique(y)) == {0.0, 2.0}
    assert np.array_equal(d.backward(x), y)
    d.eval()
    assert np.array_equal(d(x), x) and np.array_equal(d.backward(x), x)


def test_save_load_roundtrip_and_mismatch(tmp_path, rng):
    m = models.lenet5()
    x, _ = _batch(rng, n=5)
    path = tmp_path / "w.npz"
    m.save(path)
    m2 = models.lenet5().load(path)
    assert np.array_equal(m(x), m2(x))
    m.save(tmp_path / "nosuffix")  # NumPy writes nosuffix.npz; load finds it either way
    assert np.array_equal(models.lenet5().load(tmp_path / "nosuffix")(x), m(x))
    with pytest.raises(ValueError, match="'0.weight' has shape"):
        models.lenet5(in_channels=3, input_size=32).load(path)
    sd = m.state_dict()
    sd["extra.weight"] = np.zeros(3)
    del sd["11.bias"]
    with pytest.raises(ValueError, match=r"missing '11.bias'.*unexpected 'extra.weight'"):
        m2.load_state_dict(sd)
    # strict=False (PyTorch's): the entries present load, the names are returned
    before = m2.state_dict()["11.bias"].copy()
    r = m2.load_state_dict(sd, strict=False)
    assert (r.missing_keys, r.unexpected_keys) == (["11.bias"], ["extra.weight"])
    assert np.array_equal(m2.state_dict()["0.weight"], sd["0.weight"])
    assert np.array_equal(m2.state_dict()["11.bias"], before)
    assert repr(m2.load_state_dict(m.state_dict())) == "<All keys matched successfully>"
    sd["0.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match="'0.weight' has shape"):
        m2.load_state_dict(sd, strict=False)
    with pytest.raises(TypeError, match="mapping"):
        m2.load_state_dict([("0.weight", sd["0.weight"])])


def test_other_losses_and_layers(rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    t = rng.random((4, 3)).astype(np.float32)
    for crit, ref in [(nn.MSELoss(), lambda: ((x - t) ** 2).mean()),
                      (nn.BCEWithLogitsLoss(), lambda: np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))))]:
        assert abs(crit(x, t) - ref()) < 1e-6
        assert crit.backward().shape == x.shape
    for layer in (nn.LeakyReLU(0.1), nn.ELU(0.5), nn.Sigmoid(), nn.Tanh(), nn.AvgPool2d(2)):
        z = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
        assert layer.backward(np.ones_like(layer(z))).shape == z.shape
    with pytest.raises(TypeError, match="Sequential: layer 1"):
        nn.Sequential(nn.ReLU(), "relu")


def test_clip_max_norm_and_steplr():
    p = nn.Parameter(np.zeros(4))
    p.grad[...] = [3, 4, 0, 0]
    total = optim.clip_max_norm([p], 1.0)
    assert abs(total - 5.0) < 1e-6
    assert_close(p.grad, np.array([0.6, 0.8, 0, 0]), 1e-5)
    opt = optim.SGD([p], lr=1.0)
    sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(5):
        sched.step()
        lrs.append(opt.lr)
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25]
    with pytest.raises(ValueError, match="lr"):
        optim.SGD([p], lr=-1)


@needs_torch
def test_conv_layers_with_groups_dilation_padding_mode_match_pytorch(rng):
    from convkit import nn as cnn
    tnn = torch.nn
    pairs = [
        (cnn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2, groups=2, padding_mode="reflect"),
         tnn.Conv2d(4, 8, 3, stride=2, padding=2, dilation=2, groups=2, padding_mode="reflect")),
        (cnn.Conv2d(6, 6, (3, 5), padding="same", groups=6, bias=False),
         tnn.Conv2d(6, 6, (3, 5), padding="same", groups=6, bias=False)),
        (cnn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, output_padding=1, groups=2),
         tnn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, output_padding=1, groups=2)),
    ]
    for ours, theirs in pairs:
        assert ours.weight.data.shape == tuple(theirs.weight.shape)
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(ours.weight.data.astype(np.float64)))
            if ours.bias is not None:
                theirs.bias.copy_(torch.tensor(ours.bias.data.astype(np.float64)))
        x = rng.standard_normal((2, ours.in_channels, 9, 10)).astype(np.float32)
        xt = torch.tensor(x.astype(np.float64), requires_grad=True)
        yt = theirs(xt)
        y = ours(x)
        assert_close(y, yt.detach().numpy(), 1e-5, repr(ours))
        g = rng.standard_normal(y.shape).astype(np.float32)
        yt.backward(torch.tensor(g.astype(np.float64)))
        ours.zero_grad()
        dx = ours.backward(g)
        assert_close(dx, xt.grad.numpy(), 1e-5, "grad_x")
        assert_close(ours.weight.grad, theirs.weight.grad.numpy(), 1e-5, "grad_weight")
        # unbatched
        assert_close(ours(x[0]), yt.detach().numpy()[0], 1e-5, "unbatched")


def test_sequential_skips_the_first_layers_input_gradient(rng):
    from convkit import nn as cnn
    model = cnn.Sequential(cnn.Conv2d(1, 2, 3), cnn.ReLU(), cnn.Flatten(), cnn.Linear(2 * 4 * 4, 3))
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    g = np.ones((2, 3), np.float32)
    model(x)
    model.zero_grad()
    dx = model.backward(g)
    full = [p.grad.copy() for p in model.parameters()]
    model.zero_grad()
    assert model.backward(g, input_grad=False) is None
    for a, p in zip(full, model.parameters()):
        assert a.tobytes() == p.grad.tobytes()
    assert dx.shape == x.shape


def test_backward_before_forward_says_what_to_do():
    from convkit import nn as cnn
    for layer in (cnn.Conv2d(1, 2, 3), cnn.Linear(3, 2), cnn.MaxPool2d(2)):
        with pytest.raises(RuntimeError, match=r"backward.*call the layer \(forward\)"):
            layer.backward(np.ones((1, 2, 3, 3), np.float32))


def test_load_is_all_or_nothing(tmp_path, rng):
    m = models.lenet5()
    before = [p.data.copy() for p in m.parameters()]
    state = {k: v + 1 for k, v in m.state_dict().items()}
    state["11.bias"] = np.array(["x"] * 10)  # the last entry is bad
    np.savez(tmp_path / "bad.npz", **state)
    with pytest.raises(TypeError, match="11.bias"):
        m.load(tmp_path / "bad.npz")
    for a, p in zip(before, m.parameters()):
        assert np.array_equal(a, p.data)


def test_save_is_atomic(tmp_path, monkeypatch):
    m = models.lenet5()
    m.save(tmp_path / "w.npz")
    old = (tmp_path / "w.npz").read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt  # a crash in the middle of writing

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(KeyboardInterrupt):
        models.lenet5().save(tmp_path / "w.npz")
    assert (tmp_path / "w.npz").read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.npz"]


@needs_torch
def test_load_reads_a_torch_save_file_with_requires_grad(tmp_path):
    m = models.lenet5()
    state = {k: torch.tensor(v.astype(np.float64) * 2, requires_grad=True)
             for k, v in m.state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    m2 = models.lenet5().load(tmp_path / "w.pt")
    for (k, v), p in zip(m.state_dict().items(), m2.parameters()):
        assert_close(p.data, v * 2, 1e-7, k)


def test_torch_file_without_torch_says_what_to_do(tmp_path, monkeypatch):
    import sys
    import zipfile
    with zipfile.ZipFile(tmp_path / "w.pt", "w") as z:  # torch.save's layout
        z.writestr("w/data.pkl", b"not used")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    with pytest.raises(ValueError, match="torch.save.*install PyTorch"):
        models.lenet5().load(tmp_path / "w.pt")


def test_messages_that_teach(rng):
    m = models.lenet5()
    with pytest.raises(TypeError, match=r"pass model.parameters\(\)"):
        optim.SGD(m, lr=0.1)
    with pytest.raises(ValueError, match="input_size=32"):
        m(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match="channels-last"):
        m(np.zeros((2, 28, 28, 1), np.float32))
    with pytest.warns(UserWarning, match="uint8"):
        m(np.zeros((2, 1, 28, 28), np.uint8))


def test_plain_progress_bar_leaves_no_stale_digits(monkeypatch):
    import io
    from convkit import training

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    monkeypatch.setattr("sys.stderr", out)
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)  # the plain bar
    bar = training._Progress(100, "epoch 1/1", True)
    bar.update(50, loss="12345.0000")
    bar.update(50, loss="1.0")
    bar.close("summary line")
    frames = out.getvalue().split("\r")
    assert len(frames[2]) >= len(frames[1])  # the shorter line is padded over the longer one
    assert out.getvalue().rstrip().endswith("summary line")
    assert "img/s" in frames[1] and frames[1].count("img/s") == 1


def test_layers_equal_functional_after_attribute_changes(rng):
    # the layers call the core directly for plain float32 batches; other inputs, and attributes
    # changed after construction, take the functional path: the same results either way
    x = rng.standard_normal((2, 3, 11, 11)).astype(np.float32)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    want = F.conv2d(x, conv.weight.data, conv.bias.data, padding=1)
    assert np.array_equal(conv(x), want)
    assert np.array_equal(conv(x.astype(np.float64)), want)
    assert np.array_equal(conv(x[0]), want[0])
    conv.stride, conv.padding = 2, "same"
    with pytest.raises(ValueError, match="padding='same' is not supported for strided"):
        conv(x)
    conv.padding = 1
    assert np.array_equal(conv(x), F.conv2d(x, conv.weight.data, conv.bias.data, 2, 1))
    pool = nn.MaxPool2d(2)
    assert np.array_equal(pool(x), F.max_pool2d(x, 2))
    pool.stride, pool.ceil_mode = 3, True
    assert np.array_equal(pool(x), F.max_pool2d(x, 2, 3, ceil_mode=True))
    pool.kernel_size = (3, 2)
    assert np.array_equal(pool(np.asfortranarray(x)), F.max_pool2d(x, (3, 2), 3, ceil_mode=True))


@pytest.mark.parametrize("pool", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                  dict(kernel_size=3, stride=2, ceil_mode=True, dilation=2)])
def test_relu_runs_after_max_pool_with_the_same_results(rng, monkeypatch, pool):
    # Sequential runs ReLU -> MaxPool2d as MaxPool2d -> ReLU: outputs and gradients must equal
    # the written order's, with windows that hold no positive value, NaNs and ties
    x = rng.standard_normal((3, 2, 9, 9)).astype(np.float32)
    x[0, 0, :4, :4] = -1.0  # windows without a positive value
    x[1, 1, 2, 2] = np.nan
    x[2, 0, :, :3] = 0.5  # ties
    g = rng.standard_normal(nn.MaxPool2d(**pool)(x).shape).astype(np.float32)

    def run():
        m = nn.Sequential(nn.ReLU(), nn.MaxPool2d(**pool), nn.ReLU())
        y = m(x)
        return y, m.backward(g), m.run_order()
    y, dx, order = run()
    assert [type(l).__name__ for l in order] == ["MaxPool2d", "ReLU", "ReLU"]
    monkeypatch.setattr(nn, "_execution_order", lambda seq: list(seq))
    y0, dx0, order0 = run()
    assert [type(l).__name__ for l in order0] == ["ReLU", "MaxPool2d", "ReLU"]
    assert np.array_equal(y, y0, equal_nan=True) and np.array_equal(dx, dx0, equal_nan=True)


def test_max_pool_with_indices_is_not_moved():
    m = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    m(np.zeros((1, 1, 4, 4), np.float32))
    assert type(m.run_order()[0]) is nn.MaxPool2d
    m[1].return_indices = True  # now the pool's output is a tuple: the written order again
    assert [type(l) for l in nn._execution_order(m)] == [nn.ReLU, nn.MaxPool2d]


def test_a_hooked_layer_stays_in_place_and_the_other_pairs_still_move(rng):
    # a forward replaced on the instance (a user's hook, summary's recorder) keeps its pair in
    # the written order; another ReLU -> MaxPool2d pair still moves, and backward follows
    # the order forward used
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    g = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    m = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.ReLU(), nn.MaxPool2d(2))
    y0, dx0 = m(x), m.backward(g)
    seen = []
    relu = m[0]
    relu.forward = lambda v: seen.append(v.shape) or nn.ReLU.forward(relu, v)
    y, dx = m(x), m.backward(g)
    assert seen == [(2, 3, 8, 8)]  # the hooked ReLU saw the un-pooled input
    assert [type(l).__name__ for l in m.run_order()] == ["ReLU", "MaxPool2d", "MaxPool2d", "ReLU"]
    assert np.array_equal(y, y0) and np.array_equal(dx, dx0)
    del relu.forward
    m(x)
    assert [type(l).__name__ for l in m.run_order()] == ["MaxPool2d", "ReLU", "MaxPool2d", "ReLU"]


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_and_residual_run_with_their_relu_in_one_pass_with_the_same_bits(
        rng, monkeypatch, training):
    # Sequential runs BatchNorm -> ReLU and Residual -> ReLU as one pass each, and a residual
    # body ending in a batch norm adds the shortcut in the batch norm's pass; outputs, the
    # gradients of the input and of every parameter, and the running statistics must be
    # bitwise those of the layers run one by one (with NaN, -0 and values at 0)
    def build():
        convkit.manual_seed(3)
        body = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                             nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3))
        m = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.Sequential(nn.Residual(body), nn.ReLU()),
                          nn.Flatten(), nn.Linear(3 * 5 * 5, 6), nn.BatchNorm1d(6), nn.ReLU())
        m.train(training)
        return m
    x = rng.standard_normal((4, 2, 5, 5)).astype(np.float32)
    x[0, 0, 0, 0] = np.nan
    x[1, 1, 2, :] = -0.0
    g = rng.standard_normal((4, 6)).astype(np.float32)

    def run():
        m = build()
        if not training:
            m(x[1:])  # eval still reads running statistics: give them values
        y = m(x)
        dx = m.backward(g)
        return y, dx, m.state_dict(), {n: p.grad.copy() for n, p in m.named_parameters()}, m
    # (in evaluation mode a Conv2d -> BatchNorm2d pair runs as one core call, conv2d_bn, with
    # the norm's ReLU and sum)
    adds = []
    bn_forward, conv_bn = nn._BatchNorm._forward, nn._core.conv2d_bn
    monkeypatch.setattr(nn._BatchNorm, "_forward", lambda self, x, relu, add=None: (
        adds.append((relu, add is not None)), bn_forward(self, x, relu, add))[1])
    monkeypatch.setattr(nn._core, "conv2d_bn", lambda *a: (
        adds.append((a[-2], a[-1] is not None)), conv_bn(*a))[1])
    y, dx, state, grads, m = run()
    calls = 1 if training else 2  # eval runs the network twice
    # three batch norms with their ReLU, one with the shortcut's sum and the ReLU
    assert sorted(adds) == sorted([(True, False)] * 3 * calls + [(True, True)] * calls)
    steps = nn._execution_steps(m)
    assert [(type(a).__name__, type(b).__name__) for a, b in steps if b is not None] == \
        [("BatchNorm2d" if training else "_ConvBn", "ReLU"), ("BatchNorm1d", "ReLU")]
    assert [type(a).__name__ for a, b in nn._execution_steps(m[3]) if b is not None] == \
        ["Residual"]
    monkeypatch.setattr(nn, "_execution_steps",
                        lambda seq: [(layer, None) for layer in nn._execution_order(seq)])

    def plain_residual(self, x, relu):
        assert not relu
        return np.add(self.body(x), x if self.shortcut is None else self.shortcut(x),
                      dtype=np.float32)
    monkeypatch.setattr(nn.Residual, "_forward", plain_residual)
    adds.clear()
    y0, dx0, state0, grads0, _ = run()
    assert adds == [(False, False)] * 4 * calls
    assert np.array_equal(y, y0, equal_nan=True) and np.array_equal(dx, dx0, equal_nan=True)
    assert all(np.array_equal(state[k], state0[k], equal_nan=True) for k in state0)
    assert all(np.array_equal(grads[k], grads0[k], equal_nan=True) for k in grads0)


def test_a_hooked_batch_norm_runs_its_relu_separately(rng):
    m = nn.Sequential(nn.BatchNorm2d(2), nn.ReLU())
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    y0 = m(x)
    seen = []
    relu = m[1]
    relu.forward = lambda v: seen.append(v.min() < 0) or nn.ReLU.forward(relu, v)
    assert np.array_equal(m(x), y0) and seen == [True]  # the ReLU saw the batch norm's output
    del relu.forward
    assert np.array_equal(m(x), y0) and nn._execution_steps(m)[0][1] is relu


def test_activation_with_an_addend_is_the_sum_then_the_activation(rng):
    from convkit import _core
    a = rng.standard_normal((3, 5, 7, 9)).astype(np.float32)
    b = rng.standard_normal((3, 5, 7, 9)).astype(np.float32)
    a.flat[::7] = -b.flat[::7]  # sums of exactly 0 (+0), and -0 + -0 = -0
    a.flat[1], b.flat[1] = -0.0, -0.0
    a.flat[2] = np.nan
    want = F.relu(np.add(a, b))
    got = _core.activation(F._RELU, a, 0.0, b)
    assert np.array_equal(got, want, equal_nan=True)
    assert np.signbit(got.flat[1]) and not np.signbit(got.flat[7])
    with pytest.raises(ValueError, match="add"):
        _core.activation(F._RELU, a, 0.0, b[:, :4])


def test_a_replaced_layer_is_run_in_place_of_the_old_one(rng):
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    m = nn.Sequential(nn.BatchNorm2d(2), nn.ReLU(), nn.MaxPool2d(2))
    m(x)
    setattr(m, "1", nn.Identity())  # no ReLU any more: neither fused nor moved
    assert np.array_equal(m(x), F.max_pool2d(F.batch_norm(x, None, None, training=True), 2))
    assert [type(l).__name__ for l in m.run_order()] == ["BatchNorm2d", "Identity", "MaxPool2d"]



def _one_call_model(training):
    # every fast step of _core.run_steps (Conv2d, MaxPool2d, Linear, Flatten, ReLU alone, each
    # fused or not), argument forms it leaves to the layer's Python forward (a string padding,
    # reflect padding, tuple pool windows), and layers it always leaves to Python
    convkit.manual_seed(11)
    body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.BatchNorm2d(4))
    m = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2)), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding="same", dilation=2), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"), nn.Sigmoid(), nn.ReLU(),
        nn.Residual(body), nn.ReLU(), nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
        nn.ReLU(), nn.MaxPool2d((2, 1)), nn.Dropout(0.0), nn.Flatten(), nn.Linear(4 * 2 * 7, 9),
        nn.ReLU(), nn.Linear(9, 5))
    return m.train(training)


@pytest.mark.parametrize("training", [True, False])
def test_sequential_runs_its_steps_in_one_core_call_with_the_same_bits(rng, monkeypatch,
                                                                        training):
    # Sequential's forward runs its planned steps through _core.run_steps, which calls the core
    # for convkit's own layers without their Python forward: outputs, the input's and every
    # parameter's gradients, and the batch norm's statistics must be bitwise those of the
    # Python loop over the same steps; the layers it skips must be only the plain ones
    x = rng.standard_normal((3, 2, 9, 7)).astype(np.float32)
    x[0, 1, 2, 3], x[1, 0, 4, :] = np.nan, -0.0

    def run(m):
        ys = [m(x)]  # the first call plans the steps, the next ones reuse them
        calls.clear()
        ys += [m(x), m(x)]
        dx = m.backward(np.ones_like(ys[-1]))
        return ys, dx, m.state_dict(), {n: p.grad.copy() for n, p in m.named_parameters()}

    calls = []
    for cls, name in ((nn.Conv2d, "_forward"), (nn.Linear, "_forward"),
                      (nn.MaxPool2d, "_forward"), (nn.Flatten, "forward"), (nn.ReLU, "forward"),
                      (nn.Sigmoid, "forward")):
        def spy(self, *a, _f=getattr(cls, name), **k):
            calls.append(type(self).__name__ if type(self) is not nn.Conv2d
                         else self.padding if isinstance(self.padding, str) else self.padding_mode)
            return _f(self, *a, **k)
        monkeypatch.setattr(cls, name, spy)
    ys, dx, state, grads = run(_one_call_model(training))
    # in the calls after the first only the reflect-padded and the "same" conv, the tuple-window
    # pool and the Sigmoid ran their Python forward (the ReLU before the pool ran in the pool's
    # call; the Residual runs its Python forward, and its body's conv through run_steps too)
    assert sorted(calls) == sorted(["same", "reflect", "MaxPool2d", "Sigmoid"] * 2)
    monkeypatch.setattr(convkit._core, "run_steps", lambda steps, x: None)  # the Python loop
    ys0, dx0, state0, grads0 = run(_one_call_model(training))
    for y, y0 in zip(ys, ys0):
        assert np.array_equal(y, y0, equal_nan=True)
    assert np.array_equal(dx, dx0, equal_nan=True)
    assert all(np.array_equal(state[k], state0[k], equal_nan=True) for k in state0)
    assert all(np.array_equal(grads[k], grads0[k], equal_nan=True) for k in grads0)
    # the NaN reaches sample 0's outputs, and in training every sample's (the batch norm's
    # statistics)
    assert np.isnan(ys[-1][0]).all() and (training or np.isfinite(ys[-1][1:]).all())



def _python_backward(m, g, input_grad):
    # Sequential.backward as the plain Python loop it replaced
    layers = m.run_order()
    for i in range(len(layers) - 1, -1, -1):
        g = layers[i].backward(g, input_grad=input_grad or i > 0)
    return g


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("input_grad", [True, False])
def test_sequential_backward_in_one_core_call_has_the_python_loops_bits(rng, monkeypatch,
                                                                       training, input_grad):
    # _core.run_backward calls the core's backward for convkit's own layers and adds the
    # parameter gradients in place: the input gradient and every .grad must be bitwise those of
    # the layers' own backward called one by one; only the plain layers skip their Python
    # backward
    x = rng.standard_normal((3, 2, 9, 7)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan

    def run(python):
        m = _one_call_model(training)
        y = m(x)
        m(x)  # the second call runs the planned steps in C++
        g = rng_g.standard_normal(y.shape).astype(np.float32)
        g[1, 2] = np.inf
        for p in m.parameters():
            p.grad[...] = 0.25  # accumulated into, not overwritten
        dx = _python_backward(m, g, input_grad) if python else m.backward(g, input_grad)
        return dx, {n: p.grad.copy() for n, p in m.named_parameters()}

    calls = []
    for cls in (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.Flatten, nn.ReLU, nn.Sigmoid,
                nn.BatchNorm2d, nn.Residual, nn.Dropout):
        def spy(self, *a, _f=cls.backward, **k):
            calls.append(type(self).__name__ if type(self) is not nn.Conv2d
                         else self.padding if isinstance(self.padding, str) else self.padding_mode)
            return _f(self, *a, **k)
        monkeypatch.setattr(cls, "backward", spy)
    rng_g = np.random.default_rng(5)
    dx, grads = run(python=False)
    # the Python backward ran for the "same" and reflect-padded convs, the tuple-window pool,
    # the Sigmoid, the Dropout, the Residual and its body's batch norm (the body is a
    # Sequential: its conv takes the core's backward)
    assert sorted(calls) == sorted(["same", "reflect", "MaxPool2d", "Sigmoid", "Dropout",
                                    "Residual", "BatchNorm2d"]), calls
    rng_g = np.random.default_rng(5)
    dx0, grads0 = run(python=True)
    assert (dx is None) == (dx0 is None) == (not input_grad)
    if input_grad:
        assert np.array_equal(dx, dx0, equal_nan=True)
    assert all(np.array_equal(grads[k], grads0[k], equal_nan=True) for k in grads0)
    assert any(np.isnan(v).any() for v in grads.values())


def test_sequential_backward_follows_hooks_and_odd_gradients(rng):
    m = models.lenet5()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    g = rng.standard_normal((2, 10)).astype(np.float32)
    m(x)
    want = _python_backward(m, g, True)
    want_grads = {n: p.grad.copy() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.grad.fill(0)
    seen = []
    fc = m[9]
    fc.backward = lambda v, input_grad=True: seen.append(v.shape) or nn.Linear.backward(fc, v)
    m[11].bias.grad = np.zeros(10)  # a float64 .grad: NumPy's += keeps it float64
    dx = m.backward(g)
    assert seen == [(2, 84)] and np.array_equal(dx, want)
    assert m[11].bias.grad.dtype == np.float64
    for n, p in m.named_parameters():
        assert np.array_equal(p.grad, want_grads[n]), n
    with pytest.raises(RuntimeError, match="ReLU.backward: no input saved"):
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()).backward(np.ones((1, 2, 3, 3), np.float32))

def test_the_one_call_forward_takes_any_input_and_follows_hooks(rng):
    m = models.lenet5()
    x = rng.standard_normal((2, 1, 28, 28))
    want = m(x.astype(np.float32))
    assert np.array_equal(m(x), want)  # float64: the first conv converts it, as before
    assert np.array_equal(m(x.astype(np.float32)[:, :, ::-1, ::-1][:, :, ::-1, ::-1]), want)
    if torch is not None:
        assert np.array_equal(m(torch.from_numpy(x.astype(np.float32))), want)
    seen = []
    fc = m[9]
    fc.forward = lambda v: seen.append(v.shape) or nn.Linear.forward(fc, v) * 2
    y = m(x)  # the planned steps are out of date: the hooked layer runs, unfused
    assert seen == [(2, 120)] and not np.array_equal(y, want)
    del fc.forward
    assert np.array_equal(m(x), want) and seen == [(2, 120)]
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 1, 28, 28\)"):
        m(x[:, :, :20])
    with pytest.raises(ValueError, match=r"conv2d: .*input"):
        nn.Sequential(nn.Conv2d(1, 2, 3))(np.zeros((1, 2, 5, 5), np.float32))



def test_a_hook_inside_a_residual_body_after_planning_is_followed(rng):
    convkit.manual_seed(2)
    body = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 3, 1),
                         nn.BatchNorm2d(3))
    m = nn.Sequential(nn.Residual(body), nn.ReLU()).eval()
    x = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    want = m(x)
    assert np.array_equal(m(x), want)  # the body's steps planned and run in one call
    seen = []
    conv = body[2]
    conv.forward = lambda v: seen.append(v.min() >= 0) or nn.Conv2d.forward(conv, v) * 0
    y = m(x)  # the stale plan is dropped: the hook runs, on the ReLU's output
    assert seen == [True] and not np.array_equal(y, want)
    del conv.forward
    assert np.array_equal(m(x), want) and seen == [True]

def test_a_pool_that_returns_indices_after_the_steps_were_planned_runs_as_written(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    m = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2))
    m(x), m(x)
    m[1].return_indices = True
    y, idx = m(x)
    y0, idx0 = F.max_pool2d(F.relu(x), 2, return_indices=True)
    assert np.array_equal(y, y0) and np.array_equal(idx, idx0)
    assert [type(l) for l in m.run_order()] == [nn.ReLU, nn.MaxPool2d]

@pytest.mark.parametrize("relu", [False, True])
def test_a_residual_whose_shapes_differ_says_what_to_give(rng, relu):
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    for body in (nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3)), nn.Conv2d(2, 3, 1)):
        m = nn.Sequential(nn.Residual(body), nn.ReLU()) if relu else nn.Residual(body)
        with pytest.raises(ValueError, match=r"the body gives shape \(2, 3, 4, 4\) but the "
                                             r"shortcut \(2, 2, 4, 4\); give a shortcut"):
            m(x)


def test_batch_norm_with_an_addend_checks_its_shape(rng):
    from convkit import _core
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="add"):
        _core.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, False, x[:, :2])
    want = np.add(F.batch_norm(x, None, None, training=True), x[::-1].copy())
    got = _core.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, False, x[::-1].copy())
    assert np.array_equal(got, want)


@pytest.mark.parametrize("pool", [dict(kernel_size=2), dict(kernel_size=(2, 3), stride=(2, 1))])
def test_conv_linear_and_max_pool_run_with_their_relu_in_one_call_with_the_same_bits(
        rng, monkeypatch, pool):
    x = rng.standard_normal((3, 1, 10, 10)).astype(np.float32)
    x[0, 0, 1:5, 1:5] = -1.0  # pooled windows with no positive value
    x[1, 0, 3, 3] = np.nan

    def run(m):
        y = m(x)
        return y, m.backward(np.ones_like(y)), {n: p.grad.copy() for n, p in m.named_parameters()}

    def model():
        def layers(n):
            # Conv2d -> ReLU pairs: the core's fast path and a reflect-padded one
            return [nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(),
                    nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                    nn.Conv2d(3, 3, 3), nn.ReLU(), nn.MaxPool2d(**pool), nn.Flatten(),
                    nn.Linear(n, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU()]
        convkit.manual_seed(1)
        n = nn.Sequential(*layers(1)[:8])(x).shape[1]
        convkit.manual_seed(1)
        return nn.Sequential(*layers(n))
    m = model()
    y, dx, grads = run(m)
    assert [type(a).__name__ for a, b in nn._execution_steps(m) if b is not None] == \
        ["Conv2d", "Conv2d", "MaxPool2d", "Linear", "Linear"]
    monkeypatch.setattr(nn, "_execution_steps",
                        lambda seq: [(layer, None) for layer in nn._execution_order(seq)])
    y0, dx0, grads0 = run(model())
    assert np.array_equal(y, y0, equal_nan=True) and np.array_equal(dx, dx0, equal_nan=True)
    assert all(np.array_equal(grads[k], grads0[k], equal_nan=True) for k in grads0)
    assert (y == 0).any() and (y > 0).any()  # the ReLUs did cut


# -- containers edited and walked like PyTorch's ---------------------------------------------

def _kinds(model):
    return [(n, type(m).__name__) for n, m in model.named_children()]


@needs_torch
def test_sequential_from_an_ordered_dict_keeps_the_names_and_loads_pytorch_state(rng):
    from collections import OrderedDict
    tnn = torch.nn
    t = tnn.Sequential(OrderedDict([("conv1", tnn.Conv2d(1, 4, 3)), ("act", tnn.ReLU()),
                                    ("flat", tnn.Flatten()), ("fc", tnn.Linear(4 * 6 * 6, 3))]))
    t = t.float()
    m = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(1, 4, 3)), ("act", nn.ReLU()),
                                   ("flat", nn.Flatten()), ("fc", nn.Linear(4 * 6 * 6, 3))]))
    assert list(m.state_dict()) == list(t.state_dict())
    m.load_state_dict(t.state_dict())
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    for _ in range(2):  # the first call plans the steps, the second runs them in one C++ call
        assert_close(m(x), t(torch.tensor(x)).detach().numpy(), 1e-5, "named Sequential")
    assert type(m[0]) is nn.Conv2d and m.fc is m[-1] and len(m) == 4
    assert _kinds(m[1:3]) == [("act", "ReLU"), ("flat", "Flatten")]
    # from_torch keeps the names (so the PyTorch state_dict loads), to_torch gives them back
    from convkit import interop
    c = interop.from_torch(t)
    assert list(c.state_dict()) == list(t.state_dict())
    assert list(interop.to_torch(c).state_dict()) == list(t.state_dict())
    with pytest.raises(TypeError, match="not a Module"):
        nn.Sequential(OrderedDict([("a", 3)]))
    with pytest.raises(KeyError, match="contain"):
        nn.Sequential(OrderedDict([("a.b", nn.ReLU())]))


@needs_torch
def test_sequential_edits_match_pytorch_and_reach_forward_and_backward(rng):
    tnn = torch.nn
    lin = nn.Linear(4, 4)
    tlin = tnn.Linear(4, 4).float()
    tlin.load_state_dict({n: torch.tensor(v) for n, v in lin.state_dict().items()})
    m, t = nn.Sequential(lin, nn.ReLU()), tnn.Sequential(tlin, tnn.ReLU())
    x = rng.standard_normal((3, 4)).astype(np.float32)
    m(x)  # plan and cache the steps before the edits
    fresh = {"tanh": (nn.Tanh, tnn.Tanh), "id": (nn.Identity, tnn.Identity),
             "sig": (nn.Sigmoid, tnn.Sigmoid), "relu": (nn.ReLU, tnn.ReLU)}
    edits = [("append", "tanh"), ("insert", 0, "id"), ("insert", -1, "sig"), ("extend", "relu"),
             ("del", 1), ("del", slice(0, 1)), ("pop",), ("set", -1, "tanh")]
    for e in edits:
        for s, side in ((m, 0), (t, 1)):
            make = lambda key: fresh[key][side]()
            if e[0] == "append":
                s.append(make(e[1]))
            elif e[0] == "insert":
                s.insert(e[1], make(e[2]))
            elif e[0] == "extend":
                s.extend([make(e[1]), make(e[1])])
            elif e[0] == "del":
                del s[e[1]]
            elif e[0] == "pop":
                s.pop(-1)
            else:
                s[e[1]] = make(e[2])
        assert _kinds(m) == [(n, type(c).__name__) for n, c in t.named_children()], e
        # forward and backward run the edited layers (a stale plan would run the old ones)
        y = m(x)
        assert_close(y, t(torch.tensor(x)).detach().numpy(), 1e-5, f"after {e}")
        assert m.backward(np.ones_like(y)).shape == x.shape
    with pytest.raises(IndexError):
        m.insert(len(m) + 1, nn.ReLU())
    with pytest.raises(IndexError):
        m[len(m)]
    with pytest.raises(TypeError):
        m.append(np.zeros(3))


@needs_torch
def test_add_module_apply_and_get_submodule_follow_pytorch():
    tnn = torch.nn
    m = models.resnet20()
    t = __import__("torch_twins").resnet20()
    seen_m, seen_t = [], []
    assert m.apply(lambda k: seen_m.append(type(k).__name__)) is m
    t.apply(lambda k: seen_t.append(type(k).__name__))
    rename = {"TorchResidual": "Residual"}
    assert seen_m == [rename.get(n, n) for n in seen_t] and seen_m[-1] == "Sequential"
    for path in ("", "0", "3.0.body.1", "6.0.shortcut.0"):
        assert type(m.get_submodule(path)).__name__ == \
            rename.get(type(t.get_submodule(path)).__name__, type(t.get_submodule(path)).__name__)
    with pytest.raises(AttributeError, match="no attribute"):
        m.get_submodule("3.0.tail")
    with pytest.raises(AttributeError, match="not a Module"):
        m.get_submodule("0.weight")
    s, ts = nn.Sequential(nn.ReLU()), tnn.Sequential(tnn.ReLU())
    s.add_module("head", nn.Linear(2, 3))
    ts.add_module("head", tnn.Linear(2, 3))
    assert _kinds(s) == [(n, type(c).__name__) for n, c in ts.named_children()]
    assert s(np.ones((1, 2), np.float32)).shape == (1, 3)  # an added layer runs, as PyTorch's
    with pytest.raises(KeyError, match="contain"):
        s.add_module("a.b", nn.ReLU())
    with pytest.raises(KeyError, match="already exists"):
        s.add_module("training", nn.ReLU())
    with pytest.raises(TypeError, match="not a Module"):
        s.add_module("x", 3)


@needs_torch
@pytest.mark.parametrize("k,stride,pad,dil", [(3, 2, 1, 1), (4, 3, 1, 2), (3, 1, 0, 1),
                                              (2, 2, 0, 1)])
def test_conv_transpose_layer_takes_an_output_size_like_pytorch(rng, k, stride, pad, dil):
    m = nn.ConvTranspose2d(3, 4, k, stride=stride, padding=pad, dilation=dil)
    t = torch.nn.ConvTranspose2d(3, 4, k, stride=stride, padding=pad, dilation=dil).float()
    t.load_state_dict({n: torch.tensor(v) for n, v in m.state_dict().items()})
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    lo = [(x.shape[2 + d] - 1) * stride - 2 * pad + dil * (k - 1) + 1 for d in range(2)]
    for extra in range(stride):
        for size in ((lo[0] + extra, lo[1]), (2, 4, lo[0], lo[1] + extra)):
            xt = torch.tensor(x, requires_grad=True)
            yt = t(xt, output_size=size)
            y = m(x, output_size=size)
            assert_close(y, yt.detach().numpy(), 1e-5, f"output_size {size}")
            g = rng.standard_normal(y.shape).astype(np.float32)
            yt.backward(torch.tensor(g))
            m.weight.grad[...] = 0
            assert_close(m.backward(g), xt.grad.numpy(), 1e-5, "grad_x")
            assert_close(m.weight.grad, t.weight.grad.numpy(), 1e-5, "grad_w")
            t.zero_grad()
    assert m(x[0], output_size=lo).shape == (4, lo[0], lo[1])  # unbatched
    for bad in ((lo[0] + stride, lo[1]), (lo[0] - 1, lo[1]), (1, 2, 3)):
        with pytest.raises(ValueError):
            t(torch.tensor(x), output_size=bad)
        with pytest.raises(ValueError, match="output_size|output size"):
            m(x, output_size=bad)


@needs_torch
@pytest.mark.parametrize("make,tmake", [
    (lambda: nn.ReLU(inplace=True), lambda: torch.nn.ReLU(inplace=True)),
    (lambda: nn.LeakyReLU(0.2, inplace=True), lambda: torch.nn.LeakyReLU(0.2, inplace=True)),
    (lambda: nn.LeakyReLU(-0.5, inplace=True), lambda: torch.nn.LeakyReLU(-0.5, inplace=True)),
    (lambda: nn.ELU(0.7, inplace=True), lambda: torch.nn.ELU(0.7, inplace=True))])
def test_inplace_activations_write_into_the_input_as_pytorch(rng, make, tmake):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    x[0, :3] = [0.0, -0.0, np.nan]
    m, t = make(), tmake()
    assert repr(m) == repr(t)
    plain = type(m)(*[getattr(m, a) for a in ("negative_slope", "alpha") if hasattr(m, a)])
    want, g = plain(x.copy()), rng.standard_normal(x.shape).astype(np.float32)
    want_grad = plain.backward(g)
    xt, xm = torch.tensor(x), x.copy()
    with torch.no_grad():
        t(xt)
    y = m(xm)
    assert y is xm and np.array_equal(xm, want, equal_nan=True)  # written into the input
    assert np.allclose(xm, xt.numpy(), equal_nan=True)
    # the backward sees the values before the overwrite
    assert np.array_equal(m.backward(g), want_grad, equal_nan=True)
    if isinstance(m, nn.ReLU):  # first layer of a Sequential (its one-call path declines)
        s, xs = nn.Sequential(make(), nn.Linear(6, 2)), x.copy()
        s(x.copy())
        s(xs)
        assert np.array_equal(xs, want, equal_nan=True)
    from convkit import interop
    assert repr(interop.from_torch(t)) == repr(t) and repr(interop.to_torch(m)) == repr(t)


@needs_torch
@pytest.mark.parametrize("dims", [(1, -1), (0, 1), (2, 3), (-3, -2), (0, -1), (3, 3), (1, 2)])
def test_flatten_over_any_axes_as_pytorch(rng, dims):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    f, t = nn.Flatten(*dims), torch.nn.Flatten(*dims)
    y = f(x)
    np.testing.assert_array_equal(y, t(torch.tensor(x)).numpy())
    assert repr(f) == repr(t)
    assert f.backward(np.ones_like(y)).shape == x.shape
    # inside a Sequential (its one-call path takes only the default axes)
    s = nn.Sequential(nn.ReLU(), nn.Flatten(*dims))
    for _ in range(2):
        np.testing.assert_array_equal(s(x), t(torch.tensor(np.maximum(x, 0))).numpy())
    assert s.backward(np.ones_like(y)).shape == x.shape


def test_flatten_rejects_axes_pytorch_rejects():
    x = np.zeros((2, 3, 4))
    with pytest.raises(IndexError, match="out of range"):
        nn.Flatten(3)(x)
    with pytest.raises(ValueError, match="start_dim"):
        nn.Flatten(2, 1)(x)


@needs_torch
@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("shape,dim", [((4, 7), 1), ((4, 7), None), ((3, 4, 5), None),
                                       ((2, 3, 4, 5), -1), ((2, 3, 4, 5), None), ((6,), 0)])
def test_softmax_layers_as_pytorch(rng, log, shape, dim):
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    m = (nn.LogSoftmax if log else nn.Softmax)(dim=dim)
    t = (torch.nn.LogSoftmax if log else torch.nn.Softmax)(dim=dim)
    xt = torch.tensor(x, requires_grad=True)
    with pytest.warns(UserWarning) if dim is None else _nullcontext():
        yt = t(xt)  # (PyTorch warns about the implicit dim)
    y = m(x)
    assert_close(y, yt.detach().numpy(), 1e-6, "softmax layer")
    g = rng.standard_normal(shape).astype(np.float32)
    yt.backward(torch.tensor(g))
    assert_close(m.backward(g), xt.grad.numpy(), 1e-4, "softmax layer grad")
    assert repr(m) == repr(t)
    from convkit import interop
    assert repr(interop.from_torch(t)) == repr(t) and repr(interop.to_torch(m)) == repr(t)


def _nullcontext():
    import contextlib
    return contextlib.nullcontext()


@needs_torch
def test_dropout_inplace_and_identity_arguments_as_pytorch():
    from convkit import interop
    x = np.ones((64, 32), np.float32)
    d = nn.Dropout(0.5, inplace=True)
    convkit.manual_seed(7)
    y = d(x)
    convkit.manual_seed(7)
    want = nn.Dropout(0.5)(np.ones((64, 32), np.float32))
    assert y is x and np.array_equal(x, want)  # written into the input, the same mask
    assert np.array_equal(d.backward(np.ones_like(x)), want)  # the mask scales the gradient
    assert 0.3 < (x == 0).mean() < 0.7
    t = torch.nn.Dropout(0.5, inplace=True)
    assert repr(d) == repr(t) and repr(nn.Dropout(0.2)) == repr(torch.nn.Dropout(0.2))
    assert repr(interop.from_torch(t)) == repr(t) and repr(interop.to_torch(d)) == repr(t)
    assert np.array_equal(nn.Identity(54, unused_argument=0.1)(np.ones(2)), np.ones(2))


def test_a_module_takes_any_arguments_and_zero_grad_takes_set_to_none():
    class Mix(nn.Module):  # a custom module with two inputs and a keyword, as in PyTorch code
        def __init__(self):
            self.fc = nn.Linear(2, 3)

        def forward(self, a, b, scale=1.0):
            return self.fc(a) + scale * b

    m = Mix()
    a, b = np.ones((4, 2), np.float32), np.ones((4, 3), np.float32)
    np.testing.assert_allclose(m(a, b, scale=2.0), m.fc(a) + 2.0 * b)
    m.fc.weight.grad[...] = 1.0
    m.zero_grad(set_to_none=True)  # (the gradients stay arrays, zeroed)
    assert m.fc.weight.grad.shape == (3, 2) and not m.fc.weight.grad.any()


_UP_SPECS = [dict(scale_factor=2), dict(scale_factor=1.5), dict(scale_factor=(0.5, 3)),
             dict(scale_factor=0.37), dict(size=(3, 5)), dict(size=(16, 9)), dict(size=1),
             dict(scale_factor=2.3, recompute_scale_factor=True),
             # an axis that keeps its size is a copy whatever the factor (PyTorch's kernels)
             dict(scale_factor=1.1), dict(scale_factor=(0.6, 1.2))]


@needs_torch
@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (5, 7), (13, 4)])
@pytest.mark.parametrize("spec", _UP_SPECS, ids=[str(s) for s in _UP_SPECS])
@pytest.mark.parametrize("mode,ac", [("nearest", None), ("bilinear", False), ("bilinear", True)])
def test_interpolate_matches_pytorch(rng, hw, spec, mode, ac):
    x = rng.standard_normal((2, 3) + hw).astype(np.float32)
    xt = torch.tensor(x, requires_grad=True)
    try:
        yt = torch.nn.functional.interpolate(xt, mode=mode, align_corners=ac, **spec)
    except RuntimeError:  # an empty output: both refuse
        with pytest.raises(ValueError, match="positive"):
            F.interpolate(x, mode=mode, align_corners=ac, **spec)
        return
    y = F.interpolate(x, mode=mode, align_corners=ac, **spec)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-6, atol=1e-6)
    g = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(F.interpolate_backward(g, x, mode=mode, align_corners=ac, **spec),
                               xt.grad.numpy(), rtol=1e-5, atol=1e-5)
    up, tup = nn.Upsample(mode=mode, align_corners=ac, **spec), \
        torch.nn.Upsample(mode=mode, align_corners=ac, **spec)
    assert repr(up) == repr(tup)
    np.testing.assert_array_equal(up(x), y)
    np.testing.assert_array_equal(up.backward(g), F.interpolate_backward(
        g, x, mode=mode, align_corners=ac, **spec))


@needs_torch
def test_interpolate_keeps_nan_and_inf_local_and_checks_arguments():
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 1] = np.inf
    for mode in ("nearest", "bilinear"):
        y = F.interpolate(x, scale_factor=2, mode=mode)
        yt = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=2, mode=mode).numpy()
        np.testing.assert_array_equal(np.isinf(y), np.isinf(yt))
        np.testing.assert_array_equal(np.isnan(y), np.isnan(yt))
    with pytest.raises(ValueError, match="exactly one"):
        F.interpolate(x, size=4, scale_factor=2)
    with pytest.raises(ValueError, match="align_corners"):
        nn.Upsample(scale_factor=2, align_corners=True)
    with pytest.raises(ValueError, match="mode"):
        F.interpolate(x, scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="4-D"):
        F.interpolate(x[0], scale_factor=2)
    from convkit import interop
    t = torch.nn.Upsample(size=(5, 6), mode="bilinear", align_corners=True)
    m = interop.from_torch(t)
    assert repr(m) == repr(t) and repr(interop.to_torch(m)) == repr(t)


def test_interpolate_plans_kept_from_call_to_call_still_fit_each_call(rng):
    # The taps are kept by the arguments: a later call must still get its own sizes and
    # PyTorch's checks (a float size raises even after the int size was kept).
    a = rng.standard_normal((2, 3, 5, 7)).astype(np.float32)
    b = rng.standard_normal((1, 1, 6, 4)).astype(np.float32)
    first = F.interpolate(a, scale_factor=2, mode="bilinear")
    assert F.interpolate(b, scale_factor=2, mode="bilinear").shape == (1, 1, 12, 8)
    np.testing.assert_array_equal(F.interpolate(a, scale_factor=2, mode="bilinear"), first)
    assert F.interpolate(a, scale_factor=2.5).shape == (2, 3, 12, 17)
    assert F.interpolate(a, size=(3, 9)).shape == (2, 3, 3, 9)
    with pytest.raises(TypeError, match="size"):
        F.interpolate(a, size=(3.0, 9))
    with pytest.raises(ValueError, match="mode"):
        F.interpolate(a, size=(3, 9), mode=["nearest"])
    g = np.ones((2, 3, 3, 9), np.float32)
    assert F.interpolate_backward(g, a, size=(3, 9)).shape == a.shape


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_interpolate_bits_do_not_depend_on_threads_and_bad_taps_are_refused(rng, mode):
    x = rng.standard_normal((3, 5, 9, 11)).astype(np.float32)
    g = rng.standard_normal((3, 5, 14, 25)).astype(np.float32)
    out = []
    for t in (1, 2, 3):
        convkit.set_num_threads(t)
        out.append((F.interpolate(x, size=(14, 25), mode=mode),
                    F.interpolate_backward(g, x, size=(14, 25), mode=mode)))
    convkit.set_num_threads(2)
    for y, dx in out[1:]:
        np.testing.assert_array_equal(y, out[0][0])
        np.testing.assert_array_equal(dx, out[0][1])
    from convkit import _core
    idx, w = np.zeros(3, np.int64), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="outside"):
        _core.resize2d(x, idx + 9, idx, w, w, idx, idx, w, w, False)
    with pytest.raises(ValueError, match="one length"):
        _core.resize2d(x, idx, idx[:2], w, w, idx, idx, w, w, False)


def test_eval_conv_bn_pairs_run_as_one_call_with_the_layers_bits(rng, monkeypatch):
    # In evaluation mode each Conv2d -> BatchNorm2d pair of ResNet-20 (with the ReLU or the
    # residual sum and ReLU after it) runs as one core call, conv2d_bn (the 3x3 layers forced
    # onto the lanes Winograd, which applies the norm in its item at AVX2): the output, the
    # input's and every parameter's gradients (the norm's backward computes the convolution's
    # output again) must be bitwise those of the layers run one by one; back in training mode
    # the pairs run apart and the running statistics move as before
    from convkit import _core, models, optim
    x = rng.standard_normal((20, 3, 10, 10)).astype(np.float32)
    x[3, 1, 4, :] = -0.0
    g = rng.standard_normal((20, 10)).astype(np.float32)

    def run(plain):
        convkit.manual_seed(5)
        m = models.resnet20()
        opt = optim.SGD(m.parameters(), lr=0.1)
        for _ in range(2):  # running statistics with values
            m(x)
            m.backward(g)
            opt.step()
            opt.zero_grad()
        out = []
        for mode in ("eval", "train", "eval"):
            getattr(m, mode)()
            y = m(x)
            dx = m.backward(g)
            out += [y, dx] + [p.grad.copy() for p in m.parameters()]
            out += [v.copy() for v in m.state_dict().values()]
            opt.zero_grad()
        return out, m

    calls = []
    conv_bn = _core.conv2d_bn
    monkeypatch.setattr(_core, "conv2d_bn", lambda *a: (calls.append(1), conv_bn(*a))[1])
    _core.conv2d_force("forward", "winograd3_lanes")
    try:
        fused, m = run(False)
        assert len(calls) == 2 * 21  # 19 convolutions and 2 shortcuts, in two eval passes
        with monkeypatch.context() as mp:
            mp.setattr(nn, "_execution_steps",
                       lambda seq: [(layer, None) for layer in nn._execution_order(seq)])
            calls.clear()
            plain, _ = run(True)
            assert calls == []
        assert len(fused) == len(plain)
        for a, b in zip(fused, plain):
            assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)
        # a hook on a paired layer after the plan: it runs, and so does the pair's norm
        m.eval()
        y0 = m(x)
        conv = m[3][0].body[0]
        seen = []
        conv.forward = lambda v: seen.append(v.shape) or nn.Conv2d.forward(conv, v)
        assert np.array_equal(m(x), y0) and seen == [(20, 16, 10, 10)]
        del conv.forward
        bn = m[3][0].body[4]  # the norm the shortcut's sum and the ReLU follow
        bn.forward = lambda v: seen.append(v.shape) or nn.BatchNorm2d.forward(bn, v)
        assert np.array_equal(m(x), y0) and len(seen) == 2
    finally:
        _core.conv2d_force("forward", "")
