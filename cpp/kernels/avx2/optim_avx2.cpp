// KernelTable::sgd for AVX2: the loops of optim.inc (built with -ffp-contract=off).
#define CK_SGD_NAME sgd_avx2
#include "../optim.inc"
