// Internal GEMM building blocks shared by conv2d and linear.
//
// Packed layouts (Goto/BLIS): A is cut into panels of MR rows, each stored k-major (MR values per
// k); B into panels of NR columns, each stored k-major (NR values per k). Panels are packed to the
// full reduction depth K, so the kc-block starting at pc of panel i sits at panel + pc * MR (NR).
#pragma once
#include <cstdint>

#include "convkit/convkit.h"
#include "kernels.h"

namespace convkit {

// Reduction blocking depends only on K, never on threads: kc blocks of equal size <= 256.
int64_t gemm_kc(int64_t K);

// Rows rounded up to whole MR panels (columns to NR panels): the packed sizes.
inline int64_t round_up(int64_t v, int64_t unit) { return (v + unit - 1) / unit * unit; }

// Fetches a rows x cols tile of C (ldc apart) into the cache: called for the next tile while the
// micro-kernel works on this one, which loads its tile before the first multiply-add (a tile of a
// large C waits on memory there).
inline void prefetch_tile(const float* c, int64_t ldc, int rows, int cols) {
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; j += 16) __builtin_prefetch(c + i * ldc + j, 1, 3);
}

// dst[k * ds + i] = src[i * ss + k] for i < m, k < n (KernelTable::transpose).
void transpose_into(float* dst, int64_t ds, const float* src, int64_t ss, int64_t m, int64_t n);

// Packs rows [i0, i0 + m) of A (all K columns) into MR-row panels, zero-padded.
void pack_a(float* dst, MatView A, int64_t i0, int64_t m, int64_t k0, int64_t kc, int MR);
// Packs columns [j0, j0 + n) of B (rows [k0, k0 + kc)) into NR-column panels, zero-padded.
void pack_b(float* dst, MatView B, int64_t k0, int64_t kc, int64_t j0, int64_t n, int NR);

// C (m x n, ldc) = init + Apacked (m x K) * Bpacked (K x n), with full-depth packed operands.
// init: C itself if accumulate, else bias[row] if bias, else 0.
void gemm_packed(int64_t m, int64_t n, int64_t K, const float* ap, const float* bp, float* C,
                 int64_t ldc, bool accumulate, const float* bias);

// Single-threaded C (M,N) (+)= A (M,K) * B (K,N) using the current kernel table.
void gemm_st(int64_t M, int64_t N, int64_t K, MatView A, MatView B, float* C, int64_t ldc,
             bool accumulate);

}  // namespace convkit
