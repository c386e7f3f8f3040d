// The SGD update of one parameter in one pass (KernelTable::sgd on chunks), with exactly the
// float32 roundings of the NumPy sequence it replaced in optim.SGD. Elementwise: any thread
// count gives the same bits.
#include <algorithm>

#include "convkit/convkit.h"
#include "kernels.h"
#include "parallel.h"

namespace convkit {

void sgd_update(float* p, const float* grad, float* buf, int64_t n, const SgdArgs& a) {
  constexpr int64_t kChunk = 1 << 14;
  const auto sgd = g_kernels->sgd;
  parallel_for((n + kChunk - 1) / kChunk, 4.0 * n, [&](int64_t c) {
    const int64_t i0 = c * kChunk, m = std::min(kChunk, n - i0);
    sgd(p + i0, grad + i0, buf ? buf + i0 : nullptr, m, a);
  });
}

}  // namespace convkit
