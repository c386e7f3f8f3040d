// The "rows" family: a convolution as sums of whole output rows, tap by tap, each tap over just
// the output columns whose input column lies inside the image. Padding is never multiplied, so a
// NaN or Inf in a weight or in dy reaches exactly the outputs and gradients that use it (the
// other paths multiply padding zeros, and the planner sends non-finite operands here). It takes
// any groups, dilation, stride and padding; it is the fast path for few channels per group
// (depthwise), where a GEMM would have nothing to tile.
//
// At stride sw > 1 each input plane (or input-gradient plane) is first split into its sw column
// phases, so that every tap again reads (or writes) consecutive floats.
#include <algorithm>
#include <cstring>

#include "ops/conv2d/conv2d_internal.h"

namespace convkit {
namespace conv {
namespace {

// Output columns q whose input column q*sw + off lies in [0, W): [lo, hi).
inline void tap_range(int64_t off, int64_t sw, int64_t W, int64_t Q, int64_t& lo, int64_t& hi) {
  lo = off >= 0 ? 0 : (-off + sw - 1) / sw;
  hi = W - 1 - off < 0 ? 0 : (W - 1 - off) / sw + 1;
  hi = std::min(hi, Q);
  lo = std::min(lo, hi);
}

// Where input column q*sw + off sits in a phase-split row: phase f = (q*sw + off) mod sw at
// index q + shift.
inline void phase_of(int64_t off, int64_t sw, int64_t& f, int64_t& shift) {
  f = ((off % sw) + sw) % sw;
  shift = (off - f) / sw;
}

// Phase-split copy of `nplanes` planes (H, W): dst[((c * H + h) * sw + f) * Wq + i] = x[c, h, i*sw + f]
// (zero past W).
void split_planes(float* dst, const float* x, int64_t nplanes, int64_t H, int64_t W, int64_t sw,
                  int64_t Wq) {
  for (int64_t c = 0; c < nplanes; ++c)
    split_rows(dst + c * H * sw * Wq, sw * Wq, Wq, x + c * H * W, H, W, 0, 1, H, 0, sw, Wq);
}

inline void axpy(float* __restrict y, const float* __restrict x, float a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

}  // namespace

// Items are (image, group, block of up to 16 output channels): the group's input planes (phase
// split when strided) are prepared once per item, then each output row is summed in a buffer
// over (c, r, t) in weight order and stored.
bool rows_forward(float* y, const float* x, const float* w, const float* b, const Conv2dShape& s) {
  const int64_t Cg = group_in(s), Kg = group_out(s), RS = s.R * s.S, HW = s.H * s.W;
  const int64_t PQ = s.P * s.Q, Wq = (s.W + s.sw - 1) / s.sw;
  const int64_t kb = std::min<int64_t>(Kg, 16), nkb = (Kg + kb - 1) / kb;
  parallel_for(s.N * s.G * nkb, 2.0 * s.N * s.K * Cg * RS * PQ, [&](int64_t item) {
    const int64_t n = item / (s.G * nkb), g = item / nkb % s.G, k0 = g * Kg + item % nkb * kb;
    const int64_t k1 = std::min(g * Kg + Kg, k0 + kb);
    const float* xg = x + (n * s.C + g * Cg) * HW;
    const float* planes = xg;  // row h of channel c, phase f: planes + ((c*H + h)*sw + f)*Wq
    if (s.sw > 1) {
      float* buf = scratch(Buf::rows_in, Cg * s.H * s.sw * Wq);
      split_planes(buf, xg, Cg, s.H, s.W, s.sw, Wq);
      planes = buf;
    }
    float* acc = scratch(Buf::rows_acc, s.Q);
    for (int64_t k = k0; k < k1; ++k)
      for (int64_t p = 0; p < s.P; ++p) {
        std::fill(acc, acc + s.Q, b ? b[k] : 0.f);
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t r = 0; r < s.R; ++r) {
            const int64_t h = p * s.sh - s.ph + r * s.dh;
            if (h < 0 || h >= s.H) continue;
            const float* row = planes + (c * s.H + h) * s.sw * Wq;
            const float* wr = w + ((k * Cg + c) * s.R + r) * s.S;
            for (int64_t t = 0; t < s.S; ++t) {
              int64_t lo, hi, f, shift;
              const int64_t off = t * s.dw - s.pw;
              tap_range(off, s.sw, s.W, s.Q, lo, hi);
              phase_of(off, s.sw, f, shift);
              axpy(acc + lo, row + f * Wq + shift + lo, wr[t], hi - lo);
            }
          }
        std::memcpy(y + (n * s.K + k) * PQ + p * s.Q, acc, sizeof(float) * s.Q);
      }
  });
  return true;
}

// Items are (image, input channel): the channel's gradient is accumulated (phase split when
// strided) by scattering each dy row of the group's output channels through each tap, in the
// fixed order (k, p, r, t), then stored.
bool rows_input_grad(float* dx, const float* dy, const float* w, const Conv2dShape& s) {
  const int64_t Cg = group_in(s), Kg = group_out(s), RS = s.R * s.S, HW = s.H * s.W;
  const int64_t PQ = s.P * s.Q, Wq = (s.W + s.sw - 1) / s.sw;
  parallel_for(s.N * s.C, 2.0 * s.N * s.K * Cg * RS * PQ, [&](int64_t item) {
    const int64_t n = item / s.C, ci = item % s.C, g = ci / Cg, c = ci % Cg;
    float* dxc = dx + item * HW;
    float* acc = s.sw > 1 ? scratch(Buf::rows_acc, s.H * s.sw * Wq) : dxc;
    std::fill(acc, acc + (s.sw > 1 ? s.H * s.sw * Wq : HW), 0.f);
    for (int64_t k = g * Kg; k < g * Kg + Kg; ++k) {
      const float* dyk = dy + (n * s.K + k) * PQ;
      const float* wk = w + (k * Cg + c) * RS;
      for (int64_t p = 0; p < s.P; ++p)
        for (int64_t r = 0; r < s.R; ++r) {
          const int64_t h = p * s.sh - s.ph + r * s.dh;
          if (h < 0 || h >= s.H) continue;
          float* row = acc + h * s.sw * Wq;
          for (int64_t t = 0; t < s.S; ++t) {
            int64_t lo, hi, f, shift;
            const int64_t off = t * s.dw - s.pw;
            tap_range(off, s.sw, s.W, s.Q, lo, hi);
            phase_of(off, s.sw, f, shift);
            axpy(row + f * Wq + shift + lo, dyk + p * s.Q + lo, wk[r * s.S + t], hi - lo);
          }
        }
    }
    if (s.sw > 1)
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t v = 0; v < s.W; ++v)
          dxc[h * s.W + v] = acc[(h * s.sw + v % s.sw) * Wq + v / s.sw];
  });
  return true;
}

// Items are output channels: each tap's sum over images and output rows of dy row . input row
// runs in 16 lanes (fixed order), the lanes added in double at the end.
bool rows_weight_grad(float* dw, const float* dy, const float* x, const Conv2dShape& s) {
  const int64_t Cg = group_in(s), Kg = group_out(s), RS = s.R * s.S, HW = s.H * s.W;
  const int64_t PQ = s.P * s.Q, Wq = (s.W + s.sw - 1) / s.sw, taps = Cg * RS;
  parallel_for(s.K, 2.0 * s.N * s.K * taps * PQ, [&](int64_t k) {
    const int64_t g = k / Kg;
    float* lanes = scratch(Buf::rows_acc, taps * 16);
    std::fill(lanes, lanes + taps * 16, 0.f);
    for (int64_t n = 0; n < s.N; ++n) {
      const float* xg = x + (n * s.C + g * Cg) * HW;
      const float* planes = xg;
      if (s.sw > 1) {
        float* buf = scratch(Buf::rows_in, Cg * s.H * s.sw * Wq);
        split_planes(buf, xg, Cg, s.H, s.W, s.sw, Wq);
        planes = buf;
      }
      const float* dyk = dy + (n * s.K + k) * PQ;
      for (int64_t p = 0; p < s.P; ++p)
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t r = 0; r < s.R; ++r) {
            const int64_t h = p * s.sh - s.ph + r * s.dh;
            if (h < 0 || h >= s.H) continue;
            const float* row = planes + (c * s.H + h) * s.sw * Wq;
            for (int64_t t = 0; t < s.S; ++t) {
              int64_t lo, hi, f, shift;
              const int64_t off = t * s.dw - s.pw;
              tap_range(off, s.sw, s.W, s.Q, lo, hi);
              phase_of(off, s.sw, f, shift);
              const float* a = dyk + p * s.Q;
              const float* xr = row + f * Wq + shift;
              float* l = lanes + ((c * s.R + r) * s.S + t) * 16;
              int64_t q = lo;
              for (; q + 16 <= hi; q += 16)
                for (int i = 0; i < 16; ++i) l[i] += a[q + i] * xr[q + i];
              for (int i = 0; q < hi; ++q, ++i) l[i] += a[q] * xr[q];
            }
          }
    }
    sum_lanes(dw + k * taps, lanes, taps);
  });
  return true;
}

}  // namespace conv
}  // namespace convkit
