// KernelTable::sgd for avx512 (the loops of optim.inc; built with -ffp-contract=off).
#include <cstdint>

#include "kernels.h"

namespace convkit {
namespace avx512 {
#include "../optim.inc"
}  // namespace avx512

void sgd_avx512(float* p, const float* grad, float* buf, int64_t n, const SgdArgs& a) {
  avx512::sgd_impl(p, grad, buf, n, a);
}

}  // namespace convkit
