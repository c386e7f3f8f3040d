"""PyTorch interop: tensors as inputs, from_torch / to_torch round trips with outputs and
gradients compared, clear errors for modules convkit does not have."""
from collections import OrderedDict

import numpy as np
import pytest

import convkit
from convkit import functional as F, interop, models, nn
from conftest import needs_torch, torch

pytestmark = needs_torch


def _every_layer_torch():
    T = torch.nn
    convkit_style = __import__("torch_twins").Residual
    return T.Sequential(OrderedDict([
        ("stem", T.Sequential(T.Conv2d(3, 8, 3, padding="same", padding_mode="reflect"),
                              T.BatchNorm2d(8), T.LeakyReLU(0.2))),
        ("grouped", T.Conv2d(8, 8, (3, 1), stride=(2, 1), padding=(1, 2), dilation=(1, 2),
                             groups=4, padding_mode="circular")),
        ("elu", T.ELU(0.7)),
        ("res", convkit_style(T.Sequential(T.Conv2d(8, 8, 3, padding=1, groups=8), T.Tanh()))),
        ("up", T.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                 dilation=1)),
        ("sig", T.Sigmoid()),
        ("maxpool", T.MaxPool2d(3, 2, 1, dilation=1, ceil_mode=True)),
        ("avgpool", T.AvgPool2d(2, 1, 1, ceil_mode=False, count_include_pad=False)),
        ("avgdiv", T.AvgPool2d(2, 1, 0, divisor_override=3)),
        ("adapt", T.AdaptiveMaxPool2d((5, 4))),
        ("adapt2", T.AdaptiveAvgPool2d(3)),
        ("id", T.Identity()),
        ("flat", T.Flatten()),
        ("drop", T.Dropout(0.25)),
        ("fc", T.Linear(54, 12)),
        ("bn1", T.BatchNorm1d(12, momentum=None)),
        ("relu", T.ReLU()),
        ("out", T.Linear(12, 5, bias=False)),
    ]))


def _randomize_bn(tm, rng):
    for m in tm.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.from_numpy(rng.standard_normal(m.num_features) * 0.1))
            m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2, m.num_features)))
            m.weight.data.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, m.num_features)))
            m.bias.data.copy_(torch.from_numpy(rng.standard_normal(m.num_features) * 0.1))


def _compare(tm, cm, x, train, rng):
    """Outputs, input gradient and every parameter gradient of tm (torch) and cm (convkit)."""
    tm.train(train)
    cm.train(train)
    tm.zero_grad()
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = tm(xt)
    y = cm(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-4)
    g = rng.standard_normal(y.shape).astype(np.float32)
    yt.backward(torch.from_numpy(g))
    cm.zero_grad()
    dx = cm.backward(g)
    scale = max(1.0, float(np.abs(xt.grad.numpy()).max()))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-3, atol=1e-4 * scale)
    tparams = list(tm.named_parameters())  # same order; names differ for named children
    assert len(tparams) == len(cm.parameters())
    for (n, p), (tn, tp) in zip(cm.named_parameters(), tparams):
        assert n.split(".")[1:] == tn.split(".")[1:]
        want = tp.grad.numpy()
        np.testing.assert_allclose(p.grad, want, rtol=1e-3,
                                   atol=1e-4 * max(1.0, float(np.abs(want).max())), err_msg=n)


def test_resnet20_from_torch_gives_the_same_outputs_and_gradients(rng):
    import torch_twins
    torch.manual_seed(0)
    tm = torch_twins.resnet20(num_classes=10, in_channels=3).float()
    _randomize_bn(tm, rng)
    cm = interop.from_torch(tm)
    assert list(cm.state_dict()) == list(tm.state_dict())
    x = rng.standard_normal((4, 3, 16, 16)).astype(np.float32)
    _compare(tm, cm, x, train=False, rng=rng)
    _compare(tm, cm, x, train=True, rng=rng)
    # training mode updated both models' running statistics the same way
    for k, v in tm.state_dict().items():
        np.testing.assert_allclose(cm.state_dict()[k], v.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=k)


def test_a_model_with_every_layer_round_trips(rng):
    torch.manual_seed(1)
    tm = _every_layer_torch().float()
    _randomize_bn(tm, rng)
    cm = interop.from_torch(tm)
    x = rng.standard_normal((3, 3, 11, 9)).astype(np.float32)
    _compare(tm, cm, x, train=False, rng=rng)
    back = interop.to_torch(cm)
    assert isinstance(back[3], interop.TorchResidual)
    assert list(back.state_dict()) == list(cm.state_dict())  # convkit names by index
    for (k, v), (k2, v2) in zip(tm.state_dict().items(), back.state_dict().items()):
        assert k.split(".")[1:] == k2.split(".")[1:]
        assert torch.equal(v, v2), k
    back.eval()
    with torch.no_grad():
        np.testing.assert_array_equal(back(torch.from_numpy(x)).numpy(),
                                      tm.eval()(torch.from_numpy(x)).numpy())


def test_to_torch_then_from_torch_keeps_weights_and_outputs(rng):
    convkit.manual_seed(3)
    cm = models.resnet20(num_classes=7, in_channels=1)
    x = rng.standard_normal((2, 1, 12, 12)).astype(np.float32)
    cm.train()
    cm(x)  # move the running statistics off their defaults
    cm.eval()
    tm = interop.to_torch(cm)
    assert not tm.training
    assert list(tm.state_dict()) == list(cm.state_dict())
    with torch.no_grad():
        np.testing.assert_allclose(tm(torch.from_numpy(x)).numpy(), cm(x), rtol=1e-4,
                                   atol=1e-4)
    again = interop.from_torch(tm)
    for k, v in cm.state_dict().items():
        assert np.array_equal(again.state_dict()[k], v), k
    assert np.array_equal(again(x), cm(x))
    lenet = interop.from_torch(interop.to_torch(models.lenet5(activation="tanh", pool="avg")))
    assert sum(p.data.size for p in lenet.parameters()) == 61706


def test_unsupported_modules_are_named_with_their_path():
    T = torch.nn
    tm = T.Sequential(T.Conv2d(1, 2, 3), T.Sequential(T.ReLU(), T.Linear(2, 2), T.GELU()))
    with pytest.raises(ValueError, match=r"'1\.2'.*GELU"):
        interop.from_torch(tm)

    class Net(T.Module):
        def __init__(self):
            super().__init__()
            self.fc = T.Linear(2, 2)

        def forward(self, x):
            return self.fc(x) * 2

    with pytest.raises(ValueError, match=r"'0'.*Net"):
        interop.from_torch(T.Sequential(Net()))
    flat = interop.from_torch(T.Flatten(0, 2))  # any axes: kept both ways
    assert (flat.start_dim, flat.end_dim) == (0, 2)
    assert repr(interop.to_torch(flat)) == repr(T.Flatten(0, 2))

    class Mine(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match=r"'1'.*Mine"):
        interop.to_torch(nn.Sequential(nn.ReLU(), Mine()))


def test_tensors_are_accepted_as_inputs_without_a_copy(rng):
    x = torch.from_numpy(rng.standard_normal((2, 3, 6, 6)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
    w.requires_grad_(True)
    y = F.conv2d(x, w, padding=1)
    assert isinstance(y, np.ndarray)
    want = torch.nn.functional.conv2d(x, w, padding=1).detach().numpy()
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
    a = F._as_array(x)
    assert np.shares_memory(a, x.numpy())

    class OnlyDlpack:
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, **kw):
            return self.t.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

    d = F._as_array(OnlyDlpack(x))
    assert np.shares_memory(d, x.numpy())
    np.testing.assert_array_equal(F.relu(OnlyDlpack(x)), np.maximum(x.numpy(), 0))
    model = models.lenet5()
    xt = torch.zeros((2, 1, 28, 28), dtype=torch.float32, requires_grad=True)
    assert model(xt).shape == (2, 10)
    with pytest.raises(TypeError, match="meta"):
        F.relu(torch.zeros(3, device="meta"))


def test_load_state_dict_takes_a_pytorch_state_dict_with_buffers(rng):
    import torch_twins
    tm = torch_twins.resnet20(in_channels=1).float()
    _randomize_bn(tm, rng)
    cm = models.resnet20(in_channels=1)
    cm.load_state_dict(tm.state_dict())
    for k, v in tm.state_dict().items():
        assert np.array_equal(cm.state_dict()[k], v.numpy()), k
    with pytest.raises(ValueError, match="unexpected 'extra'"):
        cm.load_state_dict(tm.state_dict() | {"extra": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(16, 1, 3, 3\)"):
        cm.load_state_dict(torch_twins.resnet20(in_channels=3).state_dict())
    for k, v in tm.state_dict().items():  # nothing changed
        assert np.array_equal(cm.state_dict()[k], v.numpy()), k


def test_the_from_pytorch_example_runs_end_to_end(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path
    pytest.importorskip("onnxruntime")
    example = Path(__file__).resolve().parent.parent / "examples" / "from_pytorch.py"
    r = subprocess.run([sys.executable, str(example), "--json", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["import_max_diff"] < 1e-4 and out["onnx_max_diff"] < 1e-4
    assert out["convkit_accuracy"] == out["pytorch_accuracy"]
    assert out["onnx_accuracy"] == out["finetuned_accuracy"] > out["convkit_accuracy"] - 0.02
    assert {"inference_b256", "train_step_b64"} <= set(out["speed"])
    assert (tmp_path / "model.onnx").exists() and (tmp_path / "finetune.ckpt").exists()
