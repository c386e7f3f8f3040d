#!/usr/bin/env bash
# Builds convkit with its AVX-512 kernels carried out by SIMDe on AVX2 (CMake option
# CONVKIT_EMULATE_AVX512, tools/emulated_avx512.h; needs libsimde-dev) into the active
# environment, then checks that the AVX2 rows give the AVX-512 rows' bits (tools/isa_bits.py);
# further arguments run pytest against the same build (the AVX-512 kernels, emulated, are then
# the default ISA). A developers' check for machines without AVX-512: it replaces the installed
# convkit, so reinstall (pip install .) afterwards.
#     bash tools/emulated_avx512.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/include/simde/x86/avx512.h ]; then
  echo "emulated_avx512.sh: SIMDe not found (apt-get install libsimde-dev)" >&2
  exit 1
fi
pip install . --no-deps --force-reinstall --quiet -Cbuild-dir=build-emu512 \
  -Ccmake.define.CONVKIT_EMULATE_AVX512=ON
python tools/isa_bits.py
if [ $# -gt 0 ]; then
  python -m pytest tests -q -p no:cacheprovider "$@"
fi
echo "emulated_avx512.sh: the installed convkit is the emulated build; pip install . restores it"
