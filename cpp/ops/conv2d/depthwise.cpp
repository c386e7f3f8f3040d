// The depthwise family, for few channels per group (depthwise: one): output rows summed over
// their taps in registers (KernelTable::conv_rows) from zero-padded input rows split into their
// column phases (so every tap reads consecutive floats at any stride and dilation).
//   forward      items (image, group): the group's padded planes, then all output rows
//   input grad   (strided; at stride 1 the planner runs the transposed convolution instead)
//                items (image, input channel): for each dx row and column phase, the taps that
//                reach dy (in (k, r, t) order) as one row over dy rows padded left/right
//   weight grad  items (output channel): dot products of dy rows with the tap rows in 16 lanes
//                (KernelTable::conv_row_dots) over all images in order
// They multiply padding zeros, so the planner keeps them to finite operands; the "rows" family
// is the exact fallback.
#include <algorithm>
#include <vector>

#include "ops/conv2d/conv2d_internal.h"

namespace convkit {
namespace conv {
namespace {

// Zero-padded, phase-split planes: padded row i of plane c at c * plane + i * row, its phase f
// at + f * Wq; phase f index j is padded column j * sw + f.
struct Padded {
  int64_t Wq, row, plane;
  explicit Padded(const Conv2dShape& s)
      : Wq((s.W + 2 * s.pw + s.sw - 1) / s.sw), row(s.sw * Wq), plane((s.H + 2 * s.ph) * row) {}
  void fill(float* dst, const float* x, int64_t nplanes, const Conv2dShape& s) const {
    for (int64_t c = 0; c < nplanes; ++c)
      split_rows(dst + c * plane, row, Wq, x + c * s.H * s.W, s.H, s.W, -s.ph, 1,
                 s.H + 2 * s.ph, s.pw, s.sw, Wq);
  }
  // Offsets of the taps (c, r, t) of output row 0, in weight order.
  void taps(std::vector<int64_t>& off, int64_t Cg, const Conv2dShape& s) const {
    off.resize(static_cast<size_t>(Cg * s.R * s.S));
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t r = 0; r < s.R; ++r)
        for (int64_t t = 0; t < s.S; ++t)
          off[(c * s.R + r) * s.S + t] =
              c * plane + r * s.dh * row + (t * s.dw % s.sw) * Wq + t * s.dw / s.sw;
  }
};

}  // namespace

bool depthwise_forward(float* y, const float* x, const float* w, const float* b,
                       const Conv2dShape& s) {
  const int64_t Cg = group_in(s), Kg = group_out(s), taps = Cg * s.R * s.S, PQ = s.P * s.Q;
  const Padded pad(s);
  thread_local std::vector<int64_t> off;
  pad.taps(off, Cg, s);
  const int64_t* offp = off.data();  // this thread's: workers must not name the thread_local
  const auto rows = g_kernels->conv_rows;
  parallel_for(s.N * s.G, 2.0 * s.N * s.K * taps * PQ + kCopyCost * s.N * s.C * pad.plane,
               [&](int64_t item) {
    const int64_t n = item / s.G, g = item % s.G;
    float* buf = scratch(Buf::dwise_in, Cg * pad.plane);
    pad.fill(buf, x + (n * s.C + g * Cg) * s.H * s.W, Cg, s);
    for (int64_t k = g * Kg; k < (g + 1) * Kg; ++k)
      rows(y + (n * s.K + k) * PQ, s.Q, s.P, s.Q, buf, s.sh * pad.row, offp, w + k * taps, taps,
           b ? b[k] : 0.f);
  });
  return true;
}

bool depthwise_input_grad(float* dx, const float* dy, const float* w, const Conv2dShape& s) {
  const int64_t Cg = group_in(s), Kg = group_out(s), RS = s.R * s.S, PQ = s.P * s.Q;
  // dy rows padded left and right so that every tap's read stays inside its row
  const int64_t Lp = (s.S - 1) * s.dw / s.sw + 1;
  const int64_t Wd = Lp + std::max(s.Q, (s.pw + s.W - 1) / s.sw + 1) + 1;
  const auto rows = g_kernels->conv_rows;
  parallel_for(s.N * s.C, 2.0 * s.N * s.K * Cg * RS * PQ + kCopyCost * s.N * s.K * s.P * Wd,
               [&](int64_t item) {
    const int64_t n = item / s.C, ci = item % s.C, g = ci / Cg, cl = ci % Cg;
    float* dyb = scratch(Buf::dwise_dy, Kg * s.P * Wd);
    for (int64_t kl = 0; kl < Kg; ++kl)
      for (int64_t p = 0; p < s.P; ++p) {
        float* d = dyb + (kl * s.P + p) * Wd;
        std::fill(d, d + Lp, 0.f);
        std::copy(dy + ((n * s.K + g * Kg + kl) * s.P + p) * s.Q,
                  dy + ((n * s.K + g * Kg + kl) * s.P + p) * s.Q + s.Q, d + Lp);
        std::fill(d + Lp + s.Q, d + Wd, 0.f);
      }
    thread_local std::vector<int64_t> off;
    thread_local std::vector<float> wt;
    off.resize(static_cast<size_t>(Kg * RS));
    wt.resize(static_cast<size_t>(Kg * RS));
    float* tmp = s.sw > 1 ? scratch(Buf::dwise_row, s.W / s.sw + 2) : nullptr;
    float* dxc = dx + item * s.H * s.W;
    for (int64_t h = 0; h < s.H; ++h)
      for (int64_t fv = 0; fv < s.sw; ++fv) {
        // dx columns v = j * sw + fv - pw for j in [j0, j1)
        const int64_t j0 = std::max<int64_t>(0, (s.pw - fv + s.sw - 1) / s.sw);
        const int64_t j1 = (s.pw + s.W - 1 - fv) < 0 ? 0 : (s.pw + s.W - 1 - fv) / s.sw + 1;
        if (j1 <= j0) continue;
        int64_t nt = 0;
        for (int64_t kl = 0; kl < Kg; ++kl)
          for (int64_t r = 0; r < s.R; ++r) {
            const int64_t hp = h + s.ph - r * s.dh;
            if (hp < 0 || hp % s.sh || hp / s.sh >= s.P) continue;
            const int64_t p = hp / s.sh;
            for (int64_t t = 0; t < s.S; ++t) {
              const int64_t d = t * s.dw - fv;
              if (d < 0 || d % s.sw) continue;
              off[nt] = (kl * s.P + p) * Wd + Lp - d / s.sw;
              wt[nt++] = w[((g * Kg + kl) * Cg + cl) * RS + r * s.S + t];
            }
          }
        if (s.sw == 1) {
          rows(dxc + h * s.W, 0, 1, s.W, dyb + j0, 0, off.data(), wt.data(), nt, 0.f);
        } else {
          rows(tmp, 0, 1, j1 - j0, dyb + j0, 0, off.data(), wt.data(), nt, 0.f);
          for (int64_t j = j0; j < j1; ++j) dxc[h * s.W + j * s.sw + fv - s.pw] = tmp[j - j0];
        }
      }
  });
  return true;
}

bool depthwise_weight_grad(float* dw, const float* dy, const float* x, const Conv2dShape& s) {
  const int64_t Cg = group_in(s), Kg = group_out(s), taps = Cg * s.R * s.S, PQ = s.P * s.Q;
  const Padded pad(s);
  thread_local std::vector<int64_t> off;
  pad.taps(off, Cg, s);
  const int64_t* offp = off.data();
  const auto dots = g_kernels->conv_row_dots;
  parallel_for(s.K, 2.0 * s.N * s.K * taps * PQ + kCopyCost * s.N * s.K * Cg * pad.plane,
               [&](int64_t k) {
    const int64_t g = k / Kg;
    float* buf = scratch(Buf::dwise_in, Cg * pad.plane);
    float* lanes = scratch(Buf::dwise_lanes, taps * 16);
    std::fill(lanes, lanes + taps * 16, 0.f);
    for (int64_t n = 0; n < s.N; ++n) {
      pad.fill(buf, x + (n * s.C + g * Cg) * s.H * s.W, Cg, s);
      const float* dyk = dy + (n * s.K + k) * PQ;
      for (int64_t p = 0; p < s.P; ++p)
        dots(lanes, dyk + p * s.Q, s.Q, buf + p * s.sh * pad.row, offp, taps);
    }
    for (int64_t i = 0; i < taps; ++i) {
      double sum = 0.0;
      for (int l = 0; l < 16; ++l) sum += lanes[i * 16 + l];
      dw[k * taps + i] = static_cast<float>(sum);
    }
  });
  return true;
}

}  // namespace conv
}  // namespace convkit
