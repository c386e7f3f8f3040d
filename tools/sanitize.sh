#!/usr/bin/env bash
# Builds convkit with AddressSanitizer + UndefinedBehaviorSanitizer into the active environment
# and runs the whole test suite against it; any sanitizer report aborts the run (non-zero exit).
# Python itself is not instrumented, so the ASan runtime is preloaded. Used by .ci/run; run it
# locally the same way (it replaces the installed convkit with the sanitized build):
#     bash tools/sanitize.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
pip install . --no-deps --force-reinstall --quiet -Cbuild-dir=build-asan \
  -Ccmake.build-type=RelWithDebInfo -Ccmake.define.CONVKIT_SANITIZE=ON
libasan=$(g++ -print-file-name=libasan.so)
libubsan=$(g++ -print-file-name=libubsan.so)
# Leaks: Python and PyTorch keep allocations alive until exit by design. ODR and
# alloc/dealloc-mismatch reports come from the uninstrumented libraries loaded beside convkit.
export ASAN_OPTIONS=detect_leaks=0:detect_odr_violation=0:alloc_dealloc_mismatch=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
LD_PRELOAD="$libasan $libubsan" CONVKIT_SANITIZED=1 python -m pytest tests -q -p no:cacheprovider "$@"
