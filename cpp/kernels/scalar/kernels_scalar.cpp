// Baseline x86-64 (SSE2) kernels: the portable loops plus a plain 4 x 8 GEMM micro-kernel.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels.h"

namespace convkit {
namespace scalar {
#include "../portable.inc"

constexpr int MR = 4, NR = 8;

// a: kc x MR packed, b: kc x NR packed -> the mr x nr corner of c (ldc)
// Direct: B row k is the nr floats at b + boff[k], else the packed row b + k * NR.
static void ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff, float* c,
                    int64_t ldc, int mr, int nr, bool accumulate, const float* bias) {
  float acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      acc[i][j] = (accumulate && i < mr && j < nr) ? c[i * ldc + j] : (bias && i < mr ? bias[i] : 0.f);
  for (int64_t k = 0; k < kc; ++k) {
    float bk[NR] = {};
    const float* src = boff ? b + boff[k] : b + k * NR;
    for (int j = 0; j < (boff ? nr : NR); ++j) bk[j] = src[j];
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += a[k * MR + i] * bk[j];
  }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) c[i * ldc + j] = acc[i][j];
}

static void gemm_ukernel(int64_t kc, const float* a, const float* b, float* c, int64_t ldc,
                         int mr, int nr, bool accumulate, const float* bias) {
  ukernel(kc, a, b, nullptr, c, ldc, mr, nr, accumulate, bias);
}

static void direct_ukernel(int64_t kc, const float* a, const float* b, const int64_t* boff,
                           float* c, int64_t ldc, int mr, int nr, bool accumulate,
                           const float* bias) {
  ukernel(kc, a, b, boff, c, ldc, mr, nr, accumulate, bias);
}
}  // namespace scalar

void fill_table_scalar(KernelTable& t) {
  t.name = "scalar";
  t.lanes = 4;
  t.mr = scalar::MR;
  t.nr = scalar::NR;
  t.gemm = scalar::gemm_ukernel;
  t.gemm_direct = scalar::direct_ukernel;
  t.sgd = sgd_scalar;
  scalar::fill_portable(t);
}

}  // namespace convkit
