"""Datasets and batching: an IDX reader, MNIST / Fashion-MNIST and CIFAR-10 loaders that find or
download their files, per-channel standardisation, crop-and-flip augmentation, mini-batches.

Search order of load_mnist: ``root``, ``$CONVKIT_DATA``, ``~/.cache/convkit/<kind>``, the system
dataset folder ``/usr/share/datasets/<kind>``; then, when allowed, a download into the cache, each
file checked against its published MD5 and moved into place only once complete.
``kind="mnist-sample"`` is the 4,000-digit sample that ships inside the package (no download).
"""
from __future__ import annotations

import gzip
import hashlib
import os
import sys
import tempfile
import urllib.request
import zlib
from pathlib import Path
from typing import Iterator, Optional, Tuple, Union

import numpy as np

__all__ = ["read_idx", "load_mnist", "load_cifar10", "standardize", "random_crop_flip", "batches",
           "KINDS"]

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# MD5 of the published .gz files (the same values torchvision and others check).
_CHECKSUMS = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

_MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/",
              "https://storage.googleapis.com/cvdf-datasets/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/"],
}

KINDS = ("mnist", "fashion-mnist", "mnist-sample")
_SAMPLE_DIR = Path(__file__).parent / "datasets" / "mnist-sample"


def read_idx(path) -> np.ndarray:
    """Reads an IDX file (raw, or gzip-compressed) into an array of its native type.

    A truncated, oversized or malformed file raises ValueError naming the file.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> _ = open(path, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    >>> read_idx(path)
    array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            raw = gzip.decompress(f.read()) if head == b"\x1f\x8b" else f.read()
    except (OSError, EOFError, zlib.error) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"read_idx: {path} is not a readable IDX file: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"read_idx: {path} does not start with an IDX header "
                         f"(got bytes {raw[:4].hex(' ') or 'nothing'})")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"read_idx: {path} is truncated inside its header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    count = 1
    for d in dims:  # Python ints: a header of huge sizes cannot overflow
        count *= d
    want = 4 + 4 * ndim + count * dtype.itemsize
    if len(raw) != want:
        what = "truncated" if len(raw) < want else "longer than its header says"
        raise ValueError(f"read_idx: {path} is {what}: header {dims} needs {want} bytes, "
                         f"file has {len(raw)}")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=4 + 4 * ndim)
    return data.astype(dtype.newbyteorder("="), copy=False).reshape(dims)


def _cache_root() -> Path:
    return Path(os.environ.get("CONVKIT_CACHE", Path.home() / ".cache" / "convkit"))


def _find(folder: Path, stem: str):
    for name in (stem, stem + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


def _candidates(root, kind):
    """Folders to look in, in order, with a label for error messages."""
    out = []
    if root is not None:
        out += [(Path(root), "root"), (Path(root) / kind, "root")]
    env = os.environ.get("CONVKIT_DATA")
    if env:
        out += [(Path(env), "$CONVKIT_DATA"), (Path(env) / kind, "$CONVKIT_DATA")]
    out.append((_cache_root() / kind, "cache"))
    out.append((Path("/usr/share/datasets") / kind, "system"))
    return out


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: Path, md5: str, quiet: bool) -> None:
    """Downloads url to dest through a temporary file in the same folder; dest appears only when
    the whole file has arrived and its MD5 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as resp:
            total = int(resp.headers.get("Content-Length") or 0)
            done = 0
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                out.write(chunk)
                done += len(chunk)
                if not quiet and sys.stderr.isatty():
                    pct = f"{100 * done / total:5.1f}%" if total else f"{done >> 10} KiB"
                    print(f"\r  {dest.name}: {pct}", end="", file=sys.stderr, flush=True)
        if not quiet and sys.stderr.isatty():
            print(file=sys.stderr)
        got = _md5(Path(tmp))
        if got != md5:
            raise ValueError(f"checksum mismatch for {url}: expected MD5 {md5}, got {got}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _mirrors(kind):
    env = os.environ.get("CONVKIT_MNIST_MIRROR")
    if env:
        return [m.strip().rstrip("/") + "/" for m in env.split(",") if m.strip()]
    return _MIRRORS[kind]


def _download_kind(kind: str, split: str, quiet: bool) -> Path:
    folder = _cache_root() / kind
    errors = []
    for stem in _FILES[split]:
        name = stem + ".gz"
        if _find(folder, stem):
            continue
        for mirror in _mirrors(kind):
            try:
                if not quiet:
                    print(f"convkit: downloading {mirror}{name}", file=sys.stderr)
                _download(mirror + name, folder / name, _CHECKSUMS[kind][name], quiet)
                break
            except (OSError, ValueError) as e:
                errors.append(f"{mirror}{name}: {e}")
        else:
            raise _NotFound(errors)
    return folder


def _cache_ok(kind: str, paths) -> bool:
    """Checks cached files against their published MD5 (gzip files) or by reading them (raw
    IDX); a file that fails is deleted so that the next download replaces it."""
    ok = True
    for p in paths:
        want = _CHECKSUMS.get(kind, {}).get(p.name)
        try:
            good = _md5(p) == want if want else read_idx(p) is not None
        except (OSError, ValueError):
            good = False
        if not good:
            print(f"convkit: {p} is damaged (checksum or format); downloading it again",
                  file=sys.stderr)
            p.unlink()
            ok = False
    return ok


class _NotFound(Exception):
    def __init__(self, errors):
        super().__init__("; ".join(errors))
        self.errors = errors


def _to_arrays(img_path: Path, lbl_path: Path):
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"load_mnist: {img_path} {images.shape} and {lbl_path} {labels.shape} "
                         f"are not a matching pair of (N, H, W) images and (N,) labels")
    x = images.astype(np.float32)[:, None, :, :]
    x /= np.float32(255.0)  # as torchvision: exact quotients, not a multiply by 1/255
    return x, labels.astype(np.int64)


def load_mnist(root: Optional[Union[str, os.PathLike]] = None, split: str = "train",
               kind: str = "mnist", download: bool = True,
               quiet: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """-> (images float32 (N, 1, 28, 28) in [0, 1], labels int64 (N,)).

    kind: "mnist", "fashion-mnist", or "mnist-sample" (4,000 real digits shipped with convkit:
    3,000 train / 1,000 test). split: "train" or "test". Looks in ``root``, ``$CONVKIT_DATA``,
    the cache (``$CONVKIT_CACHE`` or ``~/.cache/convkit``), ``/usr/share/datasets/<kind>``; then
    downloads into the cache (MD5-checked; ``$CONVKIT_MNIST_MIRROR`` overrides the mirrors). A
    damaged cached file is downloaded again.

    >>> x, y = load_mnist(kind="mnist-sample", split="test")
    >>> x.shape, x.dtype, y[:3]
    ((1000, 1, 28, 28), dtype('float32'), array([2, 6, 9]))
    """
    if kind not in KINDS:
        raise ValueError(f"load_mnist: expected kind in {KINDS}, but got {kind!r}")
    split = {"t10k": "test"}.get(split, split)
    if split not in _FILES:
        raise ValueError(f"load_mnist: expected split 'train' or 'test', but got {split!r}")
    img_stem, lbl_stem = _FILES[split]
    if kind == "mnist-sample":
        folders = [(_SAMPLE_DIR, "package")]
    else:
        folders = _candidates(root, kind)
    for folder, why in folders:
        img, lbl = _find(folder, img_stem), _find(folder, lbl_stem)
        if img and lbl:
            if why == "cache" and download and not _cache_ok(kind, (img, lbl)):
                break  # a damaged cached file was removed: download it again
            try:
                return _to_arrays(img, lbl)
            except ValueError as e:
                raise ValueError(f"{e}\n(found in {folder} ({why}); delete or replace the "
                                 f"damaged file)") from None
    looked = "\n".join(f"  - {f} ({why})" for f, why in folders)
    if kind != "mnist-sample" and download:
        try:
            folder = _download_kind(kind, split, quiet)
            return _to_arrays(_find(folder, img_stem), _find(folder, lbl_stem))
        except _NotFound as e:
            tried = "\n".join(f"  - {err}" for err in e.errors)
            raise FileNotFoundError(
                f"load_mnist: {kind} ({split}) is not on this machine and could not be "
                f"downloaded.\nLooked in:\n{looked}\nDownload attempts:\n{tried}\n"
                f"Put {img_stem}.gz and {lbl_stem}.gz in one of those folders (or set "
                f"CONVKIT_DATA, or CONVKIT_MNIST_MIRROR to a reachable mirror), or use "
                f"kind='mnist-sample' for the bundled offline sample.") from None
    raise FileNotFoundError(
        f"load_mnist: {kind} ({split}) not found.\nLooked in:\n{looked}\n"
        + ("" if kind == "mnist-sample" else
           "Pass download=True to fetch it, put the files in one of those folders, or use "
           "kind='mnist-sample' for the bundled offline sample."))


def batches(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool = True,
            seed: Optional[int] = None) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """Yields (xb, yb) mini-batches covering x and y once (the last one may be smaller).

    shuffle=True permutes with `seed`, or with the generator convkit.manual_seed sets.

    >>> [xb.shape for xb, yb in batches(np.zeros((5, 2)), np.arange(5), 2, shuffle=False)]
    [(2, 2), (2, 2), (1, 2)]
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"batches: x has {n} samples but y has {len(y)}")
    if int(batch_size) < 1:
        raise ValueError(f"batches: expected batch_size >= 1, but got {batch_size}")
    batch_size = int(batch_size)
    if shuffle:
        if seed is None:
            from . import _generator
            order = _generator().permutation(n)
        else:
            order = np.random.default_rng(seed).permutation(n)
        for i in range(0, n, batch_size):
            idx = order[i: i + batch_size]
            yield x[idx], y[idx]
    else:
        for i in range(0, n, batch_size):
            yield x[i: i + batch_size], y[i: i + batch_size]


# ---- CIFAR-10 ------------------------------------------------------------------------------------

_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_MIRRORS = ["https://www.cs.toronto.edu/~kriz/"]
_CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


class _BatchUnpickler:
    """Reads CIFAR-10's pickled batches allowing only the NumPy array constructors (a pickle
    from elsewhere cannot run code)."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    @classmethod
    def load(cls, f, what):
        import pickle

        class U(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) not in cls._ALLOWED:
                    raise ValueError(f"load_cifar10: {what} refers to {module}.{name}, which a "
                                     f"CIFAR-10 batch never does; the file is not CIFAR-10's")
                return super().find_class(module, name)
        try:
            d = U(f, encoding="bytes").load()
        except ValueError as e:
            if str(e).startswith("load_cifar10"):
                raise
            raise ValueError(f"load_cifar10: {what} is damaged ({e})") from None
        except Exception as e:
            raise ValueError(f"load_cifar10: {what} is damaged ({type(e).__name__}: {e})") from None
        if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
            raise ValueError(f"load_cifar10: {what} is not a CIFAR-10 batch (no data and labels)")
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
            raise ValueError(f"load_cifar10: {what} holds data {data.shape} and labels "
                             f"{labels.shape}, not (N, 3072) and (N,)")
        return data, labels


def _cifar_from_folder(folder: Path, split: str):
    parts = []
    for n in _CIFAR_BATCHES[split]:
        with open(folder / n, "rb") as f:
            parts.append(_BatchUnpickler.load(f, str(folder / n)))
    return parts


def _cifar_from_archive(path: Path, split: str):
    import tarfile
    try:
        with tarfile.open(path, "r:gz") as tar:
            parts = []
            for n in _CIFAR_BATCHES[split]:
                member = f"{_CIFAR_DIR}/{n}"
                try:
                    f = tar.extractfile(member)
                except KeyError:
                    raise ValueError(f"load_cifar10: {path} has no {member}") from None
                parts.append(_BatchUnpickler.load(f, f"{path}:{member}"))
            return parts
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        raise ValueError(f"load_cifar10: {path} is not a readable .tar.gz ({e})") from None


def _cifar_arrays(parts):
    data = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError("load_cifar10: labels outside 0..9; the files are not CIFAR-10's")
    x = data.reshape(-1, 3, 32, 32).astype(np.float32)
    x /= np.float32(255.0)
    return x, labels


def _cifar_mirrors():
    env = os.environ.get("CONVKIT_CIFAR10_MIRROR")
    if env:
        return [m.strip().rstrip("/") + "/" for m in env.split(",") if m.strip()]
    return _CIFAR_MIRRORS


def load_cifar10(root: Optional[Union[str, os.PathLike]] = None, split: str = "train",
                 download: bool = True, quiet: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """-> (images float32 (N, 3, 32, 32) in [0, 1], labels int64 (N,)): 50,000 train or 10,000
    test images of CIFAR-10 ("python version").

    Looks in ``root``, ``$CONVKIT_DATA``, the cache (``~/.cache/convkit/cifar-10``), then
    ``/usr/share/datasets/cifar-10``, each for the extracted ``cifar-10-batches-py/`` folder or
    the archive ``cifar-10-python.tar.gz``; then downloads the archive into the cache
    (MD5-checked, moved into place only when complete; ``$CONVKIT_CIFAR10_MIRROR`` overrides the
    mirror). A damaged cached archive is downloaded again. Batches are unpickled allowing only
    NumPy's array constructors.

    >>> load_cifar10(root="/nonexistent", download=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    FileNotFoundError: load_cifar10: CIFAR-10 (train) not found...
    """
    split = {"t10k": "test"}.get(split, split)
    if split not in _CIFAR_BATCHES:
        raise ValueError(f"load_cifar10: expected split 'train' or 'test', but got {split!r}")
    folders = _candidates(root, "cifar-10")
    for folder, why in folders:
        for sub in (folder / _CIFAR_DIR, folder):
            if all((sub / n).is_file() for n in _CIFAR_BATCHES[split]):
                return _cifar_arrays(_cifar_from_folder(sub, split))
        archive = folder / _CIFAR_ARCHIVE
        if archive.is_file():
            if why == "cache" and download and _md5(archive) != _CIFAR_MD5:
                print(f"convkit: {archive} is damaged (checksum); downloading it again",
                      file=sys.stderr)
                archive.unlink()
                break
            return _cifar_arrays(_cifar_from_archive(archive, split))
    looked = "\n".join(f"  - {f} ({why})" for f, why in folders)
    if download:
        dest = _cache_root() / "cifar-10" / _CIFAR_ARCHIVE
        errors = []
        for mirror in _cifar_mirrors():
            try:
                if not quiet:
                    print(f"convkit: downloading {mirror}{_CIFAR_ARCHIVE} (163 MB)",
                          file=sys.stderr)
                _download(mirror + _CIFAR_ARCHIVE, dest, _CIFAR_MD5, quiet)
                return _cifar_arrays(_cifar_from_archive(dest, split))
            except (OSError, ValueError) as e:
                errors.append(f"{mirror}{_CIFAR_ARCHIVE}: {e}")
        tried = "\n".join(f"  - {err}" for err in errors)
        raise FileNotFoundError(
            f"load_cifar10: CIFAR-10 ({split}) is not on this machine and could not be "
            f"downloaded.\nLooked in:\n{looked}\nDownload attempts:\n{tried}\nDownload "
            f"{_CIFAR_MIRRORS[0]}{_CIFAR_ARCHIVE} (MD5 {_CIFAR_MD5}) and put it, or its "
            f"extracted {_CIFAR_DIR}/ folder, in one of those folders (or set CONVKIT_DATA, or "
            f"CONVKIT_CIFAR10_MIRROR to a reachable mirror).") from None
    raise FileNotFoundError(
        f"load_cifar10: CIFAR-10 ({split}) not found.\nLooked in:\n{looked}\nPass "
        f"download=True to fetch it, or put {_CIFAR_ARCHIVE} or its extracted {_CIFAR_DIR}/ "
        f"folder in one of those folders.")


# ---- preprocessing -------------------------------------------------------------------------------

def standardize(x: np.ndarray, mean=None, std=None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel standardisation of images (N, C, H, W): ``(x - mean) / std`` with mean and
    std (C,) computed from x (population std) unless given (e.g. the training set's, for the
    test set). Returns ``(x_std float32, mean, std)``.

    >>> xs, m, s = standardize(np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2))
    >>> m, s.round(4), float(xs.mean().round(6))
    (array([3.5], dtype=float32), array([2.2913], dtype=float32), 0.0)
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ValueError(f"standardize: expected images (N, C, H, W), but got shape {x.shape}")
    if mean is None:
        mean = x.mean(axis=(0, 2, 3), dtype=np.float64)
    if std is None:
        std = x.std(axis=(0, 2, 3), dtype=np.float64)
    mean = np.asarray(mean, np.float32).reshape(-1)
    std = np.asarray(std, np.float32).reshape(-1)
    if mean.shape != (x.shape[1],) or std.shape != (x.shape[1],):
        raise ValueError(f"standardize: expected mean and std of {x.shape[1]} channels, but got "
                         f"{mean.shape} and {std.shape}")
    if (std <= 0).any():
        raise ValueError(f"standardize: std must be positive, but got {std}")
    out = x - mean.reshape(1, -1, 1, 1)
    out /= std.reshape(1, -1, 1, 1)
    return out, mean, std


def random_crop_flip(x: np.ndarray, padding: int = 4, seed: Optional[int] = None) -> np.ndarray:
    """Augmentation of images (N, C, H, W), one gather for the whole batch: each image is cropped
    at a random offset from its zero-padded copy (``padding`` on every side) and mirrored
    left-right with probability 1/2. ``seed`` (or convkit.manual_seed) makes it reproducible.

    >>> random_crop_flip(np.ones((2, 3, 32, 32), np.float32), seed=0).shape
    (2, 3, 32, 32)
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"random_crop_flip: expected images (N, C, H, W), but got shape {x.shape}")
    p = int(padding)
    if p < 0:
        raise ValueError(f"random_crop_flip: expected padding >= 0, but got {padding}")
    if seed is None:
        from . import _generator
        rng = _generator()
    else:
        rng = np.random.default_rng(seed)
    N, C, H, W = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    oy = rng.integers(0, 2 * p + 1, N)
    ox = rng.integers(0, 2 * p + 1, N)
    flip = rng.random(N) < 0.5
    rows = oy[:, None] + np.arange(H)
    cols = ox[:, None] + np.arange(W)
    cols = np.where(flip[:, None], cols[:, ::-1], cols)
    n = np.arange(N)[:, None, None, None]
    c = np.arange(C)[None, :, None, None]
    return padded[n, c, rows[:, None, :, None], cols[:, None, None, :]]
