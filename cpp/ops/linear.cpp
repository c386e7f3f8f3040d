// linear (fully connected) on the shared GEMM.
//   y (N,O)  = x (N,I) * W^T (I,O) + b
//   dx (N,I) = dy (N,O) * W (O,I)
//   dW (O,I) = dy^T (O,N) * x (N,I)      reduction over the batch in a fixed order
//   db (O)   = column sums of dy
#include <algorithm>

#include "convkit/convkit.h"
#include "parallel.h"

namespace convkit {

void linear_forward(float* y, const float* x, const float* w, const float* b, int64_t N,
                    int64_t I, int64_t O) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t o = 0; o < O; ++o) y[n * O + o] = b ? b[o] : 0.f;
  gemm(N, O, I, MatView{x, I, 1}, MatView{w, 1, I}, y, O, true);
}

void linear_backward(float* dx, float* dw, float* db, const float* dy, const float* x,
                     const float* w, int64_t N, int64_t I, int64_t O) {
  if (dx) gemm(N, I, O, MatView{dy, O, 1}, MatView{w, I, 1}, dx, I, false);
  if (dw) gemm(O, I, N, MatView{dy, 1, O}, MatView{x, I, 1}, dw, I, false);
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
