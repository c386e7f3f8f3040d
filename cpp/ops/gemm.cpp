// Blocked, packed GEMM (Goto/BLIS style): B is packed kc x nc into NR-wide panels, A mc x kc into
// MR-tall panels, and the ISA's micro-kernel computes MR x NR tiles of C from them.
// Tiles at the edges go through a small buffer so the micro-kernel always sees full tiles.
#include <algorithm>
#include <cstring>

#include "gemm.h"
#include "parallel.h"

namespace convkit {

namespace {
constexpr int64_t kMaxKc = 256;
constexpr int64_t kMcPanels = 16;    // mc = 16 * MR rows of A stay in L2
constexpr int64_t kNcPanels = 128;   // nc = 128 * NR columns of B

}  // namespace

void transpose_into(float* dst, int64_t ds, const float* src, int64_t ss, int64_t m, int64_t n) {
  g_kernels->transpose(dst, ds, src, ss, m, n);
}

// Panels of P lanes, k-major: panel[k * P + l] = src[l * ls + k * ks] for lanes l < n of each
// panel (zero up to P), kc values of k. Lanes adjacent in memory are copied row by row, k
// adjacent (a row-major A, a column-major B) through transpose_into, anything else one by one.
static void pack_panels(float* dst, const float* src, int64_t ls, int64_t ks, int64_t n,
                        int64_t kc, int P) {
  for (int64_t lp = 0; lp < n; lp += P, dst += kc * P) {
    const int64_t nl = std::min<int64_t>(P, n - lp);
    const float* s0 = src + lp * ls;
    if (ls == 1) {
      for (int64_t k = 0; k < kc; ++k) {
        const float* s = s0 + k * ks;
        float* d = dst + k * P;
        for (int64_t l = 0; l < nl; ++l) d[l] = s[l];
        for (int64_t l = nl; l < P; ++l) d[l] = 0.f;
      }
      continue;
    }
    if (ks == 1) {
      transpose_into(dst, P, s0, ls, nl, kc);
    } else {
      for (int64_t l = 0; l < nl; ++l)
        for (int64_t k = 0; k < kc; ++k) dst[k * P + l] = s0[l * ls + k * ks];
    }
    for (int64_t l = nl; l < P; ++l)
      for (int64_t k = 0; k < kc; ++k) dst[k * P + l] = 0.f;
  }
}

// Apanel[k*MR + i] = A(i0 + i, k0 + k), zero for i >= m
void pack_a(float* dst, MatView A, int64_t i0, int64_t m, int64_t k0, int64_t kc, int MR) {
  pack_panels(dst, A.p + i0 * A.rs + k0 * A.cs, A.rs, A.cs, m, kc, MR);
}

// Bpanel[k*NR + j] = B(k0 + k, j0 + j), zero for j >= n
void pack_b(float* dst, MatView B, int64_t k0, int64_t kc, int64_t j0, int64_t n, int NR) {
  pack_panels(dst, B.p + k0 * B.rs + j0 * B.cs, B.cs, B.rs, n, kc, NR);
}

int64_t gemm_kc(int64_t K) {
  const int64_t nb = (K + kMaxKc - 1) / kMaxKc;
  return nb == 0 ? 1 : (K + nb - 1) / nb;
}

void gemm_packed(int64_t m, int64_t n, int64_t K, const float* ap, const float* bp, float* C,
                 int64_t ldc, bool accumulate, const float* bias) {
  const KernelTable& kt = *g_kernels;
  const int MR = kt.mr, NR = kt.nr;
  const int64_t kcmax = gemm_kc(K);
  for (int64_t pc = 0; pc < K; pc += kcmax) {
    const int64_t kc = std::min(kcmax, K - pc);
    const bool acc = accumulate || pc > 0;
    const float* b0 = bias && pc == 0 && !accumulate ? bias : nullptr;
    for (int64_t ir = 0; ir < m; ir += MR) {
      const int mr = static_cast<int>(std::min<int64_t>(MR, m - ir));
      const float* a = ap + ir * K + pc * MR;  // panel ir / MR, kc-block pc
      for (int64_t jr = 0; jr < n; jr += NR) {
        const int nr = static_cast<int>(std::min<int64_t>(NR, n - jr));
        kt.gemm(kc, a, bp + jr * K + pc * NR, C + ir * ldc + jr, ldc, mr, nr, acc,
                b0 ? b0 + ir : nullptr);
      }
    }
  }
}

void gemm_st(int64_t M, int64_t N, int64_t K, MatView A, MatView B, float* C, int64_t ldc,
             bool accumulate) {
  if (M <= 0 || N <= 0) return;
  const KernelTable& kt = *g_kernels;
  const int MR = kt.mr, NR = kt.nr;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.f);
    return;
  }
  const int64_t kcmax = gemm_kc(K);
  const int64_t mc_max = kMcPanels * MR, nc_max = kNcPanels * NR;
  float* bpack = scratch(Buf::gemm_b, kcmax * nc_max);
  float* apack = scratch(Buf::gemm_a, kcmax * mc_max);

  for (int64_t jc = 0; jc < N; jc += nc_max) {
    const int64_t nc = std::min(nc_max, N - jc);
    for (int64_t pc = 0; pc < K; pc += kcmax) {
      const int64_t kc = std::min(kcmax, K - pc);
      const bool acc = accumulate || pc > 0;
      pack_b(bpack, B, pc, kc, jc, nc, NR);
      for (int64_t ic = 0; ic < M; ic += mc_max) {
        const int64_t mc = std::min(mc_max, M - ic);
        pack_a(apack, A, ic, mc, pc, kc, MR);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          const float* bp = bpack + (jr / NR) * kc * NR;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            kt.gemm(kc, apack + (ir / MR) * kc * MR, bp, C + (ic + ir) * ldc + jc + jr, ldc, mr,
                    nr, acc, nullptr);
          }
        }
      }
    }
  }
}

void gemm(int64_t M, int64_t N, int64_t K, MatView A, MatView B, float* C, int64_t ldc,
          bool accumulate) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    gemm_st(M, N, K, A, B, C, ldc, accumulate);
    return;
  }
  const KernelTable& kt = *g_kernels;
  const int MR = kt.mr, NR = kt.nr;
  const int64_t nt = get_num_threads();
  const int64_t ct = (N + NR - 1) / NR, rt = (M + MR - 1) / MR;  // tiles
  if (2.0 * M * N * K < 5e7) {
    // Small products: both operands packed once, panel by panel across the threads (blocks
    // packing their own would repeat the work: a 64 x 400 by 400 x 120 product spent as long
    // packing as multiplying), then blocks of whole tiles of C.
    int64_t cb = std::min<int64_t>(ct, std::max<int64_t>(1, (N + 255) / 256));
    int64_t rb = std::min<int64_t>(rt, std::max<int64_t>(1, (M + 63) / 64));
    while (cb * rb < 2 * nt && (cb < ct || rb < rt)) {
      if (cb < ct && (cb <= rb || rb == rt)) ++cb;
      else ++rb;
    }
    const int64_t bw = (ct + cb - 1) / cb * NR, bh = (rt + rb - 1) / rb * MR;
    cb = (N + bw - 1) / bw;
    rb = (M + bh - 1) / bh;
    float* apack = scratch(Buf::gemm_a_full, rt * MR * K);
    float* bpack = scratch(Buf::gemm_b_full, ct * NR * K);
    parallel_for(rt + ct, 1.0 * (M + N) * K, [&](int64_t p) {
      if (p < rt)
        pack_a(apack + p * MR * K, A, p * MR, std::min<int64_t>(MR, M - p * MR), 0, K, MR);
      else
        pack_b(bpack + (p - rt) * NR * K, B, 0, K, (p - rt) * NR,
               std::min<int64_t>(NR, N - (p - rt) * NR), NR);
    });
    parallel_for(cb * rb, 2.0 * M * N * K, [&](int64_t item) {
      const int64_t i0 = (item / cb) * bh, j0 = (item % cb) * bw;
      gemm_packed(std::min(bh, M - i0), std::min(bw, N - j0), K, apack + i0 * K,
                  bpack + j0 * K, C + i0 * ldc + j0, ldc, accumulate, nullptr);
    });
    return;
  }
  // Large products: A is packed once, to full depth; work items are blocks of whole tiles of
  // C, each packing only its own columns of B; columns are split first (rows share the packed A).
  // The column tiles spread evenly over the blocks (ceil-sized blocks left (1024, 392)'s 13
  // tiles as 4 + 4 + 4 + 1 on 2 threads); which thread sums a column does not change its bits.
  const int64_t cb = std::min<int64_t>(ct, 2 * nt);
  int64_t rb = 1;
  while (cb * rb < 2 * nt && rb < rt) ++rb;
  const int64_t bw = (ct + cb - 1) / cb * NR, bh = (rt + rb - 1) / rb * MR;
  rb = (M + bh - 1) / bh;
  float* apack = scratch(Buf::gemm_a_full, round_up(M, MR) * K);
  parallel_for(rt, 1.0 * M * K, [&](int64_t p) {  // (a (256, 1024) A took 0.15 ms on one thread)
    pack_a(apack + p * MR * K, A, p * MR, std::min<int64_t>(MR, M - p * MR), 0, K, MR);
  });
  const int64_t kcmax = gemm_kc(K), mc_max = kMcPanels * MR, nc_l2 = 8 * NR;
  parallel_for(cb * rb, 2.0 * M * N * K, [&](int64_t item) {
    const int64_t i0 = (item / cb) * bh, j0 = item % cb * ct / cb * NR;
    const int64_t m = std::min(bh, M - i0), n = std::min(N, (item % cb + 1) * ct / cb * NR) - j0;
    float* bpack = scratch(Buf::gemm_b, kcmax * std::min(bw, nc_l2));
    for (int64_t jc = 0; jc < n; jc += nc_l2) {
      const int64_t nc = std::min(nc_l2, n - jc);
      for (int64_t pc = 0; pc < K; pc += kcmax) {
        const int64_t kc = std::min(kcmax, K - pc);
        const bool acc = accumulate || pc > 0;
        pack_b(bpack, B, pc, kc, j0 + jc, nc, NR);
        // rows in blocks of mc_max: each block's A panels (kc x mc_max) stay in L2 while the
        // panels of B (kc x nc_l2, in L2 too) go past them
        for (int64_t ic = 0; ic < m; ic += mc_max)
          for (int64_t jr = 0; jr < nc; jr += NR) {
            const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
            for (int64_t ir = ic; ir < std::min(m, ic + mc_max); ir += MR) {
              const int mr = static_cast<int>(std::min<int64_t>(MR, m - ir));
              float* c = C + (i0 + ir) * ldc + j0 + jc + jr;
              if (ir + MR < m) prefetch_tile(c + MR * ldc, ldc, MR, nr);
              kt.gemm(kc, apack + (i0 + ir) * K + pc * MR, bpack + jr * kc, c, ldc, mr, nr,
                      acc, nullptr);
            }
          }
      }
    }
  });
}

}  // namespace convkit
