// The depthwise family, for few channels per group (depthwise: one): output rows summed over
// their taps in registers (KernelTable::conv_rows) from zero-padded input rows split into their
// column phases (so every tap reads consecutive floats at any stride and dilation).
//   forward      items (image, group): the group's padded planes, then all output rows
//   input grad   (strided; at stride 1 the planner runs the transposed convolution instead)
//                items (image, input channel): for each column phase and run of dx rows (one
//                row in sh) whose taps reach the same kernel rows, the taps (in (k, r, t)
//                order) summed over dy rows padded left and right
//   weight grad  items (runs of output channels): dot products of dy rows with the tap rows in
//                16 lanes (KernelTable::conv_row_dots) over all images in order
// At stride 1 with 3 x 3 taps and one channel per group, forward and weight gradient read x in
// place where the ISA has the kernels (KernelTable::conv_dw_plane / conv_dw3_dots), the forward
// with 5 x 5 taps too; at stride 2 with 3 x 3 taps (padding 0 or 1) all three directions work on
// whole planes in place (conv_dw3s2_plane / conv_dw3s2_dots / conv_dw3s2_dx), and so does the
// forward with 5 x 5 taps (padding up to 2, conv_dw5s2_plane): the same products in the same
// order as on the padded copy, without the copy.
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

// Stride 1, undilated ks x ks taps, one channel per group: the kernels that read x in place
// (KernelTable::conv_dw_plane / conv_dw3_dots) apply, where the ISA has them.
bool in_place(const Conv2dShape& s, const void* kernel, int ks) {
  return kernel && group_in(s) == 1 && group_out(s) == 1 && s.R == ks && s.S == ks &&
         s.sh == 1 && s.sw == 1 && s.dh == 1 && s.dw == 1;
}

// 3x3 at stride 2, padding 0 or 1 each way, one channel per group: MobileNet's downsampling
// layers, whose three directions have whole-plane kernels on some ISAs
// (KernelTable::conv_dw3s2_plane, conv_dw3s2_dots, conv_dw3s2_dx).
bool s3x3_s2(const Conv2dShape& s) {
  return group_in(s) == 1 && group_out(s) == 1 && s.R == 3 && s.S == 3 && s.sh == 2 &&
         s.sw == 2 && s.dh == 1 && s.dw == 1 && s.ph <= 1 && s.pw <= 1;
}

// 5x5 at stride 2, padding 0 to 2 each way, one channel per group: EfficientNet's and
// MobileNetV3's 5x5 downsampling layers, whose forward has a whole-plane kernel on some ISAs
// (KernelTable::conv_dw5s2_plane).
bool s5x5_s2(const Conv2dShape& s) {
  return group_in(s) == 1 && group_out(s) == 1 && s.R == 5 && s.S == 5 && s.sh == 2 &&
         s.sw == 2 && s.dh == 1 && s.dw == 1 && s.ph <= 2 && s.pw <= 2;
}

// This thread's row of zeros for the in-place kernels: the padded rows above and below the
// plane (their masked loads touch at most Q + 4 floats).
const float* zero_row(int64_t Q) {
  float* z = scratch(Buf::dwise_row, Q + 4);
  std::fill(z, z + Q + 4, 0.f);
  return z;
}

}  // namespace

bool depthwise_forward(float* y, const float* x, const float* w, const float* b,
                       const Conv2dShape& s) {
  const int64_t Cg = group_in(s), Kg = group_out(s), taps = Cg * s.R * s.S, PQ = s.P * s.Q;
  const Padded pad(s);
  thread_local std::vector<int64_t> off;
  pad.taps(off, Cg, s);
  const int64_t* offp = off.data();  // this thread's: workers must not name the thread_local
  const auto rows = g_kernels->conv_rows;
  const auto rows_k = g_kernels->conv_rows_k;
  const auto plane = g_kernels->conv_dw_plane;
  const void* pk = reinterpret_cast<const void*>(plane);
  if (in_place(s, pk, 3) || in_place(s, pk, 5)) {
    const int ks = static_cast<int>(s.R);
    // x read where it lies, rows outside the plane from a row of zeros; items of up to 8
    // channels of one image (one call each: the kernel's setup per plane cost as much as the
    // arithmetic of a 14 x 14 plane)
    const int64_t per = std::min<int64_t>(8, s.G), nblk = (s.G + per - 1) / per;
    parallel_for(s.N * nblk, 2.0 * s.N * s.K * taps * PQ, [&](int64_t item) {
      const int64_t n = item / nblk, g0 = item % nblk * per, ng = std::min(per, s.G - g0);
      plane(ks, y + (n * s.K + g0) * PQ, PQ, ng, s.P, s.Q, x + (n * s.C + g0) * s.H * s.W,
            s.H * s.W, s.H, s.W, s.ph, s.pw, w + g0 * ks * ks, b ? b + g0 : nullptr,
            zero_row(s.Q));
    });
    return true;
  }
  const auto plane_s2 = s3x3_s2(s) ? g_kernels->conv_dw3s2_plane
                       : s5x5_s2(s) ? g_kernels->conv_dw5s2_plane
                                    : nullptr;
  if (plane_s2) {
    const int64_t per = std::min<int64_t>(8, s.G), nblk = (s.G + per - 1) / per;
    parallel_for(s.N * nblk, 2.0 * s.N * s.K * taps * PQ, [&](int64_t item) {
      const int64_t n = item / nblk, g0 = item % nblk * per, ng = std::min(per, s.G - g0);
      plane_s2(y + (n * s.K + g0) * PQ, PQ, ng, s.P, s.Q, x + (n * s.C + g0) * s.H * s.W,
               s.H * s.W, s.H, s.W, s.ph, s.pw, w + g0 * taps, b ? b + g0 : nullptr);
    });
    return true;
  }
  parallel_for(s.N * s.G, 2.0 * s.N * s.K * taps * PQ + kCopyCost * s.N * s.C * pad.plane,
               [&](int64_t item) {
    const int64_t n = item / s.G, g = item % s.G;
    float* buf = scratch(Buf::dwise_in, Cg * pad.plane);
    pad.fill(buf, x + (n * s.C + g * Cg) * s.H * s.W, Cg, s);
    if (Kg == 1) {
      rows(y + (n * s.K + g) * PQ, s.Q, s.P, s.Q, buf, s.sh * pad.row, offp, w + g * taps, taps,
           b ? b[g] : 0.f);
      return;
    }
    // several output channels per group: up to 4 share each load of the input rows
    for (int64_t k = g * Kg; k < (g + 1) * Kg; k += 4)
      rows_k(y + (n * s.K + k) * PQ, s.Q, PQ, static_cast<int>(std::min<int64_t>(4, (g + 1) * Kg - k)),
             s.P, s.Q, buf, s.sh * pad.row, offp, w + k * taps, taps, b ? b + k : nullptr);
  });
  return true;
}

bool depthwise_input_grad(float* dx, const float* dy, const float* w, const Conv2dShape& s) {
  const int64_t Cg = group_in(s), Kg = group_out(s), RS = s.R * s.S, PQ = s.P * s.Q;
  if (const auto plane = g_kernels->conv_dw3s2_dx; plane && s3x3_s2(s)) {
    // MobileNet's downsampling layers: whole planes, dy read in place and dx written once
    // (the phase rows below wrote each dx row twice, phases then the merged row); items of up
    // to 8 channels of one image
    const int64_t per = std::min<int64_t>(8, s.C), nblk = (s.C + per - 1) / per;
    parallel_for(s.N * nblk, 2.0 * s.N * s.C * 9 * PQ + kCopyCost * s.N * s.C * s.H * s.W,
                 [&](int64_t item) {
      const int64_t n = item / nblk, c0 = item % nblk * per, nc = std::min(per, s.C - c0);
      plane(dx + (n * s.C + c0) * s.H * s.W, s.H * s.W, nc, s.H, s.W, dy + (n * s.K + c0) * PQ,
            PQ, s.P, s.Q, s.ph, s.pw, w + c0 * 9);
    });
    return true;
  }
  // dx row h is padded row h + ph; its padded columns j * sw + f (phase f) for j in [J0, J1)
  // cover the row. Each phase is summed over dy rows padded left and right, so that every tap's
  // read stays inside its row.
  const int64_t J0 = s.pw / s.sw, J1 = (s.pw + s.W - 1) / s.sw + 1, Jn = J1 - J0;
  const int64_t Lp = (s.S - 1) * s.dw / s.sw + 1;
  const int64_t Wd = Lp + std::max(s.Q, J1) + 1;
  // The plan, the same for every item: runs of dx rows h, h + sh, ... (n of them) whose taps
  // reach the same kernel rows (from one row to the next, every tap's dy row moves down by one),
  // and for each run and column phase the taps: offsets into the padded dy rows of the group
  // and indices into the weights of one input channel, in (k, r, t) order.
  struct Run {
    int64_t h, n, t[17];  // phase f's taps: [t[f], t[f + 1]) (sw <= 16)
  };
  std::vector<Run> runs;
  std::vector<int64_t> off, widx;
  auto reach = [&](int64_t h) {  // bit r: kernel row r reaches dy from dx row h
    uint64_t m = 0;
    for (int64_t r = 0; r < s.R; ++r) {
      const int64_t hp = h + s.ph - r * s.dh;
      if (hp >= 0 && hp % s.sh == 0 && hp / s.sh < s.P) m |= uint64_t(1) << r;
    }
    return m;
  };
  for (int64_t h0 = 0; h0 < std::min(s.H, s.sh); ++h0)
    for (int64_t h = h0; h < s.H;) {
      const uint64_t m = reach(h);
      Run u{h, 1, {}};
      while (h + u.n * s.sh < s.H && reach(h + u.n * s.sh) == m) ++u.n;
      for (int64_t f = 0; f < s.sw; ++f) {
        u.t[f] = static_cast<int64_t>(off.size());
        for (int64_t kl = 0; kl < Kg; ++kl)
          for (int64_t r = 0; r < s.R; ++r) {
            if (!(m >> r & 1)) continue;
            const int64_t p = (h + s.ph - r * s.dh) / s.sh;
            for (int64_t t = 0; t < s.S; ++t) {
              const int64_t d = t * s.dw - f;
              if (d < 0 || d % s.sw) continue;
              off.push_back((kl * s.P + p) * Wd + Lp - d / s.sw);
              widx.push_back(kl * Cg * RS + r * s.S + t);
            }
          }
      }
      u.t[s.sw] = static_cast<int64_t>(off.size());
      runs.push_back(u);
      h += u.n * s.sh;
    }
  const auto rows = g_kernels->conv_rows;
  const auto merge = g_kernels->phase_merge_row;
  parallel_for(s.N * s.C, 2.0 * s.N * s.K * Cg * RS * PQ + kCopyCost * s.N * s.K * s.P * Wd,
               [&](int64_t item) {
    const int64_t n = item / s.C, ci = item % s.C, g = ci / Cg, cl = ci % Cg;
    float* dyb = scratch(Buf::dwise_dy, Kg * s.P * Wd);
    g_kernels->phase_split_rows(dyb, Wd, 0, dy + (n * s.K + g * Kg) * PQ, s.Q, Kg * s.P, s.Q,
                                Lp, 1, Wd);
    const float* wc = w + (g * Kg * Cg + cl) * RS;
    float* wt = scratch(Buf::dwise_lanes, static_cast<int64_t>(widx.size()) + 1);
    for (size_t i = 0; i < widx.size(); ++i) wt[i] = wc[widx[i]];
    float* dxc = dx + item * s.H * s.W;
    for (const Run& u : runs) {
      if (s.sw == 1) {  // J0 = pw: the row itself
        rows(dxc + u.h * s.W, s.sh * s.W, u.n, s.W, dyb + J0, Wd, off.data() + u.t[0],
             wt + u.t[0], u.t[1] - u.t[0], 0.f);
        continue;
      }
      // rows of phases [i][f][Jn]; the dx row is their padded columns pw .. pw + W - 1
      float* tmp = scratch(Buf::dwise_row, u.n * s.sw * Jn);
      for (int64_t f = 0; f < s.sw; ++f)
        rows(tmp + f * Jn, s.sw * Jn, u.n, Jn, dyb + J0, Wd, off.data() + u.t[f], wt + u.t[f],
             u.t[f + 1] - u.t[f], 0.f);
      for (int64_t i = 0; i < u.n; ++i)
        merge(dxc + (u.h + i * s.sh) * s.W, tmp + i * s.sw * Jn, Jn, s.sw, s.pw - J0 * s.sw, s.W);
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
  const auto dots3 = g_kernels->conv_dw3_dots;
  const bool in_place3 = in_place(s, reinterpret_cast<const void*>(dots3), 3);
  const auto dots3s2 = s3x3_s2(s) ? g_kernels->conv_dw3s2_dots : nullptr;
  // Items are runs of KB output channels, so that an item reads each image's planes of them in
  // one stretch (the planes of one channel alone are a few KiB, images apart). Every channel
  // adds its images in order: the same bits for any KB and thread count.
  const int64_t KB = std::max<int64_t>(1, std::min<int64_t>(8, s.K / (4 * get_num_threads())));
  const double work = 2.0 * s.N * s.K * taps * PQ + kCopyCost * s.N * s.K * Cg * pad.plane;
  parallel_for((s.K + KB - 1) / KB, work, [&](int64_t item) {
    const int64_t k0 = item * KB, k1 = std::min(s.K, k0 + KB);
    float* lanes = scratch(Buf::dwise_lanes, (k1 - k0) * taps * 16);
    std::fill(lanes, lanes + (k1 - k0) * taps * 16, 0.f);
    if (in_place3) {  // x read where it lies, rows outside the plane from a row of zeros
      const float* zeros = zero_row(s.Q);
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t k = k0; k < k1; ++k)
          dots3(lanes + (k - k0) * taps * 16, dy + (n * s.K + k) * PQ, s.P, s.Q,
                x + (n * s.C + k) * s.H * s.W, s.H, s.W, s.ph, s.pw, zeros);
    } else if (dots3s2) {  // stride 2, x read where it lies
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t k = k0; k < k1; ++k)
          dots3s2(lanes + (k - k0) * taps * 16, dy + (n * s.K + k) * PQ, s.P, s.Q,
                  x + (n * s.C + k) * s.H * s.W, s.H, s.W, s.ph, s.pw);
    } else {
      float* buf = scratch(Buf::dwise_in, Cg * pad.plane);
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t k = k0, filled = -1; k < k1; ++k) {
          const int64_t g = k / Kg;
          if (g != filled) pad.fill(buf, x + (n * s.C + g * Cg) * s.H * s.W, Cg, s);
          filled = g;
          dots(lanes + (k - k0) * taps * 16, dy + (n * s.K + k) * PQ, s.Q, s.P, s.Q, buf,
               s.sh * pad.row, offp, taps);
        }
    }
    for (int64_t k = k0; k < k1; ++k) sum_lanes(dw + k * taps, lanes + (k - k0) * taps * 16, taps);
  });
  return true;
}

}  // namespace conv
}  // namespace convkit
