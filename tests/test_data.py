"""IDX reading, the load_mnist search order, downloading from a local HTTP mirror, batching."""
import gzip
import hashlib
import http.server
import struct
import threading
from functools import partial

import numpy as np
import pytest

from convkit import data


def _idx_bytes(arr):
    code = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[arr.dtype.type]
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write_mnist(folder, n_train=12, n_test=5, seed=0, gz=True):
    """Writes a small MNIST-format data set; returns {stem: array}."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        img = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        lbl = rng.integers(0, 10, n).astype(np.uint8)
        for stem, arr in ((f"{split}-images-idx3-ubyte", img), (f"{split}-labels-idx1-ubyte", lbl)):
            raw = _idx_bytes(arr)
            (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
            out[stem] = arr
    return out


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $CONVKIT_DATA, a private cache, and no reachable mirror unless a test sets one."""
    monkeypatch.delenv("CONVKIT_DATA", raising=False)
    monkeypatch.setenv("CONVKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVKIT_MNIST_MIRROR", "http://127.0.0.1:9/")  # discard port: refused
    return tmp_path


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, dtype, gz):
    arr = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype) if dtype != np.uint8 else \
        np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    raw = _idx_bytes(arr)
    p = tmp_path / "a.idx"
    p.write_bytes(gzip.compress(raw) if gz else raw)
    got = data.read_idx(p)
    assert got.shape == arr.shape and np.array_equal(got, arr)


@pytest.mark.parametrize("mutate,frag", [
    (lambda b: b[:-1], "truncated"),
    (lambda b: b + b"\0", "longer than its header"),
    (lambda b: b"\1" + b[1:], "IDX header"),
    (lambda b: b[:6], "truncated inside its header"),
    (lambda b: b"", "IDX header"),
])
def test_read_idx_malformed(tmp_path, mutate, frag):
    p = tmp_path / "bad.idx"
    p.write_bytes(mutate(_idx_bytes(np.zeros((3, 4), np.uint8))))
    with pytest.raises(ValueError, match=frag):
        data.read_idx(p)


def test_read_idx_corrupt_gzip(tmp_path):
    p = tmp_path / "bad.gz"
    p.write_bytes(gzip.compress(_idx_bytes(np.zeros((3, 4), np.uint8)))[:-8])
    with pytest.raises(ValueError, match="bad.gz"):
        data.read_idx(p)


def test_load_from_root_and_search_order(isolated, monkeypatch):
    a = _write_mnist(isolated / "a", seed=1)
    b = _write_mnist(isolated / "b" / "mnist", seed=2, gz=False)  # <env>/<kind> layout, raw files
    monkeypatch.setenv("CONVKIT_DATA", str(isolated / "b"))
    x, y = data.load_mnist(root=isolated / "a", split="test")
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(x[:, 0], a["t10k-images-idx3-ubyte"] / np.float32(255))
    assert np.array_equal(y, a["t10k-labels-idx1-ubyte"])
    x, y = data.load_mnist(split="train")  # root not given: $CONVKIT_DATA
    assert np.array_equal(y, b["train-labels-idx1-ubyte"])
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_bundled_sample():
    x, y = data.load_mnist(kind="mnist-sample")
    xt, yt = data.load_mnist(kind="mnist-sample", split="test")
    assert x.shape == (3000, 1, 28, 28) and xt.shape == (1000, 1, 28, 28)
    assert set(np.unique(y)) == set(range(10)) and set(np.unique(yt)) == set(range(10))
    assert x.max() == 1.0 and x.min() == 0.0


def test_offline_error_says_where_it_looked(isolated):
    with pytest.raises(FileNotFoundError) as e:
        data.load_mnist(root=isolated / "nowhere", kind="mnist")
    msg = str(e.value)
    for frag in ("nowhere", "cache", "/usr/share/datasets/mnist", "127.0.0.1:9", "mnist-sample"):
        assert frag in msg
    with pytest.raises(FileNotFoundError, match="download=True"):
        data.load_mnist(root=isolated / "nowhere", download=False)
    with pytest.raises(ValueError, match="kind"):
        data.load_mnist(kind="cifar")


class _Server:
    """A static HTTP server on 127.0.0.1 in a thread, serving one folder."""

    def __init__(self, folder):
        handler = partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _md5s(folder):
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_download_from_mirror_with_checksums(isolated, monkeypatch):
    src = isolated / "mirror"
    arrays = _write_mnist(src, seed=3)
    monkeypatch.setitem(data._CHECKSUMS, "mnist", _md5s(src))
    with _Server(src) as srv:
        monkeypatch.setenv("CONVKIT_MNIST_MIRROR", "http://127.0.0.1:9/," + srv.url)  # first fails
        x, y = data.load_mnist(root=isolated / "empty", split="train", quiet=True)
    assert np.array_equal(y, arrays["train-labels-idx1-ubyte"])
    cache = isolated / "cache" / "mnist"
    assert sorted(p.name for p in cache.iterdir()) == ["train-images-idx3-ubyte.gz",
                                                      "train-labels-idx1-ubyte.gz"]
    # a second call finds the cached files without any mirror
    monkeypatch.setenv("CONVKIT_MNIST_MIRROR", "http://127.0.0.1:9/")
    assert np.array_equal(data.load_mnist(split="train", quiet=True)[1], y)


def test_corrupt_download_leaves_nothing_behind(isolated, monkeypatch):
    src = isolated / "mirror"
    _write_mnist(src, seed=4)
    sums = _md5s(src)
    monkeypatch.setitem(data._CHECKSUMS, "mnist", sums)
    bad = src / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-3] + b"xyz")  # corrupt after the checksums were taken
    with _Server(src) as srv:
        monkeypatch.setenv("CONVKIT_MNIST_MIRROR", srv.url)
        with pytest.raises(FileNotFoundError, match="checksum mismatch") as e:
            data.load_mnist(split="test", quiet=True)
    assert sums["t10k-labels-idx1-ubyte.gz"] in str(e.value)
    cache = isolated / "cache" / "mnist"
    left = sorted(p.name for p in cache.iterdir())
    assert left == ["t10k-images-idx3-ubyte.gz"]  # the good file; no partial or corrupt file


def test_batches(rng):
    x = np.arange(10)
    y = np.arange(10) * 10
    got = list(data.batches(x, y, 4, shuffle=False))
    assert [len(b[0]) for b in got] == [4, 4, 2] and np.array_equal(got[2][0], [8, 9])
    a = [xb for xb, _ in data.batches(x, y, 3, seed=7)]
    b = [xb for xb, _ in data.batches(x, y, 3, seed=7)]
    assert all(np.array_equal(i, j) for i, j in zip(a, b))
    assert sorted(np.concatenate(a)) == list(range(10))
    for xb, yb in data.batches(x, y, 3, seed=1):
        assert np.array_equal(yb, xb * 10)
    with pytest.raises(ValueError, match="batches: x has 10 samples but y has 9"):
        list(data.batches(x, y[:9], 2))


def test_corrupt_cached_file_is_downloaded_again(isolated, monkeypatch):
    src = isolated / "mirror"
    arrays = _write_mnist(src, seed=5)
    monkeypatch.setitem(data._CHECKSUMS, "mnist", _md5s(src))
    cache = isolated / "cache" / "mnist"
    cache.mkdir(parents=True)
    good = (src / "train-images-idx3-ubyte.gz").read_bytes()
    (cache / "train-images-idx3-ubyte.gz").write_bytes(good[: len(good) // 2])  # truncated
    (cache / "train-labels-idx1-ubyte.gz").write_bytes((src / "train-labels-idx1-ubyte.gz").read_bytes())
    with _Server(src) as srv:
        monkeypatch.setenv("CONVKIT_MNIST_MIRROR", srv.url)
        x, y = data.load_mnist(split="train", quiet=True)
    assert np.array_equal(x[:, 0] * 255, arrays["train-images-idx3-ubyte"].astype(np.float32))
    assert (cache / "train-images-idx3-ubyte.gz").read_bytes() == good


def test_idx_header_with_huge_sizes_names_the_file(tmp_path):
    p = tmp_path / "huge-idx3-ubyte"
    p.write_bytes(bytes([0, 0, 0x08, 3]) + b"\xff\xff\xff\xff" * 3 + b"\x00" * 16)
    with pytest.raises(ValueError, match=r"read_idx: .*huge-idx3-ubyte is truncated"):
        data.read_idx(p)
