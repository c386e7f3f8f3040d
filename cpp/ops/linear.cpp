// linear (fully connected) on the shared GEMM.
//   y (N,O)  = x (N,I) * W^T (I,O) + b
//   dx (N,I) = dy (N,O) * W (O,I)
//   dW (O,I) = dy^T (O,N) * x (N,I)      reduction over the batch in a fixed order
//   db (O)   = column sums of dy
#include <algorithm>
#include <vector>

#include "convkit/convkit.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {

constexpr int64_t kSmallN = 4;  // rows of x up to which W is read in place (linear_backward_small)

void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N,
                    int64_t I, int64_t O) {
  const KernelTable& ktab = *g_kernels;
  const auto dot = ktab.conv_dw_tile;
  // the 8-lane tiles of AVX2 lose to the GEMM past 64 rows (interleaved A/B at 2 threads,
  // GEMM / tiles: (64, 400) -> 120 1.39, (16, 400) -> 120 3.3; (256, 400) -> 120 0.88,
  // (256, 120) -> 84 0.65); up to kSmallN rows the GEMM would pack all of W to read it once
  // ((1, 25088) -> 4096, VGG's first classifier layer: 51 ms against 18 for PyTorch)
  const bool tiles = (2.0 * N * I * O < 5e7 || N <= kSmallN) && (ktab.lanes >= 16 || N <= 64);
  if (dot && tiles && N > 0 && O > 0 && I > 0) {
    // Small layers: rows of x and of W are both contiguous along I, so each output is a dot
    // product; register tiles of rows of x by rows of W (the dW-tile kernel of conv2d, its
    // first tile shape: 4 x 6 at AVX-512, 4 x 3 at AVX2) read them in place, where the GEMM
    // would spend as long transposing W into panels as multiplying. Tiles are whole outputs:
    // the same bits for any thread count.
    if (N == 1 && O * I <= (int64_t(1) << 16)) {
      // One row of x and W within L2: each W row is read once whatever the tile, so tiles of
      // many W rows by the one x row (the table's widest (kt, 1) shape) load x least often and
      // keep the most sums in flight; the same products in the same order as the general tiles
      // below. (A larger W from L3 or memory went 4x slower this way than by the general tiles'
      // 6 rows: 24 rows 8 KiB apart are more streams than the prefetchers follow; (1, 2048) ->
      // 1000: 0.48 against 0.12 ms on one thread, (1, 400) -> 120: 2.7 against 3.0 us.)
      int K1 = 1;
      for (int i = 0; i < ktab.dw_tile_nshapes; ++i)
        if (ktab.dw_tile_shapes[i][1] == 1) K1 = std::max(K1, ktab.dw_tile_shapes[i][0]);
      const int64_t ot = (O + K1 - 1) / K1;
      parallel_for(ot, 2.0 * I * O, [&](int64_t t) {
        const int64_t o0 = t * K1;
        const int kt = static_cast<int>(std::min<int64_t>(K1, O - o0));
        const int64_t xoff[1] = {0};
        const DwTileArgs a{w + o0 * I, 0, I, 0, x, 0, 0, xoff, 1, 1, I};
        dot(y + o0, 1, a, kt, 1);
        if (b)
          for (int k = 0; k < kt; ++k) y[o0 + k] += b[o0 + k];
      });
      return;
    }
    const int KT = ktab.dw_tile_shapes[0][0], TG = ktab.dw_tile_shapes[0][1];
    const int64_t rt = (N + KT - 1) / KT, ct = (O + TG - 1) / TG;
    const int64_t cper = std::max<int64_t>(1, std::min<int64_t>(ct, 8));  // tiles per item
    const int64_t cb = (ct + cper - 1) / cper;
    parallel_for(rt * cb, 2.0 * N * I * O, [&](int64_t item) {
      const int64_t n0 = item / cb * KT, c0 = item % cb * cper;
      const int kt = static_cast<int>(std::min<int64_t>(KT, N - n0));
      int64_t xoff[8];  // TG <= 7
      for (int64_t ci = c0; ci < std::min(ct, c0 + cper); ++ci) {
        const int64_t o0 = ci * TG;
        const int tg = static_cast<int>(std::min<int64_t>(TG, O - o0));
        for (int t = 0; t < tg; ++t) xoff[t] = (o0 + t) * I;
        const DwTileArgs a{x + n0 * I, 0, I, 0, w, 0, 0, xoff, 1, 1, I};
        dot(y + n0 * O + o0, O, a, kt, tg);
        if (b)
          for (int k = 0; k < kt; ++k)
            for (int t = 0; t < tg; ++t) y[(n0 + k) * O + o0 + t] += b[o0 + t];
      }
    });
    return;
  }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) y[n * O + o] = b ? b[o] : 0.f;
  gemm(N, O, I, MatView{x, I, 1}, MatView{w, 1, I}, y, O, true);
}

// Batches of at most kSmallN rows: the packed GEMM would spend longer packing W (and, for
// dW, x) into panels than multiplying, so both products go to the GEMM's direct micro-kernel,
// which reads the rows of W (dx = dy W) and of x (dW = dy^T x) in place; only dy is packed
// (O x MR floats). Each output is one tile's sum over o or n in order: the same bits for any
// thread count.
static void linear_backward_small(float* dx, float* dw, const float* dy, const float* x,
                                  const float* w, int64_t N, int64_t I, int64_t O) {
  const KernelTable& kt = *g_kernels;
  const int64_t MR = kt.mr, NR = kt.nr, jtiles = (I + NR - 1) / NR;
  std::vector<int64_t> off(static_cast<size_t>(std::max(N, O)));
  for (int64_t k = 0; k < static_cast<int64_t>(off.size()); ++k) off[k] = k * I;
  if (dx) {  // A = dy as O x MR (row n of dy in lane n), B rows = rows of W
    std::vector<float> a(static_cast<size_t>(O * MR), 0.f);
    for (int64_t o = 0; o < O; ++o)
      for (int64_t n = 0; n < N; ++n) a[o * MR + n] = dy[n * O + o];
    parallel_for(jtiles, 2.0 * N * I * O, [&](int64_t jt) {
      const int64_t j0 = jt * NR;
      kt.gemm_direct(O, a.data(), w + j0, off.data(), dx + j0, I, static_cast<int>(N),
                     static_cast<int>(std::min(NR, I - j0)), false, nullptr);
    });
  }
  if (dw) {  // A = dy^T in blocks of MR output rows as N x MR, B rows = rows of x
    const int64_t itiles = (O + MR - 1) / MR;
    std::vector<float> a(static_cast<size_t>(itiles * N * MR), 0.f);
    for (int64_t o = 0; o < O; ++o)
      for (int64_t n = 0; n < N; ++n) a[(o / MR * N + n) * MR + o % MR] = dy[n * O + o];
    parallel_for(itiles * jtiles, 2.0 * N * I * O, [&](int64_t t) {
      const int64_t it = t / jtiles, j0 = t % jtiles * NR, o0 = it * MR;
      kt.gemm_direct(N, a.data() + it * N * MR, x + j0, off.data(), dw + o0 * I + j0, I,
                     static_cast<int>(std::min(MR, O - o0)),
                     static_cast<int>(std::min(NR, I - j0)), false, nullptr);
    });
  }
}

void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                     const float* w, int64_t N, int64_t I, int64_t O) {
  if (N > 0 && N <= std::min<int64_t>(kSmallN, g_kernels->mr)) {
    linear_backward_small(dx, dw, dy, x, w, N, I, O);
  } else {
    if (dx) gemm(N, I, O, MatView{dy, O, 1}, MatView{w, I, 1}, dx, I, false);
    if (dw) gemm(O, I, N, MatView{dy, 1, O}, MatView{x, I, 1}, dw, I, false);
  }
  if (db) {
    parallel_for((O + 255) / 256, 1.0 * N * O, [&](int64_t blk) {
      const int64_t o0 = blk * 256, o1 = std::min(O, o0 + 256);
      for (int64_t o = o0; o < o1; ++o) db[o] = 0.f;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t o = o0; o < o1; ++o) db[o] += dy[n * O + o];
    });
  }
}

}  // namespace convkit
