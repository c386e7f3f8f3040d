"""All of PyTorch's conv2d: groups (depthwise, channel multipliers), dilation, padding modes,
padding='same', unbatched input, input_grad=False, conv_transpose2d; every algorithm of the plan
tables forced on every shape it applies to; zero-size dimensions; NaN/Inf in the weights.
Against the C++ float64 reference, PyTorch (float64) and finite differences, on every ISA."""
import re

import numpy as np
import pytest

import convkit
import convkit.functional as F
from convkit import _core

from conftest import ISAS, assert_close, finite_diff, needs_torch, torch

# (N, C, H, W, K, (R, S), stride, padding, dilation, groups)
SHAPES = [
    (2, 4, 9, 11, 4, (3, 3), (1, 1), (1, 1), (1, 1), 4),       # depthwise
    (1, 6, 13, 12, 12, (3, 3), (2, 2), (1, 1), (1, 1), 6),     # depthwise, multiplier 2, stride 2
    (2, 5, 17, 19, 5, (5, 5), (3, 3), (2, 1), (1, 1), 5),      # depthwise 5x5 stride 3
    (2, 8, 10, 10, 8, (3, 3), (1, 1), (2, 2), (2, 2), 1),      # dilated
    (1, 3, 15, 14, 7, (3, 2), (2, 1), (2, 0), (3, 2), 1),      # dilation with stride, asymmetric
    (2, 8, 9, 9, 12, (3, 3), (1, 1), (1, 1), (1, 1), 4),       # groups of 2 in, 3 out
    (1, 32, 12, 13, 32, (3, 3), (1, 1), (1, 1), (1, 1), 8),    # groups of 4 (the GEMM path)
    (2, 12, 7, 16, 24, (1, 1), (1, 1), (0, 0), (1, 1), 3),     # grouped pointwise
    (1, 6, 20, 21, 6, (7, 7), (2, 2), (3, 3), (1, 1), 6),      # depthwise 7x7
    (3, 1, 8, 8, 3, (3, 3), (1, 1), (0, 0), (2, 2), 1),        # C = 1, dilated
    (1, 4, 6, 40, 8, (2, 4), (1, 3), (0, 2), (2, 3), 2),       # everything at once
    (2, 16, 18, 17, 16, (3, 3), (1, 1), (2, 2), (2, 2), 16),   # dilated depthwise, odd widths
    (1, 64, 9, 9, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1),      # plain (the specialised paths)
    (1, 17, 12, 9, 33, (3, 3), (2, 2), (1, 1), (1, 1), 1),     # plain, strided
    (16, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0), (1, 1), 1),    # plain LeNet conv2 (Winograd)
    (2, 3, 9, 13, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1),      # plain, narrow rows
]


def _data(rng, shape, bias=True):
    N, C, H, W, K, (r, s), st, pd, dl, g = shape
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C // g, r, s)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32) if bias else None
    return x, w, b, dict(stride=st, padding=pd, dilation=dl, groups=g)


def _ref(x, w, b, kw):
    return _core.ref_conv2d(x, w, b, *kw["stride"], *kw["padding"], *kw["dilation"], kw["groups"])


def _ref_bwd(g, x, w, b, kw):
    return _core.ref_conv2d_backward(g, x, w, b, *kw["stride"], *kw["padding"], *kw["dilation"],
                                     kw["groups"])


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_and_gradients_match_reference(isa, rng, shape):
    x, w, b, kw = _data(rng, shape)
    y = F.conv2d(x, w, b, **kw)
    assert_close(y, _ref(x, w, b, kw), 1e-5, "forward")
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = F.conv2d_backward(g, x, w, b, **kw)
    rx, rw, rb = _ref_bwd(g, x, w, b, kw)
    assert_close(dx, rx, 1e-5, "grad_x")
    assert_close(dw, rw, 1e-5, "grad_weight")
    assert_close(db, rb, 1e-5, "grad_bias")


@needs_torch
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_pytorch_float64(rng, shape):
    x, w, b, kw = _data(rng, shape)
    xt, wt, bt = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.conv2d(xt, wt, bt, **kw)
    g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.tensor(g.astype(np.float64)))
    assert_close(F.conv2d(x, w, b, **kw), yt.detach().numpy(), 1e-5, "forward")
    dx, dw, db = F.conv2d_backward(g, x, w, b, **kw)
    assert_close(dx, xt.grad.numpy(), 1e-5, "grad_x")
    assert_close(dw, wt.grad.numpy(), 1e-5, "grad_weight")
    assert_close(db, bt.grad.numpy(), 1e-5, "grad_bias")


# depthwise 3x3 (and 5x5), the AVX-512 register kernels (stride 1 read in place): blocks of 1 to
# 4 vectors and past 64 columns, padding 0 to 3 on either axis, a row, a column, one pixel, narrow
# planes
DW3_SHAPES = [
    (2, 3, 5, 7, 3, (3, 3), (1, 1), (0, 2), (1, 1), 3),
    (1, 2, 9, 16, 2, (3, 3), (1, 1), (1, 0), (1, 1), 2),
    (1, 3, 7, 65, 3, (3, 3), (1, 1), (3, 3), (1, 1), 3),
    (1, 2, 11, 100, 2, (3, 3), (1, 1), (1, 2), (1, 1), 2),
    (2, 2, 1, 1, 2, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (1, 3, 40, 1, 3, (3, 3), (1, 1), (1, 1), (1, 1), 3),
    # padding 1, rows of up to 8: the outputs flattened into the vectors, rows across them
    (2, 5, 7, 7, 5, (3, 3), (1, 1), (1, 1), (1, 1), 5),
    (1, 3, 11, 3, 3, (3, 3), (1, 1), (1, 1), (1, 1), 3),
    (1, 2, 13, 8, 2, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (2, 3, 21, 25, 3, (3, 3), (1, 1), (1, 1), (1, 1), 3),  # blocks of 7 rows (P % 7 == 0)
    # padding 1, wider rows: each input row loaded once, its taps shifted in registers; blocks
    # of 1 to 4 vectors with a row tail, past 64 columns (the lanes beside a block), 1 or 2 rows
    (1, 2, 10, 12, 2, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (1, 2, 5, 40, 2, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (2, 2, 9, 57, 2, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (1, 2, 6, 65, 2, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (1, 2, 3, 150, 2, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (1, 2, 2, 20, 2, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (1, 2, 1, 30, 2, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    # 5x5 read in place (forward and the transposed input gradient): blocks of 1 and 2 vectors,
    # past 32 columns, padding 0 to 3, a pixel
    (2, 3, 9, 14, 3, (5, 5), (1, 1), (2, 2), (1, 1), 3),
    (1, 2, 11, 30, 2, (5, 5), (1, 1), (1, 2), (1, 1), 2),
    (1, 2, 6, 70, 2, (5, 5), (1, 1), (3, 0), (1, 1), 2),
    (2, 2, 1, 1, 2, (5, 5), (1, 1), (2, 2), (1, 1), 2),
    # 5x5 with padding 2 up to 16 columns: each row loaded once, its taps shifted in registers
    (1, 2, 16, 16, 2, (5, 5), (1, 1), (2, 2), (1, 1), 2),
    (1, 2, 3, 5, 2, (5, 5), (1, 1), (2, 2), (1, 1), 2),
    (2, 3, 7, 7, 3, (5, 5), (1, 1), (2, 2), (1, 1), 3),
    (1, 2, 6, 12, 2, (5, 5), (1, 1), (2, 2), (1, 1), 2),
    (1, 2, 9, 28, 2, (5, 5), (1, 1), (2, 2), (1, 1), 2),
    (2, 2, 4, 20, 2, (5, 5), (1, 1), (2, 2), (1, 1), 2),
    (1, 2, 2, 32, 2, (5, 5), (1, 1), (2, 2), (1, 1), 2),
    # stride 2 (rows of the phase-split copy, two kernel rows apart), a channel multiplier
    (2, 3, 13, 35, 3, (3, 3), (2, 2), (1, 1), (1, 1), 3),
    (1, 2, 8, 70, 4, (3, 3), (2, 2), (0, 1), (1, 1), 2),
    (1, 2, 9, 129, 2, (3, 3), (2, 1), (1, 1), (1, 1), 2),
    # stride 2 on whole planes at AVX-512 (the input gradient): padding 0 and 1 each way, odd and
    # even sizes, rows of 1 to 3 vectors
    (2, 4, 12, 16, 4, (3, 3), (2, 2), (0, 0), (1, 1), 4),
    (1, 3, 9, 5, 3, (3, 3), (2, 2), (1, 0), (1, 1), 3),
    (1, 2, 6, 40, 2, (3, 3), (2, 2), (0, 1), (1, 1), 2),
    (1, 9, 3, 33, 9, (3, 3), (2, 2), (1, 1), (1, 1), 9),
    # (the forward: blocks of 4 rows and 2 vectors, then 1; a row tail; rows ending at column 32)
    (1, 2, 20, 70, 2, (3, 3), (2, 2), (1, 1), (1, 1), 2),
    (1, 2, 19, 97, 2, (3, 3), (2, 2), (0, 1), (1, 1), 2),
    (2, 3, 40, 20, 3, (3, 3), (2, 2), (1, 0), (1, 1), 3),
    (1, 2, 11, 64, 2, (3, 3), (2, 2), (1, 1), (1, 1), 2),
    # 5x5 at stride 2 on whole planes (the forward): padding 0 to 2, 1 and 2 vectors, past 32
    # and 64 columns, row tails
    (1, 2, 14, 14, 2, (5, 5), (2, 2), (2, 2), (1, 1), 2),
    (2, 3, 28, 28, 3, (5, 5), (2, 2), (2, 2), (1, 1), 3),
    (1, 2, 9, 70, 2, (5, 5), (2, 2), (1, 2), (1, 1), 2),
    (1, 2, 11, 97, 2, (5, 5), (2, 2), (0, 1), (1, 1), 2),
    (1, 2, 5, 64, 2, (5, 5), (2, 2), (2, 2), (1, 1), 2),
    (1, 2, 3, 33, 2, (5, 5), (2, 2), (2, 0), (1, 1), 2),
    # output rows of 8 or fewer, two rows a vector (5x5 and 3x3 at stride 2, 5x5 at stride 1):
    # several blocks of 4 pairs, an odd row count, padding 0-2
    (1, 2, 40, 9, 2, (5, 5), (2, 2), (2, 1), (1, 1), 2),
    (2, 2, 6, 3, 2, (5, 5), (2, 2), (1, 2), (1, 1), 2),
    (1, 2, 19, 6, 2, (5, 5), (1, 1), (0, 1), (1, 1), 2),
    (1, 2, 30, 15, 2, (3, 3), (2, 2), (1, 1), (1, 1), 2),
    # (the input gradient: dx rows of 1 to 4 vectors side by side, past 64 columns)
    (1, 2, 9, 56, 2, (3, 3), (2, 2), (1, 1), (1, 1), 2),
    (1, 2, 8, 127, 2, (3, 3), (2, 2), (0, 1), (1, 1), 2),
    (1, 2, 5, 100, 2, (3, 3), (2, 2), (1, 0), (1, 1), 2),
]

# Shapes for the forced algorithms: these plus the general ones above, so that every row of every
# table meets several shapes it applies to (the plain rows need plain shapes).
FORCED_SHAPES = SHAPES + [
    (16, 7, 10, 12, 5, (5, 5), (1, 1), (0, 0), (1, 1), 1),    # dx lanes
    (2, 2, 6, 70, 3, (2, 5), (1, 1), (0, 3), (1, 1), 1),      # dx rows
    (2, 16, 17, 18, 20, (3, 3), (1, 1), (1, 1), (1, 1), 1),   # Winograd 3x3
    (19, 8, 11, 9, 12, (3, 3), (1, 1), (1, 0), (1, 1), 1),    # lanes weight gradient: 2 groups
    (113, 4, 15, 16, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1),   # and 8 one-row bands an item
    (17, 4, 16, 16, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # lanes: images 4 KiB apart
    (2, 16, 30, 29, 20, (3, 3), (2, 2), (1, 1), (1, 1), 1),   # Winograd 3x3 stride 2
    # 4x4 stride 2 (winograd4_s2): even and odd sizes, every padding from 0 to 3, one tile row
    (2, 16, 16, 16, 20, (4, 4), (2, 2), (1, 1), (1, 1), 1),
    (3, 17, 13, 11, 16, (4, 4), (2, 2), (0, 3), (1, 1), 1),
    (1, 16, 9, 30, 33, (4, 4), (2, 2), (2, 1), (1, 1), 1),
    (2, 16, 4, 7, 16, (4, 4), (2, 2), (1, 2), (1, 1), 1),
    # (rows of 1, 5 and 11 tiles, several to a vector or one with a tail; 18 and 33 tiles: one
    # and two whole vectors and a tail)
    (2, 16, 5, 3, 16, (4, 4), (2, 2), (1, 1), (1, 1), 1),
    (1, 17, 19, 19, 16, (4, 4), (2, 2), (1, 1), (1, 1), 1),
    (1, 16, 7, 44, 16, (4, 4), (2, 2), (1, 1), (1, 1), 1),
    (1, 16, 5, 70, 18, (4, 4), (2, 2), (1, 1), (1, 1), 1),
    (1, 16, 6, 130, 16, (4, 4), (2, 2), (0, 2), (1, 1), 1),
    # the forward's F(4, 2): one item of 5 images whose 4-tile vector runs cross rows and images
    # with the bottom and right tiles cut short
    (5, 16, 11, 13, 17, (4, 4), (2, 2), (1, 1), (1, 1), 1),
    (2, 3, 17, 19, 10, (5, 3), (3, 3), (2, 1), (1, 1), 1),    # stride 3
    (2, 8, 40, 40, 8, (3, 3), (5, 5), (1, 1), (1, 1), 1),     # stride 5 (im2col)
    (2, 5, 13, 10, 9, (7, 7), (2, 3), (3, 1), (1, 1), 1),     # 7x7 asymmetric stride
    (1, 1, 5, 5, 1, (5, 5), (1, 1), (0, 0), (1, 1), 1),       # kernel = input, C = K = 1
    # kvec's tiles of several 16-channel blocks: 3, 4, 5 and 7 blocks (a lone last block, a
    # group of 3 with a zero block), rows of 2 to 17 positions
    (2, 5, 9, 13, 40, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 3, 7, 4, 50, (3, 3), (1, 1), (1, 0), (1, 1), 1),
    (2, 4, 6, 9, 100, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 2, 5, 17, 70, (2, 3), (1, 1), (0, 1), (1, 1), 1),
    # rows of 7 and 14 positions: tiles of 3 blocks x 7 (groups 3 + 3 + a lone block, 3 + 1,
    # strided 3 + 2)
    (2, 6, 7, 7, 100, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    # (with full-width multiply-adds: strided rows of 7 in groups of 3 + 3 + 1, the last one a
    # 2-block tile reading a zero block, and 3 + 1)
    (2, 6, 13, 13, 112, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (1, 5, 14, 14, 64, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    # rows of 14 in 2-block tiles of 14 positions, then a lone block (48 channels)
    (2, 7, 9, 14, 48, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 5, 14, 14, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (2, 6, 13, 14, 80, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    # dilated 3x3 layers for winograd3's gathered phases: unequal dilations, odd phase sizes
    (2, 9, 13, 17, 11, (3, 3), (1, 1), (2, 3), (2, 3), 1),
    (1, 5, 11, 20, 7, (3, 3), (1, 1), (0, 1), (3, 1), 1),
    (2, 33, 12, 11, 17, (3, 3), (1, 1), (1, 0), (1, 2), 1),
    *DW3_SHAPES,
    # deep layers for kvec's runs of taps (1024 a run): 1170 and 1800 taps with 2, 3 and 4
    # blocks and a lone last block (unsplit), 1100 taps of a 1x1 kernel
    (2, 130, 6, 7, 70, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 200, 5, 9, 100, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    (1, 1100, 3, 5, 40, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    # kvec strided: a lone last block (with the zero block after it), unequal strides with
    # runs of taps, a 1x1
    (2, 40, 11, 13, 70, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    (1, 130, 9, 8, 48, (3, 3), (2, 1), (1, 0), (1, 1), 1),
    (1, 300, 5, 6, 32, (1, 1), (2, 2), (0, 0), (1, 1), 1),
    # strided 1x1 layers over the whole batch as one GEMM (gemm_batch): unequal strides, a
    # stride of 3, output rows that end inside a panel
    (3, 20, 9, 11, 35, (1, 1), (2, 3), (0, 0), (1, 1), 1),
    (2, 7, 8, 8, 9, (1, 1), (3, 3), (0, 0), (1, 1), 1),
    # 1x1 input gradients as transposed convolutions: the weights' blocked transpose with tails,
    # and per group; the layer's weights as they are in gemm_1x1's GEMM (256 x 256 channels
    # or more over few positions)
    (2, 20, 5, 6, 35, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    (1, 300, 5, 6, 261, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    (2, 6, 5, 7, 9, (1, 1), (1, 1), (0, 0), (1, 1), 3),
    # rows merged from two column phases past 32 columns (odd first column, odd tail)
    (1, 3, 9, 75, 3, (3, 3), (2, 2), (1, 1), (1, 1), 3),
    (1, 4, 7, 70, 5, (3, 3), (1, 1), (1, 2), (1, 2), 1),
]

_DIRS = ("forward", "input_grad", "weight_grad")


def _forced_cases():
    for d in _DIRS:
        for name in _core.conv2d_algorithms(d):
            yield d, name


@pytest.mark.skipif("avx512" not in ISAS or "avx2" not in ISAS, reason="needs AVX-512 and AVX2")
@pytest.mark.parametrize("shape", DW3_SHAPES + [SHAPES[0]], ids=str)
def test_depthwise_3x3_register_kernels_have_the_bits_of_the_padded_rows(rng, shape):
    """AVX-512 keeps a 3x3 depthwise layer's weights in registers and loads each input row once
    for the output rows that read it, and at stride 1 reads the input in place (forward, the
    transposed input gradient, the weight gradient; 5x5 forward and input gradient too); AVX2
    sums the same products in the same order, row by row over a zero-padded copy: the bits must
    agree."""
    x, w, b, kw = _data(rng, shape)
    x[0, 0, 0, 0] = np.nan if x.size > 1 else x[0, 0, 0, 0]
    out = {}
    before = _core.isa()
    try:
        for isa_name in ("avx512", "avx2"):
            _core.set_isa(isa_name)
            y = F.conv2d(x, w, b, **kw)
            out[isa_name] = (y,) + F.conv2d_backward(np.cos(np.nan_to_num(y)), x, w, b, **kw)
    finally:
        _core.set_isa(before)
    for a, c, what in zip(out["avx512"], out["avx2"], ("y", "grad_x", "grad_weight", "grad_bias")):
        np.testing.assert_array_equal(a, c, err_msg=what)


@pytest.mark.parametrize("direction,name", list(_forced_cases()))
def test_every_algorithm_forced_matches_reference(isa, rng, direction, name):
    ran = 0
    try:
        _core.conv2d_force(direction, name)
        for shape in FORCED_SHAPES:
            x, w, b, kw = _data(rng, shape)
            args = (tuple(x.shape), tuple(w.shape), *kw["stride"], *kw["padding"],
                    *kw["dilation"], kw["groups"])
            if not _core.conv2d_applies(direction, name, *args):
                continue
            ran += 1
            if direction == "forward":
                assert_close(F.conv2d(x, w, b, **kw), _ref(x, w, b, kw), 1e-5, f"{name} {shape}")
                continue
            y = _ref(x, w, b, kw)
            g = rng.standard_normal(y.shape).astype(np.float32)
            dx, dw, _ = F.conv2d_backward(g, x, w, b, **kw)
            rx, rw, _ = _ref_bwd(g, x, w, b, kw)
            got, want = (dx, rx) if direction == "input_grad" else (dw, rw)
            assert_close(got, want, 1e-5, f"{direction} {name} {shape}")
    finally:
        _core.conv2d_force(direction, "")
    own = {"winograd5", "winograd3_lanes", "kvec", "lanes", "dot"}  # AVX2's kernels
    kt_has = (name not in own | {"rows_x", "winograd3_lanes"} or isa == "avx512" or
              (isa == "avx2" and name in own))
    if kt_has and not (name == "gemm" and isa == "avx512" and direction == "weight_grad"):
        assert ran >= 2, f"{direction} {name} applied to only {ran} shapes on {isa}"


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("name", ["direct", "kvec", "im2col_gemm"])
def test_forced_forward_on_every_row_width(isa, rng, name, stride):
    """Rows 1 to 18, 31-33 and 63-65 wide, 1-4 output rows (more when strided), padded on one
    side or both: the padded row copies (moves of 4 or 8 floats for rows 4-64 wide, one run of
    zeros), at stride 2 the column phases (AVX2: masked 8-float loads, deinterleaved), 20
    output channels (GEMM row blocks of 6 and a last one of 2) and, for kvec, its passes of 1-5
    positions on one or two rows (the last pass as wide as the row's positions left), their
    positions `stride` columns apart at AVX2."""
    ran = 0
    try:
        _core.conv2d_force("forward", name)
        for W in [*range(1, 19), 31, 32, 33, 63, 64, 65]:
            for H, (ph, pw) in ((1, (0, 1)), (2, (1, 0)), (3, (1, 2)), (4, (2, 1))):
                H = H * stride + stride - 1
                shape = (1 + W % 2, 3, H, W, 20, (3, 3), (stride, stride), (ph, pw), (1, 1), 1)
                x, w, b, kw = _data(rng, shape)
                args = (tuple(x.shape), tuple(w.shape), stride, stride, ph, pw, 1, 1, 1)
                if H + 2 * ph < 3 or W + 2 * pw < 3 or \
                        not _core.conv2d_applies("forward", name, *args):
                    continue
                ran += 1
                assert_close(F.conv2d(x, w, b, **kw), _ref(x, w, b, kw), 1e-5, f"{name} {shape}")
    finally:
        _core.conv2d_force("forward", "")
    kvec_here = isa == "avx2" or (isa == "avx512" and stride == 1)  # (AVX-512: K >= 32 strided)
    assert ran >= 50 or (name == "kvec" and not kvec_here), (name, isa, stride, ran)


_W4 = (9, 16, 21, 26, 18, (4, 4), (2, 2), (1, 2), (1, 1), 1)  # 4x4 stride 2: winograd4_s2


@pytest.mark.parametrize("direction", _DIRS)
def test_winograd4_s2_same_bits_for_any_thread_count(rng, threads, direction):
    """Several items per call (bands of tile rows, chunks of images whose partial weight
    gradients are added in order): the bits depend on the shape only."""
    x, w, b, kw = _data(rng, _W4)
    g = rng.standard_normal(_ref(x, w, b, kw).shape).astype(np.float32)
    outs = []
    try:
        _core.conv2d_force(direction, "winograd4_s2")
        for n in (1, 2, 3):
            threads(n)
            outs.append((F.conv2d(x, w, b, **kw),) + F.conv2d_backward(g, x, w, b, **kw))
    finally:
        _core.conv2d_force(direction, "")
    for other in outs[1:]:
        for a, c in zip(outs[0], other):
            assert a.tobytes() == c.tobytes()


@pytest.mark.parametrize("direction", _DIRS)
def test_winograd4_s2_non_finite_operands_give_what_the_definition_gives(isa, rng, direction):
    """Its transforms subtract input values, so an Inf can give NaN where the definition has
    Inf: a non-finite result makes the path decline and the next row recompute the layer."""
    x, w, b, kw = _data(rng, _W4)
    g = rng.standard_normal(_ref(x, w, b, kw).shape).astype(np.float32)
    if direction == "input_grad":
        g[1, 3, 5, 7] = np.inf
    else:
        x[1, 3, 5, 7] = np.inf
    try:
        _core.conv2d_force(direction, "winograd4_s2")
        if direction == "forward":
            got, want = F.conv2d(x, w, b, **kw), _ref(x, w, b, kw)
        else:
            dx, dw, _ = F.conv2d_backward(g, x, w, b, **kw)
            rx, rw, _ = _ref_bwd(g, x, w, b, kw)
            got, want = (dx, rx) if direction == "input_grad" else (dw, rw)
    finally:
        _core.conv2d_force(direction, "")
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isinf(got), np.isinf(want)) and not np.isfinite(want).all()
    fin = np.isfinite(want)
    assert_close(got[fin], want[fin], 1e-5, direction)


@pytest.mark.parametrize("alg,C", [("winograd3", 64), ("winograd3_lanes", 12),
                                   ("winograd3_lanes", 64)])
def test_winograd3_weight_grad_same_bits_for_any_thread_count_and_non_finite_input(rng, threads,
                                                                                    alg, C):
    """Chunks of images (winograd3), or groups of 16 images and runs of tile rows
    (winograd3_lanes), whose partial sums are added in order: 40 images on 1-3 threads give the
    same bits; an Inf in x gives the definition's NaN/Inf pattern."""
    if not _core.conv2d_applies("weight_grad", alg, (40, C, 9, 11), (C, C, 3, 3), 1, 1, 1, 1, 1, 1,
                                1):
        pytest.skip(f"{alg} has no kernel on {_core.isa()}")
    x = rng.standard_normal((40, C, 9, 11)).astype(np.float32)
    w = rng.standard_normal((C, C, 3, 3)).astype(np.float32)
    kw = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    g = rng.standard_normal(_ref(x, w, None, kw).shape).astype(np.float32)
    outs = []
    try:
        _core.conv2d_force("weight_grad", alg)
        for n in (1, 2, 3):
            threads(n)
            outs.append(F.conv2d_backward(g, x, w, None, **kw)[1])
        assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()
        assert_close(outs[0], _ref_bwd(g, x, w, None, kw)[1], 1e-5, "weight_grad")
        x[3, C // 2, 8, 7] = np.inf
        got = F.conv2d_backward(g, x, w, None, **kw)[1]
    finally:
        _core.conv2d_force("weight_grad", "")
    want = _ref_bwd(g, x, w, None, kw)[1]
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isinf(got), np.isinf(want)) and not np.isfinite(want).all()


@pytest.mark.parametrize("r", [3, 5])
def test_winograd_lanes_same_bits_for_any_thread_count(rng, threads, r):
    """Items of 16 images and bands of tile rows: 40 images (a part-filled last group) on 1-3
    threads give the same bits."""
    x = rng.standard_normal((40, 12, 17, 15)).astype(np.float32)
    w = rng.standard_normal((20, 12, r, r)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    outs = []
    try:
        _core.conv2d_force("forward", "winograd3_lanes" if r == 3 else "winograd5")
        for n in (1, 2, 3):
            threads(n)
            outs.append(F.conv2d(x, w, b, padding=r // 2))
    finally:
        _core.conv2d_force("forward", "")
    assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()
    ref = _core.ref_conv2d(x, w, b, 1, 1, r // 2, r // 2, 1, 1, 1)
    assert_close(outs[0], ref, 1e-5, "forward")


@pytest.mark.parametrize("shape", [(17, 70, 12, 11, 36), (16, 40, 14, 14, 64),
                                   (16, 8, 11, 13, 130)], ids=str)
def test_winograd5_plans_wider_layers_with_the_same_bits(rng, threads, shape):
    """5x5 layers of more than 32 x 32 channels on planes 11+ wide run winograd5 (forward, and
    the input gradient as its transposed convolution): the reference's values, the same bits for
    1, 2 and 3 threads, and AVX2's forward the same as AVX-512's; on planes below 11 wide kvec
    keeps them (its tiles skip the padding's products)."""
    N, C, H, W, K = shape
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, 5, 5)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    plan = lambda xs: _core.conv2d_plan(xs, w.shape, 1, 1, 2, 2, 1, 1, 1)["forward"]
    g = rng.standard_normal((N, K, H, W)).astype(np.float32)
    want = _core.ref_conv2d(x, w, b, 1, 1, 2, 2, 1, 1, 1)
    want_dx = _ref_bwd(g, x, w, b, dict(stride=(1, 1), padding=(2, 2), dilation=(1, 1),
                                        groups=1))[0]
    got = {}
    before = _core.isa()
    try:
        for isa_name in [i for i in ("avx512", "avx2") if i in ISAS]:
            _core.set_isa(isa_name)
            assert plan(x.shape) == "winograd5", isa_name
            assert plan((N, C, 10, W)) != "winograd5", isa_name
            outs = []
            for n in (1, 2, 3):
                threads(n)
                outs.append((F.conv2d(x, w, b, padding=2),
                             F.conv2d_backward(g, x, w, b, padding=2)[0]))
            assert_close(outs[0][0], want, 1e-5, f"forward {isa_name}")
            assert_close(outs[0][1], want_dx, 1e-5, f"input_grad {isa_name}")
            for o in outs[1:]:
                assert all(a.tobytes() == c.tobytes() for a, c in zip(o, outs[0])), isa_name
            got[isa_name] = outs[0]
    finally:
        _core.set_isa(before)
    assert len({v[0].tobytes() for v in got.values()}) == 1  # (dx may take other rows per ISA)


@pytest.mark.parametrize("n,hw", [(3, (9, 11)), (1, (14, 14)), (40, (5, 3))], ids=str)
def test_winograd3_deep_layers_group_images(isa, rng, threads, n, hw):
    """Over 256 x 256 channels winograd3 puts the tiles of groups of images in one set of
    GEMMs (items: e and blocks of 64 output channels; 40 images of 3 x 5: more than one group).
    Against the definition, the same bits on 1-3 threads, and an Inf in x declines to the next
    row as the per-image items do."""
    C, K = 264, 260
    x = rng.standard_normal((n, C) + hw).astype(np.float32)
    w = (rng.standard_normal((K, C, 3, 3)) / 40).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    kw = dict(stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    outs = []
    try:
        _core.conv2d_force("forward", "winograd3")
        for t in (1, 2, 3):
            threads(t)
            outs.append(F.conv2d(x, w, b, **kw))
        xi = x.copy()
        xi[n - 1, 7, hw[0] - 1, 0] = np.inf
        got = F.conv2d(xi, w, b, **kw)
    finally:
        _core.conv2d_force("forward", "")
    assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()
    assert_close(outs[0], _ref(x, w, b, kw), 1e-5, "forward")
    want = _ref(xi, w, b, kw)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    assert_close(got[fin], want[fin], 1e-5, "forward")


@pytest.mark.parametrize("alg", ["winograd3", "winograd3_s2", "winograd3_lanes"])
@pytest.mark.parametrize("hw", [(9, 37), (5, 3), (20, 20), (11, 75)], ids=str)
@pytest.mark.parametrize("where", ["first", "last", "middle"])
def test_winograd3_non_finite_input_gives_what_the_definition_gives(isa, rng, alg, hw, where):
    """winograd3, winograd3_s2 and winograd3_lanes forced on every ISA (tiles in whole vectors
    and in the tail of a row, rows narrower and wider than a vector's tiles): an Inf in x makes
    their transforms' NaN, the path declines and the next row recomputes the layer."""
    H, W = hw
    x = rng.standard_normal((2, 32, H, W)).astype(np.float32)
    w = rng.standard_normal((16, 32, 3, 3)).astype(np.float32)
    x[1, 3, {"first": 0, "last": H - 1, "middle": H // 2}[where],
      {"first": 0, "last": W - 1, "middle": W // 2}[where]] = np.inf
    st = 2 if alg == "winograd3_s2" else 1
    kw = dict(stride=(st, st), padding=(1, 1), dilation=(1, 1), groups=1)
    try:
        _core.conv2d_force("forward", alg)
        got = F.conv2d(x, w, None, **kw)
    finally:
        _core.conv2d_force("forward", "")
    want = _ref(x, w, None, kw)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isinf(got), np.isinf(want)) and not np.isfinite(want).all()
    fin = np.isfinite(want)
    assert_close(got[fin], want[fin], 1e-5, "forward")


def test_plan_is_reported_for_depthwise_and_dilated_layers():
    plan = _core.conv2d_plan((8, 144, 28, 28), (144, 1, 3, 3), 1, 1, 1, 1, 1, 1, 144)
    assert plan == {"forward": "depthwise", "input_grad": "depthwise_transposed",
                    "weight_grad": "depthwise"}
    plan = _core.conv2d_plan((4, 64, 56, 56), (64, 64, 3, 3), 1, 1, 2, 2, 2, 2, 1)
    assert plan == {"forward": "winograd3", "input_grad": "transposed_conv",
                    "weight_grad": "dilated_phases"}
    with pytest.raises(ValueError, match="no algorithm named 'nope'"):
        _core.conv2d_force("forward", "nope")
    with pytest.raises(ValueError, match="direction"):
        _core.conv2d_force("sideways", "rows")


_GROUPED = [  # 32+ channels a group: each group as a dense layer ("grouped")
    (3, 64, 9, 11, 64, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    (2, 96, 12, 10, 64, (3, 3), (2, 2), (1, 0), (1, 1), 2),
    (1, 96, 8, 8, 96, (1, 1), (1, 1), (0, 0), (1, 1), 3),
    (2, 64, 10, 10, 64, (3, 3), (1, 1), (2, 2), (2, 2), 2),
    (17, 64, 8, 8, 128, (3, 3), (1, 1), (1, 1), (1, 1), 2),  # Winograd within each group
]


@pytest.mark.parametrize("shape", _GROUPED, ids=str)
def test_groups_of_many_channels_run_as_dense_layers(isa, rng, threads, shape):
    x, w, b, kw = _data(rng, shape)
    args = (x.shape, w.shape, *kw["stride"], *kw["padding"], *kw["dilation"], kw["groups"])
    assert set(_core.conv2d_plan(*args).values()) == {"grouped"}
    y = _ref(x, w, b, kw)
    g = rng.standard_normal(y.shape).astype(np.float32)
    rx, rw, rb = _ref_bwd(g, x, w, b, kw)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        outs.append((F.conv2d(x, w, b, **kw),) + F.conv2d_backward(g, x, w, b, **kw))
        for got, want, what in zip(outs[-1], (y, rx, rw, rb), ("y", "dx", "dw", "db")):
            assert_close(got, want, 1e-5, what)
    for other in outs[1:]:
        assert all(a.tobytes() == c.tobytes() for a, c in zip(outs[0], other))


@pytest.mark.parametrize("shape", [
    (2, 12, 9, 11, 8, (5, 5), (1, 1), (2, 2), (1, 1), 2),     # 6 a group, 5x5
    (3, 16, 10, 10, 16, (3, 3), (2, 2), (1, 0), (1, 1), 8),   # 2 a group, strided
    (2, 20, 11, 9, 10, (3, 3), (1, 1), (2, 2), (2, 2), 5),    # 4 a group, dilated
    (2, 16, 6, 7, 32, (1, 1), (1, 1), (0, 0), (1, 1), 4),     # 1x1, 4 in and 8 out a group
], ids=str)
def test_weight_gradient_of_small_groups_runs_a_group_at_a_time(isa, rng, threads, shape):
    """With 2+ input channels a group the weight gradient runs each group as a dense layer
    where the dense tiles exist (AVX2, AVX-512); one channel a group stays depthwise's, the
    scalar set keeps the grouped rows. The reference's values and NaN/Inf pattern, the same
    bits for 1, 2 and 3 threads."""
    x, w, b, kw = _data(rng, shape)
    args = (x.shape, w.shape, *kw["stride"], *kw["padding"], *kw["dilation"], kw["groups"])
    want_plan = "grouped" if isa in ("avx2", "avx512") else None
    plan = _core.conv2d_plan(*args)["weight_grad"]
    assert plan == want_plan if want_plan else plan != "grouped", (isa, plan)
    dw_args = ((64, 64, 8, 8), (64, 1, 3, 3), 1, 1, 1, 1, 1, 1, 64)
    assert _core.conv2d_plan(*dw_args)["weight_grad"] == "depthwise"
    y = _ref(x, w, b, kw)
    g = rng.standard_normal(y.shape).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        outs.append(F.conv2d_backward(g, x, w, b, input_grad=False, **kw)[1])
    assert_close(outs[0], _ref_bwd(g, x, w, b, kw)[1], 1e-5, "dw")
    assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()
    # (PyTorch's grouped weight gradient multiplies the padding's zeros: NaN where an Inf in
    # grad_out meets them; the definition, the reference and every ungrouped path have no
    # such term)
    g[1, 3, 0, 0] = np.inf
    x[0, 5, 2, 3] = np.nan
    dw = F.conv2d_backward(g, x, w, b, input_grad=False, **kw)[1]
    want = _ref_bwd(g, x, w, b, kw)[1]
    assert np.isnan(dw).any() and np.isinf(dw).any()
    assert np.array_equal(np.isnan(dw), np.isnan(want))
    assert np.array_equal(np.isinf(dw), np.isinf(want))


def _amd_family():
    """/proc/cpuinfo's "cpu family" on an AMD CPU (Zen 5: 26), else 0."""
    try:
        info = open("/proc/cpuinfo").read()
    except OSError:
        return 0
    if "AuthenticAMD" not in info:
        return 0
    fam = re.search(r"^cpu family\s*:\s*(\d+)", info, re.M)
    return int(fam.group(1)) if fam else 0


def test_plan_of_resnet20_downsampling_and_odd_plane_layers(isa):
    """ResNet-20's stride-2 layers on 16x16 input run kvec at AVX-512 (faster than direct or
    winograd3_s2 there), its 16 -> 32 layer on 32x32 winograd3_s2 on every ISA (direct with
    full-width AVX-512 multiply-adds); 64 x 64-channel weight gradients on 7x7 and 8x8 planes
    (Fashion-MNIST's and CIFAR's last stage) run winograd3_lanes at AVX-512 and AVX2, kvec or
    winograd3 on the scalar ISA."""
    plan = lambda xs, ws, s, p: _core.conv2d_plan(xs, ws, s, s, p, p, 1, 1, 1)
    s2 = [((128, 32, 16, 16), (64, 32, 3, 3), 1), ((128, 32, 14, 14), (64, 32, 1, 1), 0)]
    for xs, ws, p in s2:
        got = plan(xs, ws, 2, p)["forward"]
        assert (got == "kvec") == (isa == "avx512"), (xs, ws, got)
    # (on a CPU with full-width AVX-512 multiply-adds, a Zen 5, direct: the Winograd rows' moves
    # count twice there)
    wide = _core.wide_fma()
    assert wide == (isa == "avx512" and _amd_family() >= 0x1A)
    want = "direct" if wide else "winograd3_s2"
    assert plan((128, 16, 32, 32), (32, 16, 3, 3), 2, 1)["forward"] == want
    assert plan((32, 16, 56, 56), (32, 16, 3, 3), 2, 1)["forward"] == "winograd3_s2"
    # the stride-1 layers' forward: the lanes Winograd on any CPU, except the 16-channel one
    # with full-width multiply-adds (direct there)
    if isa != "scalar":
        for c, h in ((16, 32), (32, 16), (64, 8)):
            want = "direct" if wide and c == 16 else "winograd3_lanes"
            assert plan((128, c, h, h), (c, c, 3, 3), 1, 1)["forward"] == want
    if isa != "scalar":  # (no kvec kernels)
        lanes = isa == "avx512"
        assert plan((128, 64, 7, 7), (64, 64, 3, 3), 1, 1)["weight_grad"] == "winograd3_lanes"
        assert plan((128, 64, 8, 8), (64, 64, 3, 3), 1, 1)["weight_grad"] == "winograd3_lanes"
        assert plan((128, 32, 16, 16), (32, 32, 3, 3), 1, 1)["weight_grad"] == "winograd3_lanes"
        # 128 x 128 channels: winograd3_lanes at AVX-512 only (at AVX2 the band's tiles
        # overflow a Zen 3's L2)
        want = "winograd3_lanes" if lanes else "winograd3"
        assert plan((16, 128, 7, 7), (128, 128, 3, 3), 1, 1)["weight_grad"] == want
        assert plan((128, 128, 8, 8), (128, 128, 3, 3), 1, 1)["weight_grad"] == want
        # below 64 images, 256 x 256 channels stay winograd3 (the items have too few tiles),
        # and so do 64 x 64 channels on rows of 28+ columns; with full-width multiply-adds
        # gemm and kvec take them
        want = "gemm" if wide else "winograd3"
        assert plan((32, 256, 7, 7), (256, 256, 3, 3), 1, 1)["weight_grad"] == want
        want = "kvec" if wide else "winograd3"
        assert plan((16, 64, 28, 28), (64, 64, 3, 3), 1, 1)["weight_grad"] == want
        assert plan((128, 64, 28, 28), (64, 64, 3, 3), 1, 1)["weight_grad"] == want
        assert plan((128, 64, 16, 16), (64, 64, 3, 3), 1, 1)["weight_grad"] == "winograd3_lanes"
        # strided 3x3 layers: kvec with a column step (ResNet-20's 16 -> 32 and 32 -> 64
        # layers), but 1x1 ones (the shortcuts) GEMM
        assert plan((128, 16, 32, 32), (32, 16, 3, 3), 2, 1)["weight_grad"] == "kvec"
        assert plan((128, 32, 16, 16), (64, 32, 3, 3), 2, 1)["weight_grad"] == "kvec"
        assert plan((64, 16, 32, 32), (32, 16, 3, 3), 2, 1)["weight_grad"] == "kvec"
        assert plan((128, 16, 28, 28), (32, 16, 1, 1), 2, 0)["weight_grad"] == "gemm"
        # batch 1, strided 3x3: gemm for deep weights on rows up to 14, kvec on wider rows at
        # AVX-512 (dot at AVX2 past 16 columns)
        assert plan((1, 128, 28, 28), (256, 128, 3, 3), 2, 1)["weight_grad"] == "gemm"
        assert plan((1, 128, 30, 30), (256, 128, 3, 3), 2, 1)["weight_grad"] == "kvec"
        want = "kvec" if lanes else "dot"
        assert plan((1, 128, 56, 56), (256, 128, 3, 3), 2, 1)["weight_grad"] == want
    # ResNet-20's first stage (16 x 16 channels on 32 x 32) from 64 images on: winograd3_lanes
    # at AVX-512, dot below (and with fewer channels); on 28 x 28 (Fashion-MNIST's) also at AVX2
    lanes = isa == "avx512"
    for xs in ((128, 16, 32, 32), (64, 16, 64, 64)):
        assert (plan(xs, (16, 16, 3, 3), 1, 1)["weight_grad"] == "winograd3_lanes") == lanes
    got = plan((128, 16, 28, 28), (16, 16, 3, 3), 1, 1)["weight_grad"]
    assert (got == "winograd3_lanes") == (isa != "scalar"), got
    assert plan((16, 16, 64, 64), (16, 16, 3, 3), 1, 1)["weight_grad"] != "winograd3_lanes"
    assert plan((128, 8, 32, 32), (16, 8, 3, 3), 1, 1)["weight_grad"] != "winograd3_lanes"


def _forward_matches_ref_for_1_and_2_threads(threads, x, w, b, kw):
    outs = []
    for n in (1, 2):
        threads(n)
        outs.append(F.conv2d(x, w, b, **kw))
    assert_close(outs[0], _ref(x, w, b, kw), 1e-5, "forward")
    assert outs[0].tobytes() == outs[1].tobytes()


def test_plan_of_deep_strided_layers(isa, rng, threads):
    """Stride-2 layers over many input channels (ResNet-50's 1x1 downsampling over 1024, 3x3
    over 512, 3x3 over 256 on planes up to 14 wide) run kvec at AVX-512, where direct was 1.3-2x
    slower; ResNet-20's 64-channel 3x3 at 16x16 stays winograd3_s2. Small layers of the same
    kinds give the reference's values, with the same bits for 1 and 2 threads."""
    plan = lambda xs, ws, p: _core.conv2d_plan(xs, ws, 2, 2, p, p, 1, 1, 1)["forward"]
    deep = [((8, 1024, 14, 14), (2048, 1024, 1, 1), 0), ((32, 512, 14, 14), (512, 512, 3, 3), 1),
            ((32, 256, 28, 28), (256, 256, 3, 3), 1)]
    for xs, ws, p in deep:
        if _core.wide_fma() and (xs[2] == 28 or ws[2] == 1):  # (full-width multiply-adds:
            assert plan(xs, ws, p) == ("direct" if xs[2] == 28 else "gemm_batch")  # not kvec)
            continue
        assert (plan(xs, ws, p) == "kvec") == (isa == "avx512"), (xs, ws)
    # (the scalar set's 8-column GEMM tiles leave 43 % of winograd3_s2's columns idle on rows
    # of 14 tiles: it has always run direct there, and the plan now says so)
    want = "direct" if isa == "scalar" else "winograd3_s2"
    assert plan((8, 256, 56, 56), (512, 256, 3, 3), 1) == want
    assert plan((128, 64, 16, 16), (128, 64, 3, 3), 1) == "winograd3_s2"
    for shape in [(3, 1024, 7, 6, 40, (1, 1), (2, 2), (0, 0), (1, 1), 1),
                  (2, 256, 9, 9, 36, (3, 3), (2, 2), (1, 1), (1, 1), 1)]:
        x, w, b, kw = _data(rng, shape)
        assert (plan(x.shape, w.shape, kw["padding"][0]) == "kvec") == (isa == "avx512")
        _forward_matches_ref_for_1_and_2_threads(threads, x, w, b, kw)


def test_rgb_stems_run_the_depthwise_rows_at_avx512(isa, rng, threads):
    """3-channel stems over a batch run the depthwise row kernels at AVX-512 (3x3 from 8 images,
    ResNet's 7x7 stride-2 on 112+ columns from 2), direct elsewhere (one image, other ISAs):
    the reference's values, the same bits for 1 and 2 threads."""
    plan = lambda xs, ws, st, p: _core.conv2d_plan(xs, ws, st, st, p, p, 1, 1, 1)["forward"]
    lanes = isa == "avx512"
    assert (plan((8, 3, 224, 224), (64, 3, 7, 7), 2, 3) == "depthwise") == lanes
    assert (plan((2, 3, 112, 112), (64, 3, 7, 7), 2, 3) == "depthwise") == lanes
    assert (plan((8, 3, 32, 32), (16, 3, 3, 3), 1, 1) == "depthwise") == lanes
    assert plan((1, 3, 224, 224), (64, 3, 7, 7), 2, 3) != "depthwise"
    assert plan((8, 3, 64, 64), (64, 3, 7, 7), 2, 3) != "depthwise"
    x, w, b, kw = _data(rng, (2, 3, 113, 115, 20, (7, 7), (2, 2), (3, 3), (1, 1), 1))
    assert (plan(x.shape, w.shape, 2, 3) == "depthwise") == lanes
    _forward_matches_ref_for_1_and_2_threads(threads, x, w, b, kw)


@pytest.mark.skipif("avx2" not in ISAS, reason="needs AVX2")
def test_plan_of_winograd3_at_avx2(rng, threads):
    """At AVX2 (8-lane direct and kvec tiles) winograd3 takes 3x3 layers from 64 channels and 64
    tiles, 7x7 planes too, and 256 x 256 channels from 49 tiles (batch 1 on 14x14); kvec keeps
    batch 1's other few tiles, and batch 1's strided 3x3 layers over 128-256 channels; 1x1
    layers over up to 196 positions run the shared GEMM; 5x5 weight gradients on rows up to 32
    run kvec; the weight gradients of 256+ x 256+ channels on 7x7 below 32 images run gemm, not
    winograd3. The forwards give the reference's values with the same bits for 1 and 2
    threads."""
    before = _core.isa()
    try:
        _core.set_isa("avx2")
        plan = lambda xs, ws: _core.conv2d_plan(xs, ws, 1, 1, 1, 1, 1, 1, 1)["forward"]
        for xs, k in [((8, 512, 7, 7), 512), ((4, 512, 7, 7), 512), ((2, 128, 14, 14), 128),
                      ((1, 64, 28, 28), 64)]:
            assert plan(xs, (k, xs[1], 3, 3)) == "winograd3", xs
        assert plan((1, 128, 14, 14), (128, 128, 3, 3)) != "winograd3"
        assert plan((1, 512, 7, 7), (512, 512, 3, 3)) == "kvec"
        for c in (256, 512):
            assert plan((1, c, 14, 14), (c, c, 3, 3)) == "winograd3", c
        d3 = lambda xs, ws: _core.conv2d_plan(xs, ws, 1, 1, 1, 1, 1, 1, 1)["weight_grad"]
        for n, c in ((4, 512), (8, 512), (8, 256), (16, 256)):
            assert d3((n, c, 7, 7), (c, c, 3, 3)) == "gemm", (n, c)
        assert d3((32, 512, 7, 7), (512, 512, 3, 3)) == "winograd3"
        assert d3((8, 128, 7, 7), (128, 128, 3, 3)) == "winograd3"
        # 1x1 over up to 196 positions of 256 x 256 channels or more: the shared GEMM
        one = lambda xs, ws: _core.conv2d_plan(xs, ws, 1, 1, 0, 0, 1, 1, 1)["forward"]
        assert one((1, 1024, 14, 14), (256, 1024, 1, 1)) == "gemm_1x1"
        assert one((1, 256, 28, 28), (256, 256, 1, 1)) != "gemm_1x1"
        # the weight gradient of 5x5 layers on rows up to 32: kvec (dot past that)
        dw = lambda xs, ws: _core.conv2d_plan(xs, ws, 1, 1, 2, 2, 1, 1, 1)["weight_grad"]
        assert dw((32, 32, 28, 28), (64, 32, 5, 5)) == "kvec"
        assert dw((8, 32, 56, 56), (64, 32, 5, 5)) != "kvec"
        x, w, b, kw = _data(rng, (8, 64, 9, 11, 48, (3, 3), (1, 1), (1, 1), (1, 1), 1))
        assert plan(x.shape, w.shape) == "winograd3"
        _forward_matches_ref_for_1_and_2_threads(threads, x, w, b, kw)
        # batch-1 strided 3x3 layers over 128-256 channels (ResNet-18/50's downsampling): kvec,
        # its positions 2 columns apart; not 1x1, not 2 images, not 64 channels on 56 x 56
        s2 = lambda xs, ws: _core.conv2d_plan(xs, ws, 2, 2, ws[2] // 2, ws[2] // 2, 1, 1,
                                              1)["forward"]
        assert s2((1, 128, 28, 28), (256, 128, 3, 3)) == "kvec"
        assert s2((1, 256, 14, 14), (512, 256, 3, 3)) == "kvec"
        for xs, ws in [((2, 256, 14, 14), (512, 256, 3, 3)), ((1, 64, 56, 56), (128, 64, 3, 3)),
                       ((1, 256, 14, 14), (512, 256, 1, 1))]:
            assert s2(xs, ws) != "kvec", xs
        x, w, b, kw = _data(rng, (1, 128, 9, 10, 20, (3, 3), (2, 2), (1, 1), (1, 1), 1))
        assert s2(x.shape, w.shape) == "kvec"
        _forward_matches_ref_for_1_and_2_threads(threads, x, w, b, kw)
    finally:
        _core.set_isa(before)


@pytest.mark.skipif("avx2" not in ISAS, reason="needs AVX2")
@pytest.mark.parametrize("shape", [
    (2, 24, 9, 11, 24, (3, 3), (1, 1), (1, 1), (1, 1), 2),    # 12 a group: grouped
    (3, 26, 8, 7, 38, (5, 5), (1, 1), (2, 1), (1, 1), 2),     # 13 -> 19: grouped, 5x5
    (2, 16, 9, 10, 32, (1, 1), (1, 1), (0, 0), (1, 1), 2),    # 1x1: depthwise
    (2, 24, 7, 9, 24, (3, 3), (1, 1), (1, 1), (1, 1), 3),     # 8 a group: depthwise
], ids=str)
def test_avx2_plans_measured_on_zen3(rng, threads, shape):
    """At AVX2 groups of 12+ channels each side run as dense layers a group at a time (forward
    and input gradient; not 1x1), and the other grouped forwards take depthwise's rows rather
    than im2col_gemm. Large dense layers: winograd3 from 32 x 32 channels on planes 24+ wide,
    kvec for 5x5 and 7x7 kernels of 16+ input and 32+ output channels up to 3200 taps, 1x1 at
    stride 1 from 256 x 256 channels gemm_batch past gemm_1x1's positions, winograd3_s2 on 7
    output columns from 4 images. The grouped layers give the reference's values, the same bits
    for 1 and 2 threads."""
    before = _core.isa()
    try:
        _core.set_isa("avx2")
        plan = lambda xs, ws, p: _core.conv2d_plan(xs, ws, 1, 1, p, p, 1, 1, 1)
        assert plan((8, 32, 56, 56), (32, 32, 3, 3), 1)["forward"] == "winograd3"
        assert plan((8, 48, 28, 28), (48, 48, 3, 3), 1)["forward"] == "winograd3"
        assert plan((8, 32, 56, 56), (16, 32, 3, 3), 1)["forward"] != "winograd3"
        assert plan((8, 32, 20, 20), (32, 32, 3, 3), 1)["forward"] != "winograd3"
        assert plan((8, 24, 27, 27), (64, 24, 5, 5), 2)["forward"] == "kvec"
        assert plan((4, 64, 56, 56), (64, 64, 7, 7), 3)["forward"] == "kvec"
        assert plan((2, 256, 14, 14), (256, 256, 5, 5), 2)["forward"] != "kvec"
        assert plan((8, 12, 32, 32), (24, 12, 5, 5), 2)["forward"] != "kvec"
        assert plan((8, 512, 7, 7), (2048, 512, 1, 1), 0)["forward"] == "gemm_batch"
        assert plan((1, 512, 28, 28), (128, 512, 1, 1), 0)["forward"] == "gemm_batch"
        assert plan((1, 1024, 14, 14), (256, 1024, 1, 1), 0)["forward"] == "gemm_1x1"
        assert plan((8, 256, 28, 28), (128, 256, 1, 1), 0)["forward"] != "gemm_batch"
        s2 = lambda xs, ws: _core.conv2d_plan(xs, ws, 2, 2, 1, 1, 1, 1, 1)["forward"]
        assert s2((8, 512, 14, 14), (512, 512, 3, 3)) == "winograd3_s2"
        assert s2((4, 128, 14, 14), (256, 128, 3, 3)) == "winograd3_s2"
        assert s2((2, 256, 14, 14), (512, 256, 3, 3)) != "winograd3_s2"  # 7 columns, 2 images
        assert s2((1, 512, 14, 14), (512, 512, 3, 3)) != "winograd3_s2"
        x, w, b, kw = _data(rng, shape)
        args = (x.shape, w.shape, *kw["stride"], *kw["padding"], *kw["dilation"], kw["groups"])
        p = _core.conv2d_plan(*args)
        cg, kg = x.shape[1] // kw["groups"], w.shape[0] // kw["groups"]
        big = cg >= 12 and kg >= 12 and w.shape[2] * w.shape[3] > 1
        assert p["forward"] == ("grouped" if big else "depthwise"), p
        assert (p["input_grad"] == "grouped") == big, p
        _forward_matches_ref_for_1_and_2_threads(threads, x, w, b, kw)
        y = _ref(x, w, b, kw)
        g = rng.standard_normal(y.shape).astype(np.float32)
        outs = []
        for n in (1, 2):
            threads(n)
            outs.append(F.conv2d_backward(g, x, w, b, **kw)[0])
        assert_close(outs[0], _ref_bwd(g, x, w, b, kw)[0], 1e-5, "dx")
        assert outs[0].tobytes() == outs[1].tobytes()
    finally:
        _core.set_isa(before)


@pytest.mark.skipif("avx2" not in ISAS, reason="needs AVX2")
def test_avx2_winograd3_s2_takes_seven_tiles_a_row(rng, threads):
    """At AVX2 winograd3_s2 runs 3x3 stride-2 layers with 7 tiles a row (14 outputs, its GEMM
    columns 31 % idle) rather than handing them to direct: its bits differ from direct's, the
    reference's values, the same bits for 1 and 2 threads. The scalar set's plan leaves such a
    layer to direct (its 20 % limit), and says so."""
    x, w, b, kw = _data(rng, (3, 24, 28, 28, 20, (3, 3), (2, 2), (1, 1), (1, 1), 1))
    before = _core.isa()
    outs = {}
    big = ((8, 128, 28, 28), (256, 128, 3, 3), 2, 2, 1, 1, 1, 1, 1)
    try:
        _core.set_isa("scalar")
        assert _core.conv2d_plan(*big)["forward"] == "direct"
        _core.set_isa("avx2")
        assert _core.conv2d_plan(*big)["forward"] == "winograd3_s2"
        for alg in ("winograd3_s2", "direct"):
            _core.conv2d_force("forward", alg)
            for n in (1, 2):
                threads(n)
                outs[alg, n] = F.conv2d(x, w, b, **kw)
    finally:
        _core.conv2d_force("forward", "")
        _core.set_isa(before)
    want = _ref(x, w, b, kw)
    assert outs["winograd3_s2", 1].shape == (3, 20, 14, 14)
    assert_close(outs["winograd3_s2", 1], want, 1e-5, "winograd3_s2")
    assert outs["winograd3_s2", 1].tobytes() == outs["winograd3_s2", 2].tobytes()
    assert outs["winograd3_s2", 1].tobytes() != outs["direct", 1].tobytes()


def test_plan_of_input_gradients_of_few_channels(isa):
    """The input gradient of a layer over up to 4 channels (an image's saliency, an adversarial
    step): AVX-512's dx rows up to 8 output channels (LeNet-5's conv1), gemm_col2im with more and
    at AVX2, never the lanes kernel (below 5 channels it lost on every shape measured)."""
    plan = lambda xs, ws, p: _core.conv2d_plan(xs, ws, 1, 1, p, p, 1, 1, 1)["input_grad"]
    assert (plan((64, 1, 28, 28), (6, 1, 5, 5), 2) == "rows_x") == (isa == "avx512")
    if isa == "scalar":  # (its GEMM panels are narrower: the transposed convolution pays there)
        return
    for xs, k in [((4, 3, 224, 224), 64), ((128, 3, 32, 32), 16), ((64, 1, 28, 28), 32)]:
        assert plan(xs, (k, xs[1], 3, 3), 1) == "gemm_col2im", (xs, k)
    assert plan((16, 2, 32, 32), (8, 2, 3, 3), 1) not in ("lanes", "transposed_conv")


def test_plan_of_4x4_stride_2_weight_gradients_keeps_winograd4_s2(isa):
    """kvec's strided weight gradient does not take 4x4 stride-2 layers where winograd4_s2
    pays (a conv_transpose2d's input: (16, 64, 32, 32) -> 128 6.71 ms against kvec's 7.31)."""
    plan = _core.conv2d_plan((16, 64, 32, 32), (128, 64, 4, 4), 2, 2, 1, 1, 1, 1, 1)
    assert plan["weight_grad"] == "winograd4_s2"


def test_plan_of_wide_5x5_weight_gradients(isa):
    """5x5 weight gradients of 256 K weights or more on rows of 24+ run kvec (its chunks'
    partial weights cost little next to the products there); on 14x14 gemm keeps them."""
    dw = lambda xs, ws: _core.conv2d_plan(xs, ws, 1, 1, 2, 2, 1, 1, 1)["weight_grad"]
    if isa != "scalar":  # (no kvec kernels)
        assert dw((32, 128, 28, 28), (128, 128, 5, 5)) == "kvec"
        assert dw((8, 192, 28, 28), (192, 192, 5, 5)) == "kvec"
    assert dw((8, 256, 14, 14), (256, 256, 5, 5)) == "gemm"


def test_plan_of_pointwise_layers_at_stride_1(isa):
    """1x1 stride-1 layers go to kvec only on rows of 7 or 14 positions at AVX-512 (its tiles of 4
    blocks x 7 positions; with full-width multiply-adds neither); on other planes (a tile of 7 +
    1 positions on an 8-wide row) and at AVX2 direct runs them; over 2+ images their weight
    gradient is the packed GEMM."""
    plan = lambda xs, ws: _core.conv2d_plan(xs, ws, 1, 1, 0, 0, 1, 1, 1)["forward"]
    for xs, ws in [((128, 64, 8, 8), (256, 64, 1, 1)), ((128, 32, 16, 16), (128, 32, 1, 1)),
                   ((16, 64, 8, 8), (256, 64, 1, 1)), ((128, 8, 14, 14), (16, 8, 1, 1))]:
        assert plan(xs, ws) == "direct", (xs, ws)
    wide = _core.wide_fma()  # (full-width multiply-adds: direct on rows of 14)
    assert (plan((16, 256, 7, 7), (1024, 256, 1, 1)) == "kvec") == (isa == "avx512")
    got = plan((1, 1024, 14, 14), (256, 1024, 1, 1))
    assert (got == "kvec") == (isa == "avx512" and not wide), got
    assert got == "direct" or not wide, got
    # their weight gradient over 2+ images with 32+ channels each side: the packed GEMM
    dw = lambda xs, ws: _core.conv2d_plan(xs, ws, 1, 1, 0, 0, 1, 1, 1)["weight_grad"]
    for xs, ws in [((128, 64, 8, 8), (256, 64, 1, 1)), ((16, 256, 7, 7), (1024, 256, 1, 1)),
                   ((8, 512, 28, 28), (128, 512, 1, 1))]:
        assert dw(xs, ws) == "gemm", (xs, ws)
    # at batch 1 kvec at AVX-512 (AVX2's one-block tiles: gemm, 3x faster there; with
    # full-width multiply-adds gemm on rows up to 14)
    want = "kvec" if isa == "avx512" and not wide else "gemm"
    assert dw((1, 1024, 14, 14), (256, 1024, 1, 1)) == want
    # deep batch-1 3x3: gemm from 4 M weights at AVX-512, from 256 K at AVX2 (and with
    # full-width multiply-adds on rows up to 14)
    assert dw((1, 768, 7, 7), (768, 768, 3, 3)) == "gemm"
    assert dw((1, 512, 7, 7), (512, 512, 3, 3)) == want


def test_deep_pointwise_layers_over_few_positions_run_the_gemm(isa, rng, threads):
    """1x1 stride-1 layers of many channels over few positions (a ResNet-50's last stage at
    batch 1) run the shared GEMM with the positions as its rows (gemm_1x1) on every ISA: the
    reference's values, the same bits for 1 and 2 threads, and a NaN weight reaches only its own
    output channel (no stand-in zeros are multiplied, so no finiteness scan is needed)."""
    plan = lambda xs, ws: _core.conv2d_plan(xs, ws, 1, 1, 0, 0, 1, 1, 1)["forward"]
    assert plan((1, 2048, 7, 7), (512, 2048, 1, 1)) == "gemm_1x1"
    assert plan((8, 512, 7, 7), (2048, 512, 1, 1)) != "gemm_1x1"  # 392 positions
    shape = (2, 300, 5, 6, 260, (1, 1), (1, 1), (0, 0), (1, 1), 1)
    x, w, b, kw = _data(rng, shape)
    assert plan(x.shape, w.shape) == "gemm_1x1"
    _forward_matches_ref_for_1_and_2_threads(threads, x, w, b, kw)
    w[7, 123, 0, 0] = np.nan
    y = F.conv2d(x, w, b, **kw)
    assert np.isnan(y[:, 7]).all()
    assert np.isfinite(np.delete(y, 7, axis=1)).all()


@pytest.mark.parametrize("shape", [
    (3, 200, 5, 5, 300, (1, 1), (1, 1), (0, 0), (1, 1), 1),   # one depth block of 3 images
    (7, 400, 7, 7, 600, (1, 1), (1, 1), (0, 0), (1, 1), 1),   # 2 blocks, the cut mid-image
    (1, 64, 9, 9, 100, (3, 3), (2, 2), (1, 1), (1, 1), 1),    # batch 1, strided, padded
    (2, 40, 11, 13, 70, (3, 2), (2, 3), (1, 0), (1, 1), 1),   # unequal strides and padding
], ids=str)
def test_weight_gradient_of_large_weights_is_one_gemm_over_the_batch(isa, rng, threads, shape):
    """Where dW is larger than a chunk of images' inputs, the weight gradient's GEMM runs over
    the whole batch at once, parallel over dW's tiles: the reference's values, the same bits for
    1, 2 and 3 threads, and a NaN in grad_out reaches only its own output channel's weights."""
    x, w, b, kw = _data(rng, shape)
    args = (x.shape, w.shape, *kw["stride"], *kw["padding"], *kw["dilation"], kw["groups"])
    g = rng.standard_normal(_ref(x, w, b, kw).shape).astype(np.float32)
    try:
        _core.conv2d_force("weight_grad", "gemm")
        assert _core.conv2d_applies("weight_grad", "gemm", *args)
        outs = []
        for n in (1, 2, 3):
            threads(n)
            outs.append(F.conv2d_backward(g, x, w, b, input_grad=False, **kw)[1])
        assert_close(outs[0], _ref_bwd(g, x, w, b, kw)[1], 1e-5, str(shape))
        assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()
        g[-1, 3, 2, 1] = np.nan  # a position whose taps all read x, none the padding
        dw = F.conv2d_backward(g, x, w, b, input_grad=False, **kw)[1]
    finally:
        _core.conv2d_force("weight_grad", "")
    assert np.isnan(dw[3]).all()
    assert np.isfinite(np.delete(dw, 3, axis=0)).all()


def test_strided_pointwise_layers_run_one_gemm_over_the_batch(isa, rng, threads):
    """Strided 1x1 layers of 256+ channels (ResNet-50's projection shortcuts) run one GEMM over the
    batch's positions (gemm_batch) on every ISA, except those over 1024+ channels, which
    AVX-512's kvec keeps (but not with full-width multiply-adds), and at AVX2 every strided 1x1
    layer (ResNet-20's shortcuts): the reference's values, the same bits for 1, 2 and 3 threads,
    and a NaN weight reaches only its own output channel."""
    plan = lambda xs, ws: _core.conv2d_plan(xs, ws, 2, 2, 0, 0, 1, 1, 1)["forward"]
    assert plan((8, 512, 28, 28), (1024, 512, 1, 1)) == "gemm_batch"
    assert plan((1, 256, 56, 56), (512, 256, 1, 1)) == "gemm_batch"
    deep = plan((8, 1024, 14, 14), (2048, 1024, 1, 1))  # (gemm_batch with full-width FMAs)
    assert deep == ("kvec" if isa == "avx512" and not _core.wide_fma() else "gemm_batch")
    for xs, ws in (((8, 64, 56, 56), (128, 64, 1, 1)), ((128, 32, 16, 16), (64, 32, 1, 1)),
                   ((128, 16, 32, 32), (32, 16, 1, 1))):
        assert (plan(xs, ws) == "gemm_batch") == (isa == "avx2"), (xs, plan(xs, ws))
    shape = (3, 260, 19, 17, 270, (1, 1), (2, 2), (0, 0), (1, 1), 1)  # blocks cut mid-row
    x, w, b, kw = _data(rng, shape)
    assert plan(x.shape, w.shape) == "gemm_batch"
    outs = []
    for n in (1, 2, 3):
        threads(n)
        outs.append(F.conv2d(x, w, b, **kw))
    assert_close(outs[0], _ref(x, w, b, kw), 1e-5, "forward")
    assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()
    w[7, 123, 0, 0] = np.nan
    y = F.conv2d(x, w, b, **kw)
    assert np.isnan(y[:, 7]).all()
    assert np.isfinite(np.delete(y, 7, axis=1)).all()


@pytest.mark.parametrize("shape", SHAPES[:12], ids=str)
def test_identical_bits_for_any_thread_count(rng, threads, shape):
    x, w, b, kw = _data(rng, shape)
    g = rng.standard_normal(F.conv2d(x, w, b, **kw).shape).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        outs.append((F.conv2d(x, w, b, **kw),) + F.conv2d_backward(g, x, w, b, **kw))
    for other in outs[1:]:
        for a, c in zip(outs[0], other):
            assert a.tobytes() == c.tobytes()


def test_deep_layers_take_kvec_in_runs_of_taps_with_the_same_bits_for_any_thread_count(
        rng, threads):
    """3x3 layers over 512 channels at batch 1 (a ResNet's last stage) go to kvec, not to
    Winograd (whose transformed weights outgrow the caches there); kvec sums their 4608 taps in
    runs whose partial sums wait between runs: the bits must not depend on the thread count."""
    plan = _core.conv2d_plan((1, 512, 7, 7), (512, 512, 3, 3), 1, 1, 1, 1, 1, 1, 1)
    assert plan["forward"] == "kvec" and plan["input_grad"] == "transposed_conv"
    shape = (2, 130, 6, 7, 70, (3, 3), (1, 1), (1, 1), (1, 1), 1)  # 1170 taps: two runs
    x, w, b, kw = _data(rng, shape)
    assert _core.conv2d_plan(x.shape, w.shape, 1, 1, 1, 1, 1, 1, 1)["forward"] == "kvec"
    g = rng.standard_normal(F.conv2d(x, w, b, **kw).shape).astype(np.float32)
    outs = []
    for n in (1, 2, 3):
        threads(n)
        outs.append((F.conv2d(x, w, b, **kw),) + F.conv2d_backward(g, x, w, b, **kw))
    assert_close(outs[0][0], _ref(x, w, b, kw), 1e-5, "forward")
    for other in outs[1:]:
        for a, c in zip(outs[0], other):
            assert a.tobytes() == c.tobytes()


# strided weight gradients through kvec: 9 images (two chunks of 5 and 4), a lone last block of
# 16 output channels, unequal strides, stride 3 with asymmetric padding, a 5x5 kernel
_KVEC_STRIDED = [(9, 6, 13, 11, 20, (3, 3), (2, 2), (1, 1), (1, 1), 1),
                 (4, 5, 12, 17, 16, (3, 3), (2, 1), (1, 0), (1, 1), 1),
                 (3, 4, 14, 13, 33, (3, 3), (3, 3), (2, 1), (1, 1), 1),
                 (2, 3, 15, 15, 12, (5, 5), (2, 2), (2, 2), (1, 1), 1)]


@pytest.mark.parametrize("shape", _KVEC_STRIDED, ids=str)
def test_strided_weight_gradient_by_kvec_same_bits_for_any_thread_count_and_isa(rng, threads,
                                                                                shape):
    """kvec's weight gradient steps through the input by the stride (ResNet-20's downsampling
    layers run it): the reference's values, the same bits for 1, 2 and 3 threads, and AVX2's
    two 8-lane halves sum the same products in the same order as AVX-512's 16 lanes."""
    x, w, b, kw = _data(rng, shape)  # (finite: with a NaN or Inf the plan leaves kvec out)
    g = rng.standard_normal(_ref(x, w, b, kw).shape).astype(np.float32)
    want = _ref_bwd(g, x, w, b, kw)[1]
    args = (x.shape, w.shape, *kw["stride"], *kw["padding"], *kw["dilation"], kw["groups"])
    got = {}
    before = _core.isa()
    try:
        for isa_name in [i for i in ("avx512", "avx2") if i in ISAS]:
            _core.set_isa(isa_name)
            assert _core.conv2d_plan(*args)["weight_grad"] == "kvec", isa_name
            outs = []
            for n in (1, 2, 3):
                threads(n)
                outs.append(F.conv2d_backward(g, x, w, b, input_grad=False, **kw)[1])
            assert_close(outs[0], want, 1e-5, isa_name)
            assert all(o.tobytes() == outs[0].tobytes() for o in outs[1:]), isa_name
            got[isa_name] = outs[0]
    finally:
        _core.set_isa(before)
    assert len({v.tobytes() for v in got.values()}) == 1


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[4], SHAPES[10]], ids=str)
def test_gradients_by_finite_differences_float64(rng, shape):
    N, C, H, W, K, (r, s), st, pd, dl, grp = shape
    shape = (1, C, min(H, 9), min(W, 9), K, (r, s), st, pd, dl, grp)
    x, w, b, kw = _data(rng, shape)
    y = F.conv2d(x, w, b, **kw)
    g = rng.standard_normal(y.shape)
    dx, dw, db = F.conv2d_backward(g.astype(np.float32), x, w, b, **kw)
    tf = torch.nn.functional if torch is not None else None
    if tf is None:
        pytest.skip("needs PyTorch for the float64 forward")
    loss = lambda xx, ww, bb: float((tf.conv2d(torch.tensor(xx), torch.tensor(ww),
                                               torch.tensor(bb), **kw).numpy() * g).sum())
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    assert_close(dx, finite_diff(lambda v: loss(v, w64, b64), x64), 1e-5, "grad_x vs FD")
    assert_close(dw, finite_diff(lambda v: loss(x64, v, b64), w64), 1e-5, "grad_weight vs FD")


# ---- padding modes, 'same', unbatched, input_grad ----------------------------------------------

@needs_torch
@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("case", [
    # (N, C, H, W, K, (R, S), stride, padding, dilation, groups)
    (2, 3, 8, 9, 4, (3, 3), (1, 1), (1, 2), (1, 1), 1),
    (1, 4, 7, 7, 4, (3, 3), (2, 2), (2, 1), (2, 1), 2),
    (1, 2, 6, 5, 2, (5, 3), (1, 2), (2, 1), (1, 1), 2),
], ids=str)
def test_padding_modes_match_pytorch(isa, rng, mode, case):
    x, w, b, kw = _data(rng, case)
    m = torch.nn.Conv2d(x.shape[1], w.shape[0], w.shape[2:], bias=True, padding_mode=mode, **kw)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w.astype(np.float64)))
        m.bias.copy_(torch.tensor(b.astype(np.float64)))
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    yt = m(xt)
    g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.tensor(g.astype(np.float64)))
    y = F.conv2d(x, w, b, padding_mode=mode, **kw)
    assert_close(y, yt.detach().numpy(), 1e-5, "forward")
    dx, dw, db = F.conv2d_backward(g, x, w, b, padding_mode=mode, **kw)
    assert_close(dx, xt.grad.numpy(), 1e-5, "grad_x")
    assert_close(dw, m.weight.grad.numpy(), 1e-5, "grad_weight")
    assert_close(db, m.bias.grad.numpy(), 1e-5, "grad_bias")


@needs_torch
@pytest.mark.parametrize("kernel,dilation,mode", [
    ((3, 3), (1, 1), "zeros"), ((4, 4), (1, 1), "zeros"), ((2, 5), (3, 1), "zeros"),
    ((4, 3), (2, 2), "reflect"), ((1, 1), (1, 1), "zeros"), ((6, 2), (1, 1), "circular"),
])
def test_padding_same_any_kernel_and_dilation(rng, kernel, dilation, mode):
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    w = rng.standard_normal((5, 3, *kernel)).astype(np.float32)
    m = torch.nn.Conv2d(3, 5, kernel, padding="same", dilation=dilation, bias=False,
                        padding_mode=mode)
    with torch.no_grad():
        m.weight.copy_(torch.tensor(w.astype(np.float64)))
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    yt = m(xt)
    g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.tensor(g.astype(np.float64)))
    y = F.conv2d(x, w, None, padding="same", dilation=dilation, padding_mode=mode)
    assert y.shape == (2, 5, 11, 10)
    assert_close(y, yt.detach().numpy(), 1e-5, "forward")
    dx, dw, db = F.conv2d_backward(g, x, w, None, padding="same", dilation=dilation,
                                   padding_mode=mode)
    assert db is None
    assert_close(dx, xt.grad.numpy(), 1e-5, "grad_x")
    assert_close(dw, m.weight.grad.numpy(), 1e-5, "grad_weight")


def test_padding_same_with_stride_says_so():
    with pytest.raises(ValueError, match="padding='same'.*strided"):
        F.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), stride=2, padding="same")


def test_unbatched_input(rng):
    x, w, b, kw = _data(rng, SHAPES[5])
    y = F.conv2d(x[0], w, b, **kw)
    assert y.shape == F.conv2d(x[:1], w, b, **kw).shape[1:]
    assert y.tobytes() == F.conv2d(x[:1], w, b, **kw)[0].tobytes()
    g = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = F.conv2d_backward(g, x[0], w, b, **kw)
    rx, rw, rb = F.conv2d_backward(g[None], x[:1], w, b, **kw)
    assert dx.shape == x[0].shape
    assert dx.tobytes() == rx[0].tobytes() and dw.tobytes() == rw.tobytes()


def test_input_grad_false_skips_grad_x(rng):
    x, w, b, kw = _data(rng, SHAPES[3])
    g = rng.standard_normal(F.conv2d(x, w, b, **kw).shape).astype(np.float32)
    dx, dw, db = F.conv2d_backward(g, x, w, b, input_grad=False, **kw)
    assert dx is None
    _, dw2, db2 = F.conv2d_backward(g, x, w, b, **kw)
    assert dw.tobytes() == dw2.tobytes() and db.tobytes() == db2.tobytes()


# ---- conv_transpose2d ------------------------------------------------------------------------

# (N, C_in, H, W, C_out, (R, S), stride, padding, output_padding, groups, dilation)
T_SHAPES = [
    (2, 4, 5, 6, 3, (3, 3), (1, 1), (0, 0), (0, 0), 1, (1, 1)),
    (2, 8, 4, 4, 6, (4, 4), (2, 2), (1, 1), (0, 0), 1, (1, 1)),
    (1, 6, 5, 7, 4, (3, 3), (2, 3), (1, 0), (1, 2), 2, (1, 1)),
    (2, 4, 6, 5, 4, (3, 2), (1, 1), (2, 1), (0, 0), 4, (2, 3)),
    (1, 3, 4, 4, 2, (5, 5), (3, 3), (2, 2), (2, 1), 1, (1, 1)),
    (1, 2, 5, 5, 2, (3, 3), (1, 2), (0, 1), (1, 1), 1, (2, 2)),   # output_padding < dilation
    (0, 4, 5, 5, 3, (3, 3), (1, 1), (0, 0), (0, 0), 1, (1, 1)),   # N = 0
]


@needs_torch
@pytest.mark.parametrize("shape", T_SHAPES, ids=str)
def test_conv_transpose2d_matches_pytorch(isa, rng, shape):
    N, Ci, H, W, Co, (r, s), st, pd, op, grp, dl = shape
    x = rng.standard_normal((N, Ci, H, W)).astype(np.float32)
    w = rng.standard_normal((Ci, Co // grp, r, s)).astype(np.float32)
    b = rng.standard_normal(Co).astype(np.float32)
    kw = dict(stride=st, padding=pd, output_padding=op, groups=grp, dilation=dl)
    xt, wt, bt = (torch.tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b))
    yt = torch.nn.functional.conv_transpose2d(xt, wt, bt, **kw)
    g = rng.standard_normal(tuple(yt.shape)).astype(np.float32)
    yt.backward(torch.tensor(g.astype(np.float64)))
    y = F.conv_transpose2d(x, w, b, **kw)
    assert_close(y, yt.detach().numpy(), 1e-5, "forward")
    dx, dw, db = F.conv_transpose2d_backward(g, x, w, b, **kw)
    assert_close(dx, xt.grad.numpy(), 1e-5, "grad_x")
    assert_close(dw, wt.grad.numpy(), 1e-5, "grad_weight")
    assert_close(db, bt.grad.numpy(), 1e-5, "grad_bias")
    if N:
        assert_close(F.conv_transpose2d(x[0], w, b, **kw), yt.detach().numpy()[0], 1e-5,
                     "unbatched")


def test_conv_transpose2d_bad_output_padding():
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose2d(np.zeros((1, 2, 3, 3)), np.zeros((2, 2, 3, 3)), stride=2,
                           output_padding=2)


def test_empty_planes_and_empty_outputs_raise_like_pytorch():
    """An input plane of zero height or width, and a transposed convolution whose output would
    have zero height or width, raise as PyTorch's do (only the batch or channels may be empty)."""
    w = np.zeros((3, 2, 3, 3), np.float32)
    for x in (np.zeros((1, 2, 0, 4), np.float32), np.zeros((2, 5, 0), np.float32)):
        with pytest.raises(ValueError, match="non-zero height and width"):
            F.conv2d(x, w, padding=1)
        with pytest.raises(ValueError, match="non-zero height and width"):
            F.conv_transpose2d(x, np.zeros((2, 3, 3, 3), np.float32))
    # output width (1 - 1) - 2 * pw + 1: -1 at padding 1 (PyTorch: "Output size is too small")
    x, w = np.zeros((1, 2, 3, 1), np.float32), np.zeros((2, 3, 3, 1), np.float32)
    with pytest.raises(ValueError, match="at least 1x1"):
        F.conv_transpose2d(x, w, padding=(1, 1))
    assert F.conv_transpose2d(x, w, padding=(1, 0)).shape == (1, 3, 3, 1)


# ---- zero sizes, non-finite weights, bad arguments ------------------------------------------

@pytest.mark.parametrize("xs,ws,groups", [
    ((0, 4, 5, 5), (6, 2, 3, 3), 2),       # N = 0
    ((2, 4, 5, 5), (0, 4, 3, 3), 1),       # K = 0 (was SIGFPE in the weight gradient)
    ((2, 0, 5, 5), (3, 0, 3, 3), 1),       # C = 0: the output is the bias
    ((2, 4, 5, 5), (0, 1, 3, 3), 4),       # K = 0, grouped
])
def test_zero_sizes_give_correct_empty_results(isa, xs, ws, groups):
    x = np.ones(xs, np.float32)
    w = np.ones(ws, np.float32)
    b = np.full(ws[0], 0.5, np.float32)
    y = F.conv2d(x, w, b, padding=1, groups=groups)
    assert y.shape == (xs[0], ws[0], 5, 5)
    assert np.all(y == 0.5)  # (only the C = 0 case has elements: the bias)
    g = np.ones_like(y)
    dx, dw, db = F.conv2d_backward(g, x, w, b, padding=1, groups=groups)
    assert dx.shape == xs and np.all(dx == 0)
    assert dw.shape == ws and np.all(dw == 0) or xs[0] > 0 and xs[1] > 0 and ws[0] > 0
    assert db.shape == (ws[0],) and np.all(db == xs[0] * 25 * (xs[1] == 0))


@pytest.mark.parametrize("shape", [
    (2, 3, 8, 9, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1),      # plain: direct / transposed_conv
    (2, 16, 10, 18, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1),  # Winograd 3x3
    (16, 6, 12, 12, 16, (5, 5), (1, 1), (2, 2), (1, 1), 1),  # Winograd 5x5, lanes
    (2, 2, 7, 9, 3, (3, 3), (1, 1), (1, 1), (1, 1), 1),      # few channels: dx rows
    (2, 4, 9, 9, 4, (3, 3), (2, 2), (1, 1), (1, 1), 4),      # depthwise
    (1, 4, 9, 9, 4, (3, 3), (1, 1), (2, 2), (2, 2), 1),      # dilated
    (1, 16, 7, 7, 32, (3, 3), (1, 1), (1, 1), (1, 1), 1),    # kvec, several channel blocks
    (2, 8, 6, 5, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1),     # kvec, one block
    (1, 64, 7, 9, 64, (3, 3), (1, 1), (1, 1), (1, 1), 2),    # groups of 32: grouped declines
], ids=str)
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weight_reaches_only_what_uses_it(isa, rng, shape, value):
    """The definition skips padding (the C++ reference does), and so does PyTorch's float32 CPU
    convolution for most undilated layers; PyTorch's float64 and dilated paths, and its float32
    forward of narrow planes (the kvec shapes here), multiply the padding zeros by the weights,
    so their NaN also reaches outputs that never use the tap."""
    x, w, b, kw = _data(rng, shape)
    w[0, 0, 0, 1] = value  # one tap of one filter
    g = rng.standard_normal(_ref(x, w, b, kw).shape).astype(np.float32)
    y = F.conv2d(x, w, b, **kw)
    dx, dw, db = F.conv2d_backward(g, x, w, b, **kw)
    wants = [(y, _ref(x, w, b, kw), "forward")]
    rx, rw, _ = _ref_bwd(g, x, w, b, kw)
    wants += [(dx, rx, "grad_x"), (dw, rw, "grad_w")]
    if torch is not None and kw["dilation"] == (1, 1) and shape[3] > 7:
        xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        yt = torch.nn.functional.conv2d(xt, wt, bt, **kw)
        yt.backward(torch.tensor(g))
        wants += [(y, yt.detach().numpy(), "forward vs torch"), (dx, xt.grad.numpy(), "grad_x vs torch")]
    for got, want, what in wants:
        assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN pattern differs"
        assert np.array_equal(np.isinf(got), np.isinf(want)), f"{what}: Inf pattern differs"
        fin = np.isfinite(want)
        assert_close(got[fin], want[fin], 1e-4, what)


@needs_torch
def test_non_finite_grad_out_reaches_only_what_uses_it(isa, rng):
    x, w, b, kw = _data(rng, (2, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1))
    g = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    g[0, 1, 0, 0] = np.inf
    xt, wt = (torch.tensor(a, requires_grad=True) for a in (x, w))
    torch.nn.functional.conv2d(xt, wt, None, **kw).backward(torch.tensor(g))
    _, dw, _ = F.conv2d_backward(g, x, w, None, **kw)
    want = wt.grad.numpy()
    assert np.array_equal(np.isnan(dw), np.isnan(want))
    assert np.array_equal(np.isinf(dw), np.isinf(want))


@pytest.mark.parametrize("kw,match", [
    (dict(groups=3), "divisible by groups"),
    (dict(groups=0), "groups >= 1"),
    (dict(dilation=0), "dilation >= 1"),
    (dict(dilation=(1, -2)), "dilation >= 1"),
    (dict(padding_mode="mirror"), "padding_mode"),
    (dict(padding=6, padding_mode="reflect"), "reflect"),
    (dict(dilation=9), "dilation"),
])
def test_bad_arguments_name_the_argument(kw, match):
    x = np.zeros((1, 4, 6, 6), np.float32)
    w = np.zeros((4, 4 // kw.get("groups", 1) if kw.get("groups", 1) > 0 else 4, 3, 3),
                 np.float32)
    with pytest.raises(ValueError, match=match):
        F.conv2d(x, w, **kw)


def test_nhwc_input_gets_a_hint():
    x = np.zeros((2, 28, 28, 3), np.float32)
    with pytest.raises(ValueError, match="channels-last"):
        F.conv2d(x, np.zeros((6, 3, 5, 5), np.float32))


def test_huge_ints_name_the_argument():
    x, w = np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="conv2d: argument 'stride' is out of range"):
        F.conv2d(x, w, stride=2**70)
    with pytest.raises(ValueError, match="argument 'dilation' is out of range"):
        F.conv2d(x, w, dilation=(1, -2**65))
    y, _ = F.dropout(x, seed=2**80)  # any int seeds dropout (its low 64 bits)
    assert y.shape == x.shape
