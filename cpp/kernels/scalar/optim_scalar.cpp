// KernelTable::sgd for scalar (the loops of optim.inc; built with -ffp-contract=off).
#include <cstdint>

#include "kernels.h"

namespace convkit {
namespace scalar {
#include "../optim.inc"
}  // namespace scalar

void sgd_scalar(float* p, const float* grad, float* buf, int64_t n, const SgdArgs& a) {
  scalar::sgd_impl(p, grad, buf, n, a);
}

}  // namespace convkit
