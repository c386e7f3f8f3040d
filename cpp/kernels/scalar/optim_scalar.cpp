// KernelTable::sgd for scalar (SSE2): the loops of optim.inc (built with -ffp-contract=off).
#define CK_SGD_NAME sgd_scalar
#include "../optim.inc"
