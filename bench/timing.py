"""Interleaved timing shared by the Python benchmarks: every implementation is sampled in turn,
batches calibrated to ~20 ms, the garbage collector off while timing, a short pause between
implementations so the other library's OpenMP threads stop spinning, then ~20 ms of untimed
calls of the one about to be timed (after the pause a VM's idle vCPU runs the next milliseconds
slow: bench/RESULTS.md, seventh and eighth sessions); medians. And the CPU's name, for the
tables."""
import gc
import platform
import statistics
import subprocess
import time

PAUSE = 0.02  # s between implementations: the OpenMP pools of the other library fall asleep
WARM = 0.02   # s of untimed calls after the pause: the timed batch runs in a training loop's state


def _calibrate(fns):
    """Calls per sample so that one sample of the slowest implementation takes >= ~20 ms."""
    worst = 0.0
    for f in fns:
        f()
        t = time.perf_counter()
        f()
        worst = max(worst, time.perf_counter() - t)
    return max(1, int(0.02 / max(worst, 1e-7)))


def measure(impls: dict, repeats: int) -> dict:
    """Median seconds per call of each implementation, sampled in interleaved rounds."""
    return {k: statistics.median(v) for k, v in sample(impls, repeats).items()}


def sample(impls: dict, repeats: int) -> dict:
    """Seconds per call of each implementation: `repeats` samples each, interleaved."""
    fns = list(impls.values())
    gc.collect()
    gc.disable()  # as timeit does: a collection inside a timed batch is noise, not either library
    try:
        return _measure(impls, fns, repeats)
    finally:
        gc.enable()


def _measure(impls, fns, repeats):
    for f in fns:  # warm-up: workspaces, caches, JIT
        f()
    number = _calibrate(fns)
    samples = {k: [] for k in impls}
    for _ in range(repeats):
        for k, f in impls.items():
            # Both libraries' OpenMP pools spin for a while after each parallel region; a short
            # untimed pause lets the other library's spinning threads go to sleep first, so that
            # neither steals the cores from the one being timed.
            time.sleep(PAUSE)
            end = time.perf_counter() + WARM
            while True:
                f()
                if time.perf_counter() >= end:
                    break
            t = time.perf_counter()
            for _ in range(number):
                f()
            samples[k].append((time.perf_counter() - t) / number)
    return samples




def cpu_model() -> str:
    """`lscpu`'s "Model name" (the processor string where lscpu is missing)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
