// KernelTable::sgd for AVX-512: the loops of optim.inc (built with -ffp-contract=off).
#define CK_SGD_NAME sgd_avx512
#include "../optim.inc"
