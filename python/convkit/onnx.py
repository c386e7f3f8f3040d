"""ONNX export: ``export(model, path, input_shape, opset=17)`` writes a convkit model as an ONNX
graph with eval-mode semantics (batch norm with its running statistics, dropout off) and a
dynamic batch dimension. Needs the ``onnx`` package (``pip install onnx``).

Each layer becomes the ONNX operator that computes the same thing: Conv (a Pad first for the
reflect / replicate / circular padding modes), ConvTranspose, MaxPool, AveragePool (a depthwise
Conv of ones divided by PyTorch's divisor map where ``ceil_mode`` or ``divisor_override`` need
it), GlobalAveragePool / AveragePool / averaging MatMuls for adaptive average pooling,
MaxPool / separable ReduceMax for adaptive max pooling, BatchNormalization, Relu, LeakyRelu,
Sigmoid, Tanh, Elu, Resize (Upsample), Softmax, LogSoftmax, Flatten, Gemm, Identity (also for
Dropout), Add for residual blocks. Initializers carry the state_dict names (e.g. ``3.0.body.0.weight``).
"""
from __future__ import annotations

import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import nn

__all__ = ["export", "MIN_OPSET"]

#: the lowest opset export writes (Pad takes its pads as an input from opset 11)
MIN_OPSET = 11


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("convkit.onnx.export needs the onnx package: pip install onnx") \
            from None
    return onnx


class _Graph:
    """Nodes and initializers as they are emitted; names are unique."""

    def __init__(self, onnx, opset):
        self.onnx, self.opset = onnx, opset
        self.nodes, self.inits, self.names = [], [], set()

    def name(self, base):
        n, i = base, 1
        while n in self.names:
            n, i = f"{base}_{i}", i + 1
        self.names.add(n)
        return n

    def const(self, value, base, dtype=np.float32):
        name = self.name(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type, inputs, base, **attrs):
        out = self.name(base)
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out],
                                                     name=self.name(f"{base}/{op_type}"),
                                                     **attrs))
        return out

    def need(self, opset, path, what):
        if self.opset < opset:
            raise ValueError(f"onnx.export: layer {path!r} ({what}) needs opset >= {opset}, "
                             f"but opset {self.opset} was asked for; pass "
                             f"opset={max(opset, 17)}")

    def reduce_max(self, x, axis, base):
        if self.opset >= 18:
            return self.op("ReduceMax", [x, self.const([axis], base + ".axes", np.int64)], base,
                           keepdims=1)
        return self.op("ReduceMax", [x], base, axes=[axis], keepdims=1)

    def slice(self, x, axis, start, end, base):
        return self.op("Slice", [x, self.const([start], base + ".starts", np.int64),
                                 self.const([end], base + ".ends", np.int64),
                                 self.const([axis], base + ".axes", np.int64)], base)


def _pair(v):
    return tuple(int(a) for a in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _ceil_extra(size, k, s, p, d, out):
    """Padding to add at the end so that floor-mode pooling gives PyTorch's ceil-mode count."""
    return max(0, (out - 1) * s + d * (k - 1) + 1 - (size + 2 * p))


def _conv(g, m, x, xv, path):
    pads_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}
    kh, kw = m.kernel_size
    dh, dw = m.dilation
    if isinstance(m.padding, str):
        if m.padding == "valid":
            t = b = l = r = 0
        else:  # "same": as the functional op, the odd cell at the end
            th, tw = dh * (kh - 1), dw * (kw - 1)
            t, b, l, r = th // 2, th - th // 2, tw // 2, tw - tw // 2
    else:
        (t, l), (b, r) = m.padding, m.padding
    if m.padding_mode != "zeros" and (t or b or l or r):
        mode = pads_mode[m.padding_mode]
        g.need(19 if mode == "wrap" else 11, path, f"Conv2d with padding_mode={m.padding_mode!r}")
        pads = g.const([0, 0, t, l, 0, 0, b, r], path + ".pads", np.int64)
        x = g.op("Pad", [x, pads], path + ".padded", mode=mode)
        t = b = l = r = 0
    inputs = [x, g.const(m.weight.data, path + ".weight")]
    if m.bias is not None:
        inputs.append(g.const(m.bias.data, path + ".bias"))
    return g.op("Conv", inputs, path, kernel_shape=[kh, kw], strides=list(m.stride),
                pads=[t, l, b, r], dilations=[dh, dw], group=m.groups)


def _conv_transpose(g, m, x, xv, path):
    kh, kw = m.kernel_size
    inputs = [x, g.const(m.weight.data, path + ".weight")]
    if m.bias is not None:
        inputs.append(g.const(m.bias.data, path + ".bias"))
    ph, pw = m.padding
    return g.op("ConvTranspose", inputs, path, kernel_shape=[kh, kw], strides=list(m.stride),
                pads=[ph, pw, ph, pw], output_padding=list(m.output_padding),
                dilations=list(m.dilation), group=m.groups)


def _max_pool(g, m, x, xv, yv, path):
    kh, kw = _pair(m.kernel_size)
    sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
    ph, pw = _pair(m.padding)
    dh, dw = _pair(m.dilation)
    if (dh, dw) != (1, 1):
        g.need(10, path, "MaxPool2d with dilation")
    H, W = xv.shape[-2:]
    eh = _ceil_extra(H, kh, sh, ph, dh, yv.shape[-2]) if m.ceil_mode else 0
    ew = _ceil_extra(W, kw, sw, pw, dw, yv.shape[-1]) if m.ceil_mode else 0
    pads = [ph, pw, ph + eh, pw + ew]
    if max(pads[0], pads[2]) >= kh or max(pads[1], pads[3]) >= kw:
        # ONNX Runtime wants pads below the kernel size: pad with -inf explicitly instead
        x = g.op("Pad", [x, g.const([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]],
                                    path + ".pads", np.int64),
                         g.const(-np.inf, path + ".neg_inf")], path + ".padded")
        pads = [0, 0, 0, 0]
    return g.op("MaxPool", [x], path, kernel_shape=[kh, kw], strides=[sh, sw], pads=pads,
                dilations=[dh, dw])


def _avg_divisors(H, W, OH, OW, k, s, p, count_include_pad, divisor_override):
    """PyTorch's divisor of every output cell (a window clipped at the padded edge)."""
    if divisor_override:
        return np.full((1, 1, OH, OW), divisor_override, np.float32)

    def axis(size, out, k, s, p):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, size + p)
        full = end - start
        inside = np.minimum(end, size) - np.maximum(start, 0)
        return full if count_include_pad else inside

    dh = axis(H, OH, k[0], s[0], p[0])
    dw = axis(W, OW, k[1], s[1], p[1])
    return (dh[:, None] * dw[None, :]).astype(np.float32)[None, None]


def _avg_pool(g, m, x, xv, yv, path):
    kh, kw = _pair(m.kernel_size)
    sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
    ph, pw = _pair(m.padding)
    if not m.ceil_mode and not m.divisor_override:
        return g.op("AveragePool", [x], path, kernel_shape=[kh, kw], strides=[sh, sw],
                    pads=[ph, pw, ph, pw], count_include_pad=int(bool(m.count_include_pad)))
    # the window sums as a depthwise convolution with ones, then PyTorch's divisors
    C, H, W = xv.shape[-3:]
    OH, OW = yv.shape[-2:]
    eh = _ceil_extra(H, kh, sh, ph, 1, OH) if m.ceil_mode else 0
    ew = _ceil_extra(W, kw, sw, pw, 1, OW) if m.ceil_mode else 0
    ones = g.const(np.ones((C, 1, kh, kw)), path + ".ones")
    sums = g.op("Conv", [x, ones], path + ".sums", kernel_shape=[kh, kw], strides=[sh, sw],
                pads=[ph, pw, ph + eh, pw + ew], group=C)
    div = _avg_divisors(H, W, OH, OW, (kh, kw), (sh, sw), (ph, pw), m.count_include_pad,
                        m.divisor_override)
    return g.op("Div", [sums, g.const(div, path + ".divisors")], path)


def _windows(size, out):
    """Adaptive pooling's windows: [floor(i*size/out), ceil((i+1)*size/out))."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


def _adaptive(g, m, x, xv, yv, path, kind):
    H, W = xv.shape[-2:]
    OH, OW = yv.shape[-2:]
    if (OH, OW) == (1, 1):
        return g.op("GlobalAveragePool" if kind == "avg" else "GlobalMaxPool", [x], path)
    if H % OH == 0 and W % OW == 0:
        k = [H // OH, W // OW]
        if kind == "avg":
            return g.op("AveragePool", [x], path, kernel_shape=k, strides=k)
        return g.op("MaxPool", [x], path, kernel_shape=k, strides=k)
    if kind == "avg":  # a rectangle's mean is the mean over rows of the mean over columns
        aw = np.zeros((W, OW), np.float32)
        for j, (a, b) in enumerate(_windows(W, OW)):
            aw[a:b, j] = 1.0 / (b - a)
        ah = np.zeros((OH, H), np.float32)
        for i, (a, b) in enumerate(_windows(H, OH)):
            ah[i, a:b] = 1.0 / (b - a)
        cols = g.op("MatMul", [x, g.const(aw, path + ".cols")], path + ".colmean")
        return g.op("MatMul", [g.const(ah, path + ".rows"), cols], path)
    # a rectangle's max is the max over rows of the max over columns
    parts = [g.reduce_max(g.slice(x, 3, a, b, f"{path}.c{j}"), 3, f"{path}.cmax{j}")
             for j, (a, b) in enumerate(_windows(W, OW))]
    cols = g.op("Concat", parts, path + ".colmax", axis=3)
    parts = [g.reduce_max(g.slice(cols, 2, a, b, f"{path}.r{i}"), 2, f"{path}.rmax{i}")
             for i, (a, b) in enumerate(_windows(H, OH))]
    return g.op("Concat", parts, path, axis=2)


def _batch_norm(g, m, x, xv, path):
    C = m.num_features
    w = m.weight.data if m.affine else np.ones(C, np.float32)
    b = m.bias.data if m.affine else np.zeros(C, np.float32)
    if m.track_running_stats:
        return g.op("BatchNormalization",
                    [x, g.const(w, path + ".weight"), g.const(b, path + ".bias"),
                     g.const(m.running_mean, path + ".running_mean"),
                     g.const(m.running_var, path + ".running_var")], path, epsilon=m.eps)
    # no running statistics: eval mode normalises with the batch's own (as PyTorch)
    shape = [1, C] + [1] * (xv.ndim - 2)
    axes = [0] + list(range(2, xv.ndim))
    mean = g.op("ReduceMean", [x], path + ".mean", axes=axes, keepdims=1) if g.opset < 18 \
        else g.op("ReduceMean", [x, g.const(axes, path + ".axes", np.int64)], path + ".mean",
                  keepdims=1)
    cen = g.op("Sub", [x, mean], path + ".centered")
    sq = g.op("Mul", [cen, cen], path + ".sq")
    var = g.op("ReduceMean", [sq], path + ".var", axes=axes, keepdims=1) if g.opset < 18 \
        else g.op("ReduceMean", [sq, g.const(axes, path + ".axes2", np.int64)], path + ".var",
                  keepdims=1)
    den = g.op("Sqrt", [g.op("Add", [var, g.const(m.eps, path + ".eps")], path + ".veps")],
               path + ".std")
    y = g.op("Div", [cen, den], path + ".normed")
    y = g.op("Mul", [y, g.const(w.reshape(shape), path + ".weight")], path + ".scaled")
    return g.op("Add", [y, g.const(b.reshape(shape), path + ".bias")], path)


def _emit(g, m, x, xv, path):
    """Emits m applied to the graph value x (whose value for the example input is xv);
    returns (output name, output value)."""
    where = f"layer {path!r}" if path else "the model"
    if isinstance(m, nn.Sequential):
        for n, c in zip(m._names, m):
            x, xv = _emit(g, c, x, xv, f"{path}.{n}" if path else n)
        return x, xv
    if isinstance(m, nn.Residual):
        y, yv = _emit(g, m.body, x, xv, f"{path}.body" if path else "body")
        if m.shortcut is None:
            s, sv = x, xv
        else:
            s, sv = _emit(g, m.shortcut, x, xv, f"{path}.shortcut" if path else "shortcut")
        return g.op("Add", [y, s], path or "residual"), m.forward(xv)
    yv = m.forward(xv)
    if isinstance(yv, tuple):
        why = " (return_indices=True)" if getattr(m, "return_indices", False) else ""
        raise ValueError(f"onnx.export: {where} ({type(m).__name__}) gives {len(yv)} arrays"
                         f"{why}; export takes models whose layers each give one array")
    base = path or type(m).__name__
    if isinstance(m, nn.Conv2d):
        y = _conv(g, m, x, xv, base)
    elif isinstance(m, nn.ConvTranspose2d):
        y = _conv_transpose(g, m, x, xv, base)
    elif isinstance(m, nn.MaxPool2d):
        y = _max_pool(g, m, x, xv, yv, base)
    elif isinstance(m, nn.AvgPool2d):
        y = _avg_pool(g, m, x, xv, yv, base)
    elif isinstance(m, nn.AdaptiveAvgPool2d):
        y = _adaptive(g, m, x, xv, yv, base, "avg")
    elif isinstance(m, nn.AdaptiveMaxPool2d):
        y = _adaptive(g, m, x, xv, yv, base, "max")
    elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        y = _batch_norm(g, m, x, xv, base)
    elif isinstance(m, nn.LeakyReLU):
        y = g.op("LeakyRelu", [x], base, alpha=m.negative_slope)
    elif isinstance(m, nn.ELU):
        y = g.op("Elu", [x], base, alpha=m.alpha)
    elif isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Tanh)):
        y = g.op({"ReLU": "Relu"}.get(type(m).__name__, type(m).__name__), [x], base)
    elif isinstance(m, nn.Upsample):  # Resize by the scales of the example (batch dynamic)
        g.need(11, path, "Upsample")
        if m.mode == "nearest":
            attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric",
                         nearest_mode="floor")
        else:
            attrs = dict(mode="linear", coordinate_transformation_mode="align_corners"
                         if m.align_corners else "pytorch_half_pixel")
        inputs = [x, g.const([], base + ".roi")]
        if m.scale_factor is not None and not m.recompute_scale_factor:
            f = m.scale_factor
            f = list(f if isinstance(f, tuple) else (f, f))
            # an axis that keeps its size is a copy (PyTorch's and convkit's) whatever its
            # factor, and Resize would resample it: scale 1 there (the plane's size is fixed)
            f = [1.0 if o == n else v for v, n, o in zip(f, np.shape(xv)[2:], np.shape(yv)[2:])]
            inputs.append(g.const([1.0, 1.0] + f, base + ".scales"))
        else:  # the output size itself (scales would round): N and C from the input's shape
            nc = g.op("Slice", [g.op("Shape", [x], base + ".shape"),
                                g.const([0], base + ".starts", np.int64),
                                g.const([2], base + ".ends", np.int64)], base + ".nc")
            inputs += [g.const([], base + ".scales"),
                       g.op("Concat", [nc, g.const(list(np.shape(yv)[2:]), base + ".hw",
                                                   np.int64)], base + ".sizes", axis=0)]
        y = g.op("Resize", inputs, base, **attrs)
    elif isinstance(m, nn.Softmax):  # (and LogSoftmax) one axis: opset 13's semantics
        g.need(13, path, type(m).__name__)
        axis = m.dim if m.dim is not None else (0 if np.ndim(xv) in (0, 1, 3) else 1)
        y = g.op("LogSoftmax" if isinstance(m, nn.LogSoftmax) else "Softmax", [x], base,
                 axis=axis)
    elif isinstance(m, (nn.Identity, nn.Dropout)):
        y = g.op("Identity", [x], base)
    elif isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) == (1, -1):
        y = g.op("Flatten", [x], base, axis=1)
    elif isinstance(m, nn.Flatten):  # other axes: a Reshape (0 keeps an axis, as the batch)
        n = np.ndim(xv)
        first, last = (d + n if d < 0 else d for d in (m.start_dim, m.end_dim))
        shape = [0] * first + [-1] + list(np.shape(xv)[last + 1:])
        y = g.op("Reshape", [x, g.const(shape, base + ".shape", np.int64)], base)
    elif isinstance(m, nn.Linear):
        inputs = [x, g.const(m.weight.data, base + ".weight")]
        if m.bias is not None:
            inputs.append(g.const(m.bias.data, base + ".bias"))
        y = g.op("Gemm", inputs, base, transB=1)
    else:
        raise ValueError(f"onnx.export: {where} is a {type(m).__module__}."
                         f"{type(m).__name__}, which export does not know; it writes "
                         f"Sequential, Residual and convkit's layers")
    return y, yv


def export(model: nn.Module, path: Union[str, os.PathLike], input_shape: Sequence[int],
           opset: int = 17, input_name: str = "input", output_name: str = "output") -> None:
    """Writes model to ``path`` as an ONNX file for ONNX Runtime, OpenVINO, TensorRT and the
    rest: eval-mode semantics (batch norm with running statistics, dropout off), one input
    whose first (batch) dimension is dynamic. ``input_shape`` is one sample's shape with its
    batch axis, e.g. ``(1, 1, 28, 28)``. ``opset`` from ``MIN_OPSET`` (11) to what the
    installed onnx knows; a layer that needs a newer one (circular padding: 19) says so. The
    model is checked with ``onnx.checker`` before it is written (atomically), and is left in
    the train/eval mode it had.

    >>> import tempfile, os
    >>> from convkit import models
    >>> path = os.path.join(tempfile.mkdtemp(), "lenet5.onnx")
    >>> export(models.lenet5(), path, (1, 1, 28, 28))
    >>> import onnx; [d.dim_param or d.dim_value for d in
    ...               onnx.load(path).graph.input[0].type.tensor_type.shape.dim]
    ['batch', 1, 28, 28]
    """
    onnx = _onnx()
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"onnx.export: opset must be an int, but got {opset!r}")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"onnx.export: opset {opset} is outside what can be written: "
                         f"{MIN_OPSET} to {newest} (the installed onnx {onnx.__version__})")
    shape = tuple(int(d) for d in input_shape)
    if len(shape) < 2 or any(d < 1 for d in shape):
        raise ValueError(f"onnx.export: input_shape must be one sample's shape with its batch "
                         f"axis, e.g. (1, 3, 32, 32), but got {tuple(input_shape)}")
    shape = (1,) + shape[1:]
    g = _Graph(onnx, opset)
    was_training = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        xv = np.zeros((2,) + shape[1:], np.float32)  # 2: batch statistics need > 1 value
        y, yv = _emit(g, model, input_name, xv, "")
    finally:
        for m, mode in was_training:
            m.training = mode
    g.nodes.append(onnx.helper.make_node("Identity", [y], [output_name], name="output"))
    h = onnx.helper
    graph = h.make_graph(
        g.nodes, "convkit",
        [h.make_tensor_value_info(input_name, onnx.TensorProto.FLOAT, ["batch", *shape[1:]])],
        [h.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT,
                                  ["batch", *np.shape(yv)[1:]])],
        initializer=g.inits)
    proto = h.make_model(graph, producer_name="convkit",
                         opset_imports=[h.make_opsetid("", opset)])
    proto.ir_version = min(proto.ir_version, _ir_version(onnx, opset))
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    nn._write_atomic(os.fspath(path), lambda f: f.write(data))


def _ir_version(onnx, opset):
    """The IR version that goes with the opset (older runtimes refuse newer IR versions)."""
    try:
        from onnx.helper import VERSION_TABLE
        for row in VERSION_TABLE:
            if row[2] == opset:
                return row[1]
    except Exception:
        pass
    return onnx.IR_VERSION
