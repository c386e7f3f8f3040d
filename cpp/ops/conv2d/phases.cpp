// A dilated stride-1 convolution split by phase into undilated ones that the Winograd-style
// forwards then run: output rows p = al + a*dh read only input rows of one phase mod dh (and
// likewise columns), so each of the dh*dw output phases is an undilated convolution of one
// phase sub-image of x. The sub-images are split out of x in one pass (the ISA's
// phase_split_rows) into one batch of N*dh*dw sub-images, which runs as one planned forward (one
// call instead of dh*dw: 6.3 ms against 7.2 for 4 phases of (4, 64, 28, 28) at 2 threads), and
// its output is interleaved into y; the sums are those of the planned forward, so the bits depend
// on the shape only.
// (The same split of a strided input gradient into stride-1 convolutions of dy with sub-kernels
// measured slower than gemm_col2im on the shapes tried: the sub-images were too small.)
#include <algorithm>
#include <string>

#include "ops/conv2d/conv2d_internal.h"

namespace convkit {
namespace conv {
namespace {

// Output phase (al, be) has rows p = al + a*dh for a < ceil((P - al) / dh); it reads x rows
// al - ph + (a + r)*dh: sub-image rows i = a + r of the x rows al - ph + i*dh. Every phase is
// given the largest phase's size (Pm x Qm outputs; the extra rows and columns of smaller phases
// are computed from zeros and dropped).
struct Phases {
  int64_t Pm, Qm, Zr, Zc;
  explicit Phases(const Conv2dShape& s)
      : Pm((s.P + s.dh - 1) / s.dh), Qm((s.Q + s.dw - 1) / s.dw), Zr(Pm + s.R - 1),
        Zc(Qm + s.S - 1) {}
  // the undilated convolution of all phases at once: the phase-major sub-images are a batch
  Conv2dShape sub(const Conv2dShape& s) const {
    return Conv2dShape{s.N * s.dh * s.dw, s.C, Zr, Zc, s.K, s.R, s.S, 1, 1, 0, 0, Pm, Qm};
  }
};

// z[al][be] (N, C, Zr, Zc) in Buf::phase_in: column phase be of x rows al - ph + i*dh, as
// phase_split_rows lays out the column phases of a row padded by pw on the left
float* split_input(const float* x, const Conv2dShape& s, const Phases& ph) {
  const int64_t sub_in = s.N * s.C * ph.Zr * ph.Zc;
  float* z = scratch(Buf::phase_in, s.dh * s.dw * sub_in);
  parallel_for(s.N * s.C * s.dh, kCopyCost * s.dh * s.dw * sub_in, [&](int64_t i) {
    const int64_t al = i % s.dh, plane = i / s.dh;
    split_rows(z + al * s.dw * sub_in + plane * ph.Zr * ph.Zc, ph.Zc, sub_in,
               x + plane * s.H * s.W, s.H, s.W, al - s.ph, s.dh, ph.Zr, s.pw, s.dw, ph.Zc);
  });
  return z;
}

}  // namespace

std::string dilated_sub_plan(const Conv2dShape& s) {
  return conv2d_plan(Phases(s).sub(s), ConvDir::forward);
}

// Worth the copies only when the phases go to winograd5: where they would go to winograd3, that
// row runs the dilated layer itself, gathering the phases as it goes.
bool dilated_phases_pays(const Conv2dShape& s) { return dilated_sub_plan(s) == "winograd5"; }

bool dilated_phases(float* y, const float* x, const float* w, const float* b,
                    const Conv2dShape& s) {
  const Phases ph(s);
  const Conv2dShape t = ph.sub(s);
  const int64_t sub_out = s.N * s.K * ph.Pm * ph.Qm;
  float* z = split_input(x, s, ph);
  float* out = scratch(Buf::phase_out, s.dh * s.dw * sub_out);
  forward_planned(out, z, w, b, t);
  // y[n][k][al + a*dh][be + c*dw] = out[al][be][n][k][a][c]: each y row merges its dw phases
  const auto merge = g_kernels->phase_merge_row;
  parallel_for(s.N * s.K, kCopyCost * s.N * s.K * s.P * s.Q, [&](int64_t plane) {
    for (int64_t p = 0; p < s.P; ++p)
      merge(y + (plane * s.P + p) * s.Q,
            out + (p % s.dh) * s.dw * sub_out + (plane * ph.Pm + p / s.dh) * ph.Qm, sub_out, s.dw,
            0, s.Q);
  });
  return true;
}

bool dw_dilated_phases_pays(const Conv2dShape& s) {
  const std::string sub = conv2d_plan(Phases(s).sub(s), ConvDir::weight_grad);
  return sub == "kvec" || sub == "winograd3" || sub == "winograd3_lanes";
}

// dW = the weight gradient of the phases' undilated convolutions as one batch (each phase's
// input sub-image with its dy sub-image, zero past the phase's size).
bool dw_dilated_phases(float* dw, const float* dy, const float* x, const Conv2dShape& s) {
  const Phases ph(s);
  const Conv2dShape t = ph.sub(s);
  const int64_t sub_out = s.N * s.K * ph.Pm * ph.Qm;
  float* z = split_input(x, s, ph);
  // d[al][be][n][k][a][c] = dy[n][k][al + a*dh][be + c*dw] (zero past the output): dy's rows
  // al, al + dh, ... split into their dw column phases
  float* d = scratch(Buf::phase_out, s.dh * s.dw * sub_out);
  parallel_for(s.N * s.K * s.dh, kCopyCost * s.dh * s.dw * sub_out, [&](int64_t i) {
    const int64_t al = i % s.dh, plane = i / s.dh;
    split_rows(d + al * s.dw * sub_out + plane * ph.Pm * ph.Qm, ph.Qm, sub_out,
               dy + plane * s.P * s.Q, s.P, s.Q, al, s.dh, ph.Pm, 0, s.dw, ph.Qm);
  });
  conv2d_backward(nullptr, dw, nullptr, d, z, nullptr, t);
  return true;
}

}  // namespace conv
}  // namespace convkit
