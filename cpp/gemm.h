// Internal GEMM building blocks shared by conv2d and linear.
#pragma once
#include <cstdint>

#include "convkit/convkit.h"
#include "kernels.h"

namespace convkit {

// Reduction blocking depends only on K, never on threads: kc blocks of equal size <= 256.
int64_t gemm_kc(int64_t K);

// Single-threaded C (M,N) (+)= A (M,K) * B (K,N) using the current kernel table.
void gemm_st(int64_t M, int64_t N, int64_t K, MatView A, MatView B, float* C, int64_t ldc,
             bool accumulate);

}  // namespace convkit
