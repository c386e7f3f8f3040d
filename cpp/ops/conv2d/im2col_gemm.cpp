// The general family: im2col + GEMM, one group at a time, for any groups, dilation, stride and
// padding. The specialised paths cover the common plain shapes faster; this one covers the rest
// (dilated and grouped layers with enough channels per group to fill the GEMM tiles).
#include <algorithm>
#include <cstring>

#include "ops/conv2d/conv2d_internal.h"

namespace convkit {
namespace conv {

// y_n,g (Kg x PQ) = W_g (Kg x CgRS) * col_n,g (CgRS x PQ): col written straight into packed
// NR-column panels, items (image, group, block of positions) whose panels stay in L2 next to the
// packed weights.
bool im2col_gemm_forward(float* y, const float* x, const float* w, const float* b,
                         const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const Conv2dShape gs = group_shape(s);
  const int64_t Cg = gs.C, Kg = gs.K, CgRS = Cg * s.R * s.S, PQ = s.P * s.Q, HW = s.H * s.W;
  const int64_t wstride = round_up(Kg, kt.mr) * CgRS;
  float* apack = scratch(Buf::im2col_weights, s.G * wstride);
  for (int64_t g = 0; g < s.G; ++g)
    pack_weights(apack + g * wstride, MatView{w + g * Kg * CgRS, CgRS, 1}, Kg, CgRS, kt.mr);
  const int64_t bw = block_cols(CgRS * 4, 384 * 1024, PQ, kt.nr);
  const int64_t nblk = (PQ + bw - 1) / bw;
  parallel_for(s.N * s.G * nblk, 2.0 * s.N * s.K * CgRS * PQ, [&](int64_t item) {
    const int64_t n = item / (s.G * nblk), g = item / nblk % s.G;
    const int64_t j0 = (item % nblk) * bw, j1 = std::min(PQ, j0 + bw);
    float* bpack = scratch(Buf::im2col_panels, round_up(j1 - j0, kt.nr) * CgRS);
    im2col_panels(bpack, x + (n * s.C + g * Cg) * HW, gs, j0, j1, kt.nr);
    gemm_packed(Kg, j1 - j0, CgRS, apack + g * wstride, bpack, y + (n * s.K + g * Kg) * PQ + j0,
                PQ, false, b ? b + g * Kg : nullptr);
  });
  return true;
}

// dW_g (Kg x CgRS) = sum over images of dy_n,g (Kg x PQ) * col_n,g^T, with col built block by
// block of positions. Items are (group, fixed chunk of images); chunk partial sums are added in
// chunk order, so the bits depend on the shape only.
bool dw_im2col_gemm(float* dw, const float* dy, const float* x, const Conv2dShape& s) {
  const Conv2dShape gs = group_shape(s);
  const int64_t Cg = gs.C, Kg = gs.K, CgRS = Cg * s.R * s.S, PQ = s.P * s.Q, HW = s.H * s.W;
  const int64_t total = s.K * CgRS;
  const int64_t nchunk = std::min<int64_t>(s.N, 8), per = (s.N + nchunk - 1) / nchunk;
  const int64_t nch = (s.N + per - 1) / per;
  float* partial = nch > 1 ? scratch(Buf::dw_partials, nch * total) : nullptr;
  const int64_t bw = std::min<int64_t>(PQ, std::max<int64_t>(16, (128 * 1024) / (4 * CgRS)));
  parallel_for(nch * s.G, 2.0 * s.N * s.K * CgRS * PQ, [&](int64_t item) {
    const int64_t ch = item / s.G, g = item % s.G;
    float* out = (nch > 1 ? partial + ch * total : dw) + g * Kg * CgRS;
    float* col = scratch(Buf::dw_gemm_b, CgRS * bw);
    const int64_t n0 = ch * per, n1 = std::min(s.N, n0 + per);
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t j0 = 0; j0 < PQ; j0 += bw) {
        const int64_t j1 = std::min(PQ, j0 + bw), ld = j1 - j0;
        im2col(col, ld, x + (n * s.C + g * Cg) * HW, gs, j0, j1);
        gemm_st(Kg, CgRS, ld, MatView{dy + (n * s.K + g * Kg) * PQ + j0, PQ, 1},
                MatView{col, 1, ld}, out, CgRS, n > n0 || j0 > 0);
      }
  });
  if (nch > 1) reduce_in_order(dw, partial, nch, total);
  return true;
}

// A 1x1 stride-1 layer over few positions (a deep stage at batch 1): per image y^T (PQ x K) =
// x^T (PQ x C) W^T, the shared GEMM with the positions as its rows (linear's orientation), x and
// the result transposed around it. With the channels on the lanes instead, kvec re-lays the
// weights (4 MB for 2048 x 512) on every call (forced, 2 threads: (1, 2048, 7, 7) -> 512 0.66 ms
// against kvec's 1.00; level at 196 positions).
// wt: the GEMM's right operand, wt(c, k) the weight of input channel c in output channel k.
void gemm1x1(float* y, const float* x, MatView wt, const float* b, const Conv2dShape& s) {
  const int64_t PQ = s.P * s.Q;
  // xt's rows 16 floats longer than C: 2048 floats (8 KiB) apart, the transpose's stores all
  // fell on the same L1 sets (a quarter of the layer)
  const int64_t ldx = round_up(s.C, 16) + 16, ldy = round_up(s.K, 16) + 16;
  float* xt = scratch(Buf::conv1x1_x, PQ * ldx);
  float* yt = scratch(Buf::conv1x1_y, PQ * ldy);
  for (int64_t n = 0; n < s.N; ++n) {
    transpose_into(xt, ldx, x + n * s.C * PQ, PQ, s.C, PQ);
    for (int64_t q = 0; q < PQ; ++q)
      for (int64_t k = 0; k < s.K; ++k) yt[q * ldy + k] = b ? b[k] : 0.f;
    gemm(PQ, s.K, s.C, MatView{xt, ldx, 1}, wt, yt, ldy, true);
    transpose_into(y + n * s.K * PQ, PQ, yt, ldy, PQ, s.K);
  }
}

bool gemm1x1_forward(float* y, const float* x, const float* w, const float* b,
                     const Conv2dShape& s) {
  gemm1x1(y, x, MatView{w, 1, s.C}, b, s);  // (packed by transposing 16 x 16 blocks)
  return true;
}

// 1x1 layers without padding (strided; at AVX2 stride 1 too) as one GEMM over the whole batch:
// Y (K x N P Q) = W (K x C) X (C x N P Q), the batch's output positions as the columns (image
// n's at n P Q ..). W is packed once, to full depth; items are blocks of 4 NR columns by all of
// Y's rows, each gathering its positions of X a kc block at a time (one run of an output row at
// a time) and summing into a buffer of its own, whose rows are then copied out to the images (a
// tile's columns may lie in two images). Each output is summed in kc blocks fixed by C.
bool gemm_batch_forward(float* y, const float* x, const float* w, const float* b,
                        const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const int MR = kt.mr, NR = kt.nr;
  const int64_t PQ = s.P * s.Q, HW = s.H * s.W, D = s.N * PQ;
  // Blocks of about 4 NR-wide tiles, the tiles spread evenly over them (the last, partial tile
  // in a block of one tile more), as many blocks as threads or a multiple: (8, 512, 7, 7) ->
  // 2048, 13 tiles, went in blocks of 4, 4, 4 and 1/4 tiles, one thread doing 8 and the other
  // 4.25. (Which thread sums a column does not change its sum: the same bits.)
  const int64_t nt = (D + NR - 1) / NR, threads = get_num_threads();
  int64_t nb = (nt + 3) / 4;
  if (nb < 4 * threads) nb = std::min(nt, (nb + threads - 1) / threads * threads);
  const int64_t bw = (nt + nb - 1) / nb * NR;  // the widest block
  const int64_t rt = (s.K + MR - 1) / MR, Kp = rt * MR, kcmax = gemm_kc(s.C);
  float* apack = scratch(Buf::im2col_weights, Kp * s.C);
  parallel_for(rt, 1.0 * s.K * s.C, [&](int64_t p) {
    pack_a(apack + p * MR * s.C, MatView{w, s.C, 1}, p * MR, std::min<int64_t>(MR, s.K - p * MR),
           0, s.C, MR);
  });
  parallel_for(nb, 2.0 * s.K * s.C * D, [&](int64_t item) {
    const int64_t j0 = item * nt / nb * NR, n = std::min(D, (item + 1) * nt / nb * NR) - j0;
    float* bpack = scratch(Buf::im2col_panels, kcmax * bw + Kp * bw);
    float* out = bpack + kcmax * bw;  // the block's rows, bw floats apart
    for (int64_t pc = 0; pc < s.C; pc += kcmax) {
      const int64_t kc = std::min(kcmax, s.C - pc);
      for (int64_t t = j0; t < j0 + n;) {  // runs of positions within one output row
        const int64_t img = t / PQ, p = t % PQ / s.Q, q = t % s.Q;
        const int64_t len = std::min(s.Q - q, j0 + n - t);
        const float* src = x + (img * s.C + pc) * HW + p * s.sh * s.W + q * s.sw;
        for (int64_t jj = t - j0; jj < t - j0 + len; ++jj, src += s.sw) {
          float* dst = bpack + jj / NR * NR * kc + jj % NR;
          for (int64_t c = 0; c < kc; ++c) dst[c * NR] = src[c * HW];
        }
        t += len;
      }
      if (n % NR)  // zeros in the last panel's unused columns (blocks are whole tiles but the last)
        for (int64_t c = 0; c < kc; ++c)
          std::fill(bpack + n / NR * NR * kc + c * NR + n % NR,
                    bpack + n / NR * NR * kc + (c + 1) * NR, 0.f);
      for (int64_t ic = 0; ic < s.K; ic += 16 * MR)  // 16 A panels at a time stay in L2
        for (int64_t jr = 0; jr < n; jr += NR)
          for (int64_t ir = ic; ir < std::min(s.K, ic + 16 * MR); ir += MR)
            kt.gemm(kc, apack + ir * s.C + pc * MR, bpack + jr * kc, out + ir * bw + jr, bw,
                    static_cast<int>(std::min<int64_t>(MR, s.K - ir)),
                    static_cast<int>(std::min<int64_t>(NR, n - jr)), pc > 0,
                    pc == 0 && b ? b + ir : nullptr);
    }
    for (int64_t t = j0; t < j0 + n;) {  // the rows out, a run per image
      const int64_t img = t / PQ, pq = t % PQ, len = std::min(PQ - pq, j0 + n - t);
      for (int64_t k = 0; k < s.K; ++k)
        std::memcpy(y + (img * s.K + k) * PQ + pq, out + k * bw + (t - j0), sizeof(float) * len);
      t += len;
    }
  });
  return true;
}

}  // namespace conv
}  // namespace convkit
