#!/usr/bin/env bash
# convkit's thread pool under ThreadSanitizer: builds the C++ core with -fsanitize=thread into
# build-tsan/, links tools/tsan_pool.cpp against it and runs it at 2, 4 and 8 threads; any report
# fails the run (non-zero exit). Used by .ci/run. Before the pool closed a finished job's claim
# word ahead of rewriting the job (cpp/parallel.cpp), 3 of 7 runs (8 threads, 20 iterations)
# reported a worker reading a finished caller's stack; none has since.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cmake >/dev/null && command -v ninja >/dev/null ||
  python -m pip install --quiet cmake ninja  # the build tools, into the active environment
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="-fsanitize=thread" >/dev/null
cmake --build build-tsan --target convkit_core >/dev/null
g++ -O1 -g -std=c++17 -fsanitize=thread -Icpp/include -Icpp tools/tsan_pool.cpp \
  build-tsan/libconvkit_core.a -fopenmp -lpthread -o build-tsan/tsan_pool
for threads in 2 4 8; do
  CONVKIT_RUNTIME=pool TSAN_OPTIONS="halt_on_error=1 exitcode=66" \
    build-tsan/tsan_pool "$threads" 60
done
