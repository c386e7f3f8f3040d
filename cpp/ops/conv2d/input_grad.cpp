// Input-gradient paths of the plain (ungrouped, undilated) convolution:
//   dx_transposed_conv  stride 1, "same"-like padding: dx is a forward convolution of dy
//   dx_rows             few input channels: rows of dx from dy, output columns in the lanes
//   dx_lanes            batches, few input channels: 16 images in the vector lanes
// and the general dx_gemm_col2im (any groups, dilation and stride): gcol = W^T dy, scattered
// back by col2im.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/conv2d/conv2d_internal.h"

namespace convkit {
namespace conv {

// Stride 1: dx is the stride-1 convolution of dy, padded by ((R-1)dh - ph, (S-1)dw - pw), with
// the weights flipped in space and transposed within each group to (C, K/G, R, S), at the same
// dilation and groups.
bool dx_transposed_conv(float* dx, const float* dy, const float* w, const Conv2dShape& s) {
  const int64_t RS = s.R * s.S, Cg = group_in(s), Kg = group_out(s);
  Conv2dShape t{s.N, s.K, s.P, s.Q, s.C, s.R, s.S, 1, 1, (s.R - 1) * s.dh - s.ph,
                (s.S - 1) * s.dw - s.pw, 0, 0, s.dh, s.dw, s.G};
  conv2d_out_size(t);
  // Where kvec runs it, kvec lays the weights out flipped straight from w: the flipped copy
  // below and kvec's own layout were two passes over them (9.4 MB at 512 x 512 x 3 x 3, and
  // (1, 512, 7, 7)'s input gradient took 3.4-3.8 ms against its forward's 1.5, 2 threads)
  const std::string plan = s.G == 1 ? conv2d_plan(t, ConvDir::forward) : "";
  if (plan == "kvec" && kvec_forward_flipped(dx, dy, w, t)) return true;
  // A 1x1 layer's weights, as they are, are the right operand of gemm_1x1's GEMM for dx, packed
  // by plain copies: the transpose below and the GEMM's transposing pack were two passes over
  // them ((1, 2048, 7, 7) -> 512: 4 MB)
  if (plan == "gemm_1x1") {
    gemm1x1(dx, dy, MatView{w, s.C, 1}, nullptr, t);
    return true;
  }
  float* wf = scratch(Buf::dx_weights, s.C * Kg * RS);
  // By blocks of 16 input channels of a group, each output channel's 16 x RS weights read in one
  // run; 1x1 kernels by a blocked transpose (element by element, a (2048, 512, 1, 1) weight took
  // half of its layer's input gradient at batch 1, and a (512, 512, 3, 3) one a fifth by output
  // channel: (1, 512, 7, 7) -> 2048 dx 3.3-4.9 -> 1.75 ms, 2 threads; staging 16 x 16 blocks in
  // a buffer measured no faster for 3x3).
  const int64_t cblk = (Cg + 15) / 16;
  parallel_for(s.G * cblk, kCopyCost * Kg * RS * s.C, [&](int64_t item) {
    const int64_t g = item / cblk, c0 = item % cblk * 16, nc = std::min<int64_t>(16, Cg - c0);
    const float* wg = w + (g * Kg * Cg + c0) * RS;  // w[g * Kg + kl][c0 + cl][i]
    float* fg = wf + (g * Cg + c0) * Kg * RS;       // wf[g * Cg + c0 + cl][kl][RS - 1 - i]
    if (RS == 1) {
      transpose_into(fg, Kg, wg, Cg, Kg, nc);
      return;
    }
    for (int64_t kl = 0; kl < Kg; ++kl)
      for (int64_t cl = 0; cl < nc; ++cl)
        for (int64_t i = 0; i < RS; ++i)
          fg[(cl * Kg + kl) * RS + RS - 1 - i] = wg[(kl * Cg + cl) * RS + i];
  });
  forward_planned(dx, dy, wf, nullptr, t);
  return true;
}

// Few input channels, stride 1: for each (image, channel, block of 4 rows), the rows of dx
// straight from dy (KernelTable::conv_dx_rows).
bool dx_rows(float* dx, const float* dy, const float* w, const Conv2dShape& s) {
  const int64_t RS = s.R * s.S, KPQ = s.K * s.P * s.Q;
  float* wt = scratch(Buf::dx_weights, s.C * s.K * RS);  // per input channel: (k, r, t)
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t k = 0; k < s.K; ++k)
      std::memcpy(wt + (c * s.K + k) * RS, w + (k * s.C + c) * RS, sizeof(float) * RS);
  const DxRowsArgs a{s.K, s.R, s.S, s.P, s.Q, s.W, s.ph, s.pw};
  const int64_t nblk = (s.H + 3) / 4;
  const auto kern = g_kernels->conv_dx_rows;
  parallel_for(s.N * s.C * nblk, 2.0 * s.N * KPQ * s.C * RS, [&](int64_t item) {
    const int64_t n = item / (s.C * nblk), c = item / nblk % s.C, h0 = item % nblk * 4;
    kern(dx + ((n * s.C + c) * s.H + h0) * s.W, dy + n * KPQ, wt + c * s.K * RS, h0,
         static_cast<int>(std::min<int64_t>(4, s.H - h0)), a);
  });
  return true;
}

// Batches of images, stride 1, few input channels: 16 images in the vector lanes, items are
// groups of 16 images (KernelTable::conv_dx_lanes).
bool dx_lanes(float* dx, const float* dy, const float* w, const Conv2dShape& s) {
  const DxLanesArgs a = lanes_args(dx, dy, w, s);
  const auto kern = g_kernels->conv_dx_lanes;
  parallel_for((s.N + 15) / 16, 2.0 * s.N * s.K * s.C * s.R * s.S * s.P * s.Q, [&](int64_t g) {
    DxLanesArgs ag = a;
    ag.buf = scratch(Buf::dx_lanes_buf, dx_lanes_buf_floats(a));
    kern(ag, g * 16);
  });
  return true;
}

// gcol = W_g^T * dy_n,g (rows (c, r, t) of the group, positions as columns), scattered back into
// dx. Items are (image, group, block of input channels); the weight rows of each block are packed
// once. dy's rows are read in place by the direct micro-kernel, and a gcol block (rows x bw) stays
// in L2 while it is scattered back.
bool dx_gemm_col2im(float* dx, const float* dy, const float* w, const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const Conv2dShape gs = group_shape(s);
  const int64_t PQ = s.P * s.Q, HW = s.H * s.W, RS = s.R * s.S;
  const int64_t Cg = gs.C, Kg = gs.K, CgRS = Cg * RS;
  // Channel blocks of about 64 rows of W^T (fewer when the images and groups alone can't feed
  // the threads), each packed once: panels never straddle two blocks.
  const int64_t nt = get_num_threads();
  const int64_t per0 = std::max<int64_t>(1, (64 + RS - 1) / RS);
  const int64_t want = (nt + s.N * s.G - 1) / (s.N * s.G);
  const int64_t per = std::min(per0, std::max<int64_t>(1, (Cg + want - 1) / want));
  const int64_t nblk = (Cg + per - 1) / per;
  const int64_t blk_stride = round_up(per * RS, kt.mr) * Kg;
  float* apack = scratch(Buf::dx_weights_packed, s.G * nblk * blk_stride);
  parallel_for(s.G * nblk, kCopyCost * s.K * CgRS, [&](int64_t i) {
    const int64_t g = i / nblk, c0 = i % nblk * per, rows = (std::min(Cg, c0 + per) - c0) * RS;
    // W_g^T rows [c0*RS, c0*RS + rows): element (m, k) at w[(g*Kg + k)*CgRS + c0*RS + m]
    pack_a(apack + i * blk_stride, MatView{w + g * Kg * CgRS + c0 * RS, 1, CgRS}, 0, rows, 0, Kg,
           kt.mr);
  });
  thread_local std::vector<int64_t> koff;
  koff.resize(static_cast<size_t>(Kg));
  for (int64_t k = 0; k < Kg; ++k) koff[k] = k * PQ;
  const int64_t* koffp = koff.data();
  const int64_t kcmax = gemm_kc(Kg);
  // Column blocks sized by per0, not per: a dx value whose taps fall in two blocks is summed
  // block by block, so the blocks must not depend on the thread count (sized by per, a batch-1
  // (1, 3, 32, 57) 5x5 layer's dx differed between 1 and 2 threads in its last bits).
  const int64_t bw = block_cols(4 * per0 * RS, 256 * 1024, PQ, kt.nr);
  // The register col2im of a whole plane knows no dilation: dilated shapes add block by block.
  const bool whole = bw >= PQ && s.dh == 1 && s.dw == 1;
  parallel_for(s.N * s.G * nblk, 2.0 * s.N * s.K * CgRS * PQ, [&](int64_t item) {
    const int64_t n = item / (s.G * nblk), g = item / nblk % s.G, bi = item % nblk;
    const int64_t c0 = bi * per, nch = std::min(Cg, c0 + per) - c0, rows = nch * RS;
    float* dxn = dx + (n * s.C + g * Cg + c0) * HW;
    const float* dyn = dy + (n * s.K + g * Kg) * PQ;
    if (!whole) std::fill(dxn, dxn + nch * HW, 0.f);  // col2im by blocks adds into dx
    float* gcol = scratch(Buf::dx_cols, rows * std::min(bw, PQ));
    const float* ap = apack + (g * nblk + bi) * blk_stride;
    for (int64_t j0 = 0; j0 < PQ; j0 += bw) {
      const int64_t j1 = std::min(PQ, j0 + bw), ld = j1 - j0;
      for (int64_t pc = 0; pc < Kg; pc += kcmax) {
        const int64_t kc = std::min(kcmax, Kg - pc);
        for (int64_t jr = 0; jr < ld; jr += kt.nr)
          for (int64_t ir = 0; ir < rows; ir += kt.mr)
            kt.gemm_direct(kc, ap + ir * Kg + pc * kt.mr, dyn + j0 + jr, koffp + pc,
                           gcol + ir * ld + jr, ld,
                           static_cast<int>(std::min<int64_t>(kt.mr, rows - ir)),
                           static_cast<int>(std::min<int64_t>(kt.nr, ld - jr)), pc > 0, nullptr);
      }
      if (!whole) {
        col2im(dxn, gcol, ld, gs, nch, j0, j1);
      } else {  // the whole image: each dx row written once, its taps summed in registers
        const Col2imArgs ca{s.H, s.W, s.P, s.Q, s.R, s.S, s.ph, s.pw, s.sh, s.sw};
        for (int64_t c = 0; c < nch; ++c) kt.col2im_plane(dxn + c * HW, gcol + c * RS * ld, ld, ca);
      }
    }
  });
  return true;
}

}  // namespace conv
}  // namespace convkit
