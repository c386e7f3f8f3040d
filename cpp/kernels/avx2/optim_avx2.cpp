// KernelTable::sgd for avx2 (the loops of optim.inc; built with -ffp-contract=off).
#include <cstdint>

#include "kernels.h"

namespace convkit {
namespace avx2 {
#include "../optim.inc"
}  // namespace avx2

void sgd_avx2(float* p, const float* grad, float* buf, int64_t n, const SgdArgs& a) {
  avx2::sgd_impl(p, grad, buf, n, a);
}

}  // namespace convkit
