"""ONNX export: the written file under ONNX Runtime gives convkit's outputs at any batch size,
for LeNet-5, ResNet-20 and a model with every layer; clear errors that write nothing."""
import os

import numpy as np
import pytest

import convkit
from convkit import models, nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from convkit import onnx as ck_onnx  # noqa: E402


def _run(model, tmp_path, shape, opset=17, batches=(1, 3, 8), seed=0):
    path = tmp_path / "m.onnx"
    ck_onnx.export(model, path, shape, opset=opset)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    model.eval()
    rng = np.random.default_rng(seed)
    for n in batches:
        x = rng.standard_normal((n,) + tuple(shape[1:])).astype(np.float32)
        got = sess.run(None, {"input": x})[0]
        want = model(x)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1, np.abs(want).max()))
    return path


def _trained_bn(model, shape, rng):
    model.train()
    for _ in range(3):
        model(rng.standard_normal((8,) + tuple(shape[1:])).astype(np.float32) * 2 + 0.5)
    return model


def every_layer_model():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding="same", padding_mode="reflect"), nn.BatchNorm2d(8),
        nn.LeakyReLU(0.2),
        nn.Conv2d(8, 8, (3, 1), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=4,
                  padding_mode="replicate"), nn.ELU(0.7),
        nn.Residual(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Tanh())),
        nn.Residual(nn.Conv2d(8, 8, 1, bias=False), nn.Sequential(nn.Conv2d(8, 8, 1))),
        nn.ConvTranspose2d(8, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
        nn.Sigmoid(), nn.MaxPool2d(3, 2, 1, ceil_mode=True),
        nn.AvgPool2d(2, 1, 1, count_include_pad=False), nn.AvgPool2d(3, 2, 1, ceil_mode=True),
        nn.AvgPool2d(2, 1, 0, divisor_override=3), nn.MaxPool2d(2, 1, 0, dilation=2),
        nn.AdaptiveMaxPool2d((3, 2)), nn.AdaptiveAvgPool2d((2, 2)), nn.Identity(),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(24, 12), nn.BatchNorm1d(12), nn.ReLU(),
        nn.Linear(12, 5))


def test_lenet5_runs_the_same_under_onnx_runtime(tmp_path):
    for kw in ({}, dict(activation="tanh", pool="avg", in_channels=3, input_size=32)):
        m = models.lenet5(**kw)
        shape = (1, kw.get("in_channels", 1), kw.get("input_size", 28), kw.get("input_size", 28))
        _run(m, tmp_path, shape)


def test_resnet20_with_trained_statistics_runs_the_same(tmp_path, rng):
    m = _trained_bn(models.resnet20(), (1, 3, 32, 32), rng)
    path = _run(m, tmp_path, (1, 3, 32, 32))
    proto = onnx.load(str(path))
    names = {i.name for i in proto.graph.initializer}
    assert set(m.state_dict()) - names == {n for n in m.state_dict()
                                          if n.endswith("num_batches_tracked")}
    ops = {n.op_type for n in proto.graph.node}
    assert {"Conv", "BatchNormalization", "Relu", "Add", "GlobalAveragePool", "Gemm"} <= ops


@pytest.mark.parametrize("opset", [11, 13, 17, 19])
def test_a_model_with_every_layer_runs_the_same(tmp_path, rng, opset):
    m = _trained_bn(every_layer_model(), (1, 3, 23, 19), rng)
    was = m.training
    _run(m.train(was), tmp_path, (1, 3, 23, 19), opset=opset, batches=(1, 2, 5))


@pytest.mark.parametrize("H,W,k,s,p,d", [(7, 9, 3, 2, 1, 1), (8, 8, 2, 2, 0, 1), (10, 5, 3, 3, 1, 1),
                                          (6, 11, 2, 3, 1, 2), (5, 5, 4, 3, 2, 1),
                                          (9, 7, 3, 2, 0, 2)])
def test_pooling_modes_and_adaptive_sizes_match(tmp_path, H, W, k, s, p, d):
    layers = [nn.MaxPool2d(k, s, p, dilation=d, ceil_mode=True),
              nn.MaxPool2d(k, s, p, dilation=d)]
    if d == 1:
        layers += [nn.AvgPool2d(k, s, p, ceil_mode=True, count_include_pad=inc)
                   for inc in (True, False)]
        layers += [nn.AvgPool2d(k, s, p, ceil_mode=c, divisor_override=5) for c in (0, 1)]
    layers += [nn.AdaptiveAvgPool2d((3, 4)), nn.AdaptiveMaxPool2d((4, 3)),
               nn.AdaptiveAvgPool2d((H, None)), nn.AdaptiveMaxPool2d(1)]
    for layer in layers:
        _run(layer, tmp_path, (1, 2, H, W), batches=(2,))


def test_errors_name_the_layer_and_write_nothing(tmp_path):
    circ = nn.Sequential(nn.ReLU(), nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"))
    path = tmp_path / "x.onnx"
    with pytest.raises(ValueError, match=r"layer '1'.*circular.*opset >= 19"):
        ck_onnx.export(circ, path, (1, 2, 8, 8), opset=17)
    with pytest.raises(ValueError, match="opset 9"):
        ck_onnx.export(circ, path, (1, 2, 8, 8), opset=9)

    class Mine(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(ValueError, match=r"'2\.0'.*Mine"):
        ck_onnx.export(nn.Sequential(nn.ReLU(), nn.ReLU(), nn.Sequential(Mine())), path,
                       (1, 4))
    with pytest.raises(ValueError, match="return_indices"):
        ck_onnx.export(nn.MaxPool2d(2, return_indices=True), path, (1, 1, 4, 4))
    with pytest.raises(ValueError, match="input_shape"):
        ck_onnx.export(nn.ReLU(), path, (1, 0, 4))
    assert not os.listdir(tmp_path)
    m = models.lenet5().train()
    ck_onnx.export(m, path, (1, 1, 28, 28))
    assert m.training and all(c.training for c in m.modules())
    assert os.listdir(tmp_path) == ["x.onnx"]


@pytest.mark.parametrize("dims", [(2, 3), (1, 2), (-2, -1)])
def test_flatten_over_other_axes_exports_as_a_reshape(tmp_path, dims):
    convkit.manual_seed(3)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(*dims))  # its shape decides
    _run(m, tmp_path, (1, 3, 4, 5))


@pytest.mark.parametrize("layer", [nn.Softmax(dim=1), nn.LogSoftmax(dim=1), nn.Softmax()])
def test_softmax_layers_export(tmp_path, layer):
    convkit.manual_seed(4)
    m = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), layer)
    _run(m, tmp_path, (1, 3, 2, 2))
    with pytest.raises(ValueError, match="opset >= 13"):
        ck_onnx.export(m, tmp_path / "old.onnx", (1, 3, 2, 2), opset=12)


@pytest.mark.parametrize("up", [nn.Upsample(scale_factor=2), nn.Upsample(size=(9, 13)),
                                nn.Upsample(scale_factor=(1.5, 2), mode="bilinear"),
                                nn.Upsample(size=(9, 13), mode="bilinear", align_corners=True),
                                nn.Upsample(scale_factor=2.3, mode="bilinear",
                                            recompute_scale_factor=True),
                                nn.Upsample(scale_factor=(1.1, 1.5), mode="bilinear")],
                         ids=["nearest2", "nearest-size", "bilinear", "bilinear-ac-size",
                              "bilinear-recompute", "bilinear-axis-kept"])
@pytest.mark.parametrize("opset", [11, 17])
def test_upsample_exports_as_resize(tmp_path, up, opset):
    convkit.manual_seed(5)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), up, nn.ReLU())
    _run(m, tmp_path, (1, 3, 6, 7), opset=opset)
