// Weight-gradient paths of the plain (ungrouped, undilated) convolution:
//   dw_kvec   narrow outputs: 16 output channels in the lanes
//   dw_dot    dot products of dy rows with input rows in register tiles
//   dw_gemm   ISAs without those kernels: dW = sum_n dy_n * col_n^T, col_n^T packed
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/conv2d/conv2d_internal.h"

namespace convkit {
namespace conv {
// Weight gradient as dot products of dy rows with input rows (KernelTable::conv_dw_tile), in
// tiles of kt output channels x tg taps (c, r, t) taken in weight order. The input rows are read
// in place from the zero-padded image (unit stride) or from a copy split into row and column
// phases, so that a tap's columns step by 1 and its rows by Wq. When rows are a vector or more
// and Wq is below Q rounded up to a vector (on narrower rows the long runs measured slower),
// each image's positions are one run over the wide grid p * Wq + q, with dy copied into rows
// of Wq (zeros in the Wq - Q extra columns): fewer partial vectors. The extra columns multiply
// input values by zero; should the result come out non-finite (an Inf in x), it is recomputed
// without them, so that Inf and NaN spread exactly as in the definition. Images go in fixed
// chunks whose dy rows fit in L2 (by shape only); each item reduces its chunk in one fixed
// order, chunks are added in order.
bool dw_dot(float* dw, const float* dy, const float* x, const Conv2dShape& s) {
  const int64_t PQ = s.P * s.Q, CRS = s.C * s.R * s.S, KPQ = s.K * PQ;
  const int64_t Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw;
  thread_local std::vector<int64_t> off;
  off.resize(static_cast<size_t>(CRS));
  // Input rows: the padded image at unit stride, else its (row, column) phases per channel
  // (sh * sw planes of Lr rows x Wq: plane (fr, fc), row l holds columns fc, fc + sw, ... of
  // padded row l * sh + fr). Either way output row p of tap (r, t) reads row p + r / sh of its
  // plane from column t / sw on, so rows step by Wq.
  const int64_t Wq = (Wp + s.sw - 1) / s.sw, Lr = (Hp + s.sh - 1) / s.sh;
  const int64_t fplane = Lr * Wq, cplane = s.sh * s.sw * fplane;
  const float* xb;
  if (s.sh == 1 && s.sw == 1) {
    xb = padded_input(x, s);
  } else {
    float* buf = scratch(Buf::padded_input, s.N * s.C * cplane);
    parallel_for(s.N * s.C, kCopyCost * s.N * s.C * cplane, [&](int64_t i) {
      for (int64_t fr = 0; fr < s.sh; ++fr)  // padded rows fr + l * sh (past Hp: zeros)
        split_rows(buf + i * cplane + fr * s.sw * fplane, Wq, fplane, x + i * s.H * s.W, s.H,
                   s.W, fr - s.ph, s.sh, Lr, s.pw, s.sw, Wq);
    });
    xb = buf;
  }
  const int64_t x_ns = s.C * cplane, x_rs = Wq;
  for (int64_t k = 0; k < CRS; ++k) {
    const int64_t r = k / s.S % s.R * s.dh, t = k % s.S * s.dw;  // the tap's place (dilated)
    off[k] = (k / (s.R * s.S)) * cplane + ((r % s.sh) * s.sw + t % s.sw) * fplane +
             (r / s.sh) * Wq + t / s.sw;
  }
  // Tile shape: the fewest computed elements (padding of the last tiles included), each
  // weighted by the loads it costs: kt + tg vectors per kt * tg multiply-adds.
  const KernelTable& ktab = *g_kernels;
  int ktile = ktab.dw_tile_shapes[0][0], tg = ktab.dw_tile_shapes[0][1];
  double best = -1.0;
  for (int i = 0; i < ktab.dw_tile_nshapes; ++i) {
    const int* sh = ktab.dw_tile_shapes[i];
    const double loads = double(sh[0] + sh[1]) / (sh[0] * sh[1]);
    const double cost = double(round_up(s.K, sh[0]) * round_up(CRS, sh[1])) * (1.0 + 0.5 * loads);
    if (best < 0 || cost < best) best = cost, ktile = sh[0], tg = sh[1];
  }
  const int64_t ktiles = (s.K + ktile - 1) / ktile, groups = (CRS + tg - 1) / tg;
  const auto kern = ktab.conv_dw_tile;
  const int64_t* offp = off.data();  // this thread's: workers must not name the thread_local

  auto run = [&](bool wide) {
    DwTileArgs a{dy, KPQ, PQ, s.Q, xb, x_ns, x_rs, nullptr, s.N, s.P, s.Q};
    if (wide) {  // one run of positions per image over the wide grid
      a.P = 1;
      a.Q = (s.P - 1) * Wq + s.Q;
      if (Wq != s.Q) {  // planes a whole number of vectors apart: aligned dy loads
        const int64_t dplane = round_up(s.P * Wq, 16);
        float* dyw = scratch(Buf::dw_dy, s.N * s.K * dplane);
        parallel_for(s.N * s.K, kCopyCost * s.N * s.K * dplane, [&](int64_t i) {
          for (int64_t p = 0; p < s.P; ++p) {
            float* d = dyw + i * dplane + p * Wq;
            std::memcpy(d, dy + i * PQ + p * s.Q, sizeof(float) * s.Q);
            std::fill(d + s.Q, d + Wq, 0.f);
          }
        });
        a.dy = dyw;
        a.dy_ns = s.K * dplane;
        a.dy_ks = dplane;
      }
    }
    const int64_t nper = std::max<int64_t>(1, (256 * 1024) / (4 * ktile * a.dy_ks));
    const int64_t nchunks = (s.N + nper - 1) / nper;
    // per-chunk dW (items write every entry, so no zeroing)
    float* partial = nchunks > 1 ? scratch(Buf::dw_partials, nchunks * s.K * CRS) : nullptr;
    // An item takes a run of tiles along a row of dW, about 32 columns (items on different
    // threads then rarely write to the same cache line), fewer when the threads need more
    // items. Which item computes a tile does not change its bits.
    const int64_t want = (4 * get_num_threads() + nchunks * ktiles - 1) / (nchunks * ktiles);
    const int64_t gper = std::max<int64_t>(
        1, std::min<int64_t>({groups, (32 + tg - 1) / tg, groups / std::max<int64_t>(1, want)}));
    const int64_t gblocks = (groups + gper - 1) / gper, per_chunk = ktiles * gblocks;
    parallel_for(nchunks * per_chunk, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
      const int64_t ch = item / per_chunk, gb = item % gblocks, kti = item % per_chunk / gblocks;
      const int64_t k0 = kti * ktile, n0 = ch * nper;
      DwTileArgs t = a;
      t.dy = a.dy + n0 * a.dy_ns + k0 * a.dy_ks;
      t.x = xb + n0 * x_ns;
      t.N = std::min(nper, s.N - n0);
      float* out = (nchunks > 1 ? partial + ch * s.K * CRS : dw) + k0 * CRS;
      for (int64_t g = gb * gper; g < std::min(groups, (gb + 1) * gper); ++g) {
        const int64_t c0 = g * tg;
        t.xoff = offp + c0;
        kern(out + c0, CRS, t, static_cast<int>(std::min<int64_t>(ktile, s.K - k0)),
             static_cast<int>(std::min<int64_t>(tg, CRS - c0)));
      }
    });
    if (nchunks > 1) reduce_in_order(dw, partial, nchunks, s.K * CRS);
  };
  const bool wide = Wq == s.Q || (s.Q >= 16 && Wq < round_up(s.Q, 16));
  run(wide);
  if (wide && Wq != s.Q && !std::all_of(dw, dw + s.K * CRS, [](float v) { return std::isfinite(v); }))
    run(false);
  return true;
}

// Weight gradient with 16 output channels in the lanes (KernelTable::conv_dw_kvec), any stride
// (the planner's kvec row says where it pays): dy transposed to channels-last blocks of 16,
// tiles of up to 28 taps, images in 8 fixed chunks (by N only) reduced in order.
bool dw_kvec(float* dw, const float* dy, const float* x, const Conv2dShape& s) {
  const int64_t PQ = s.P * s.Q, CRS = s.C * s.R * s.S, KPQ = s.K * PQ;
  const int64_t Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw, plane = Hp * Wp;
  const float* xb = padded_input(x, s);
  thread_local std::vector<int64_t> off;
  off.resize(static_cast<size_t>(CRS));
  for (int64_t c = 0, k = 0; c < s.C; ++c)
    for (int64_t r = 0; r < s.R; ++r)
      for (int64_t t = 0; t < s.S; ++t) off[k++] = c * plane + r * Wp + t;
  const int64_t* offp = off.data();
  const int64_t kblocks = (s.K + 15) / 16;
  float* dyT = scratch(Buf::dw_dy, s.N * kblocks * PQ * 16);  // [kb][n][position][16]
  parallel_for(s.N * kblocks, 4 * kCopyCost * s.N * kblocks * PQ, [&](int64_t i) {
    const int64_t kb = i / s.N, n = i % s.N;
    float* d = dyT + i * PQ * 16;
    const int nk = static_cast<int>(std::min<int64_t>(16, s.K - kb * 16));
    g_kernels->rows_to_lanes16(d, dy + n * KPQ + kb * 16 * PQ, PQ, nk, PQ);
  });
  // tiles of whole kernel rows, up to 28 taps, as even as they come
  const int64_t rows = s.C * s.R, gmax = 28 / s.S, ntiles = (rows + gmax - 1) / gmax;
  const int64_t tsize = (rows + ntiles - 1) / ntiles * s.S;
  const int64_t nchunks = std::min<int64_t>(s.N, 8), nper = (s.N + nchunks - 1) / nchunks;
  const int64_t nch = (s.N + nper - 1) / nper;
  // per-chunk dW (items write every entry, so no zeroing)
  float* partial = nch > 1 ? scratch(Buf::dw_partials, nch * s.K * CRS) : nullptr;
  const auto kern = g_kernels->conv_dw_kvec;
  const int64_t per_chunk = kblocks * ntiles;
  parallel_for(nch * per_chunk, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t item) {
    const int64_t ch = item / per_chunk, kb = item % per_chunk / ntiles, ti = item % ntiles;
    const int64_t n0 = ch * nper, c0 = ti * tsize, k0 = kb * 16;
    float* out = (nch > 1 ? partial + ch * s.K * CRS : dw) + k0 * CRS + c0;
    kern(out, CRS, dyT + (kb * s.N + n0) * PQ * 16, xb + n0 * s.C * plane, s.C * plane,
         s.sh * Wp, s.sw, offp + c0, static_cast<int>(s.S),
         static_cast<int>(std::min(tsize, CRS - c0)),
         static_cast<int>(std::min<int64_t>(16, s.K - k0)), std::min(nper, s.N - n0), s.P, s.Q);
  });
  if (nch > 1) reduce_in_order(dw, partial, nch, s.K * CRS);
  return true;
}

// Images per chunk of a weight gradient's partial sums, by N only: chunks of 4+ images where
// the batch allows (each chunk's dW is a full partial to write and add up: with one image per
// chunk, a transposed convolution's batch of 16 spent more time there than in its GEMM), but
// at least 2 chunks so that 2 threads share small batches, and at most 16.
static int64_t chunk_images(int64_t N) {
  const int64_t nchunk = std::min<int64_t>(N, std::max<int64_t>(2, std::min<int64_t>(16, N / 4)));
  return nchunk > 0 ? (N + nchunk - 1) / nchunk : 1;
}

// dW = dY col^T as one GEMM over the whole batch: dY (K x N PQ, image n's positions at depth
// n PQ ..) packed once to full depth, blocks of dW's tiles as the items, each packing its own
// columns of col^T a kc block at a time (an image's run of positions per pack_colT). Every
// weight is summed over the batch's positions in one order (kc blocks by shape), whatever the
// blocking or the threads, and no partial dW is written or added up: for weights larger than
// a chunk's inputs those partials cost more than the products (see dw_gemm).
static void dw_gemm_batch(float* dw, const float* dy, const float* xp, const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const int MR = kt.mr, NR = kt.nr;
  const int64_t PQ = s.P * s.Q, CRS = s.C * s.R * s.S, KPQ = s.K * PQ, D = s.N * PQ;
  const int64_t plane = (s.H + 2 * s.ph) * (s.W + 2 * s.pw);
  const int64_t rt = (s.K + MR - 1) / MR, ct = (CRS + NR - 1) / NR, kcmax = gemm_kc(D);
  float* apack = scratch(Buf::dw_gemm_a, rt * MR * D);
  parallel_for(rt * s.N, 1.0 * s.K * D, [&](int64_t i) {  // (panel, image): a run of depth
    const int64_t p = i / s.N, n = i % s.N;
    pack_a(apack + p * MR * D + n * PQ * MR, MatView{dy + n * KPQ, PQ, 1}, p * MR,
           std::min<int64_t>(MR, s.K - p * MR), 0, PQ, MR);
  });
  // columns split first (the row blocks share the packed dY), row blocks until 2 per thread
  const int64_t nt = get_num_threads();
  int64_t cb = std::min<int64_t>(ct, 2 * nt), rb = 1;
  while (cb * rb < 2 * nt && rb < rt) ++rb;
  const int64_t bw = (ct + cb - 1) / cb * NR, bh = (rt + rb - 1) / rb * MR;
  cb = (CRS + bw - 1) / bw;
  rb = (s.K + bh - 1) / bh;
  constexpr int64_t kMc = 16;  // A panels a pass over the block's columns: 16 MR rows in L2
  parallel_for(cb * rb, 2.0 * s.K * CRS * D, [&](int64_t item) {
    const int64_t i0 = item / cb * bh, j0 = item % cb * bw;
    const int64_t m = std::min(bh, s.K - i0), n = std::min(bw, CRS - j0);
    float* bpack = scratch(Buf::dw_gemm_b, kcmax * round_up(n, NR));
    for (int64_t pc = 0; pc < D; pc += kcmax) {
      const int64_t kc = std::min(kcmax, D - pc);
      for (int64_t t = pc; t < pc + kc;) {  // the block's positions, an image's run at a time
        const int64_t img = t / PQ, q0 = t - img * PQ, len = std::min(PQ - q0, pc + kc - t);
        pack_colT(bpack + (t - pc) * NR, xp + img * s.C * plane, s, q0, len, j0, n, NR, kc);
        t += len;
      }
      for (int64_t ic = 0; ic < m; ic += kMc * MR)
        for (int64_t jr = 0; jr < n; jr += NR)
          for (int64_t ir = ic; ir < std::min(m, ic + kMc * MR); ir += MR) {
            const int nr = static_cast<int>(std::min<int64_t>(NR, n - jr));
            float* c = dw + (i0 + ir) * CRS + j0 + jr;
            if (ir + MR < m) prefetch_tile(c + MR * CRS, CRS, MR, nr);
            kt.gemm(kc, apack + (i0 + ir) * D + pc * MR, bpack + jr * kc, c, CRS,
                    static_cast<int>(std::min<int64_t>(MR, m - ir)), nr, pc > 0, nullptr);
          }
    }
  });
}

// Fixed chunks of images (depending on N only); each chunk's partial dW is reduced in order.
// Where a chunk's partial dW (K CRS floats to write and add up) outweighs the chunk's inputs
// ((K + CRS) floats a position), and dW has 8+ tiles to share out, the whole batch goes as one
// GEMM instead (dw_gemm_batch): ResNet-50's 1x1 layers, e.g. (8, 512, 7, 7) -> 2048, and
// deep layers at batch 1 (one chunk: one thread).
bool dw_gemm(float* dw, const float* dy, const float* x, const Conv2dShape& s) {
  const KernelTable& kt = *g_kernels;
  const int64_t PQ = s.P * s.Q, CRS = s.C * s.R * s.S, KPQ = s.K * PQ;
  const int64_t per = chunk_images(s.N), nch = (s.N + per - 1) / per;
  if (s.K * CRS >= (s.K + CRS) * per * PQ &&
      (s.K + kt.mr - 1) / kt.mr * ((CRS + kt.nr - 1) / kt.nr) >= 8) {
    dw_gemm_batch(dw, dy, padded_input(x, s), s);
    return true;
  }
  // per-chunk dW (items write every entry, so no zeroing)
  float* partial = nch > 1 ? scratch(Buf::dw_partials, nch * s.K * CRS) : nullptr;
  const float* xp = padded_input(x, s);
  const int64_t plane = (s.H + 2 * s.ph) * (s.W + 2 * s.pw);
  const int64_t kcmax = gemm_kc(PQ);
  const int64_t nc_max = 64 * kt.nr;
  parallel_for(nch, 2.0 * s.N * s.K * CRS * PQ, [&](int64_t ci) {
    float* out = nch > 1 ? partial + ci * s.K * CRS : dw;
    float* apack = scratch(Buf::dw_gemm_a, round_up(s.K, kt.mr) * kcmax);
    float* bpack = scratch(Buf::dw_gemm_b, std::min(round_up(CRS, kt.nr), nc_max) * kcmax);
    const int64_t n0 = ci * per, n1 = std::min(s.N, n0 + per);
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t pc = 0; pc < PQ; pc += kcmax) {
        const int64_t kc = std::min(kcmax, PQ - pc);
        pack_a(apack, MatView{dy + n * KPQ, PQ, 1}, 0, s.K, pc, kc, kt.mr);
        for (int64_t jc = 0; jc < CRS; jc += nc_max) {
          const int64_t nc = std::min(nc_max, CRS - jc);
          pack_colT(bpack, xp + n * s.C * plane, s, pc, kc, jc, nc, kt.nr);
          for (int64_t jr = 0; jr < nc; jr += kt.nr)
            for (int64_t ir = 0; ir < s.K; ir += kt.mr)
              kt.gemm(kc, apack + ir * kc, bpack + jr * kc, out + ir * CRS + jc + jr, CRS,
                      static_cast<int>(std::min<int64_t>(kt.mr, s.K - ir)),
                      static_cast<int>(std::min<int64_t>(kt.nr, nc - jr)), n > n0 || pc > 0,
                      nullptr);
        }
      }
  });
  if (nch > 1) reduce_in_order(dw, partial, nch, s.K * CRS);
  return true;
}

}  // namespace conv

// The weight gradient through a 2x2 max pool from the pool's gradient alone
// (KernelTable::dw_maxpool2x2_image): images in fixed chunks (by N only), each chunk's sums in
// its own partial, the partials added in chunk order. An Inf or NaN in x declines (the dense
// sum multiplies x by the zeros of the pool's gradient, and 0 * Inf is NaN there).
bool conv2d_weight_grad_maxpool2x2(float* dw, float* db, const float* gpool, const float* y,
                                   const float* x, const Conv2dShape& s) {
  if (!(conv::plain(s) && s.sh == 1 && s.sw == 1 && s.S <= 8 && s.K > 0 && s.C > 0) ||
      !conv::all_finite(x, s.N * s.C * s.H * s.W))
    return false;
  const int64_t CR = s.C * s.R, Hp = s.H + 2 * s.ph, Wp = s.W + 2 * s.pw;
  const int64_t P2 = s.P / 2, Q2 = s.Q / 2, acc_n = s.K * CR * 8;
  const int64_t per = conv::chunk_images(s.N), nch = (s.N + per - 1) / per;
  std::vector<float> part(static_cast<size_t>(std::max<int64_t>(1, nch) * acc_n), 0.f);
  std::vector<double> dbpart(static_cast<size_t>(std::max<int64_t>(1, nch) * s.K), 0.0);
  const auto kern = g_kernels->dw_maxpool2x2_image;
  parallel_for(nch, 2.0 * s.N * s.K * s.C * s.R * s.S * P2 * Q2, [&](int64_t ci) {
    float* buf = scratch(Buf::dw_pool_in, s.C * Hp * Wp + 8 + 2 * (P2 * Q2 + 8));
    float* gs = buf + s.C * Hp * Wp + 8;
    int32_t* off = reinterpret_cast<int32_t*>(gs + P2 * Q2 + 8);
    std::fill(buf + s.C * Hp * Wp, buf + s.C * Hp * Wp + 8, 0.f);
    for (int64_t n = ci * per; n < std::min(s.N, (ci + 1) * per); ++n) {
      for (int64_t c = 0; c < s.C; ++c)
        conv::pad_rows(buf + c * Hp * Wp, Wp, x + (n * s.C + c) * s.H * s.W, s.H, s.W, -s.ph,
                       Hp, s.pw);
      kern(part.data() + ci * acc_n, dbpart.data() + ci * s.K, gpool + n * s.K * P2 * Q2,
           y + n * s.K * s.P * s.Q, buf, s.K, s.C, s.R, Hp, Wp, s.P, s.Q, off, gs);
    }
  });
  for (int64_t k = 0; k < s.K; ++k) {
    for (int64_t j = 0; j < CR; ++j)
      for (int64_t t = 0; t < s.S; ++t) {
        float sum = 0.f;
        for (int64_t ci = 0; ci < nch; ++ci) sum += part[ci * acc_n + (k * CR + j) * 8 + t];
        dw[(k * CR + j) * s.S + t] = sum;
      }
    if (db) {
      double sum = 0.0;
      for (int64_t ci = 0; ci < nch; ++ci) sum += dbpart[ci * s.K + k];
      db[k] = static_cast<float>(sum);
    }
  }
  return true;
}

}  // namespace convkit
