"""load_cifar10 on archives the test writes (CIFAR-10's layout, pickled batches), served from a
local HTTP server; standardize and random_crop_flip."""
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest

from convkit import data

from test_data import _Server


def _write_cifar(folder, n=4, seed=0, archive=True):
    """CIFAR-10's python layout with n images per batch; returns (train x, train y, test x,
    test y) as uint8 (N, 3072) and int labels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, n)],
                         b"batch_label": name.encode()}
    if archive:
        with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, d in batches.items():
                raw = pickle.dumps(d, protocol=2)
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    else:
        sub = folder / "cifar-10-batches-py"
        sub.mkdir()
        for name, d in batches.items():
            (sub / name).write_bytes(pickle.dumps(d, protocol=2))
    tr = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    return (np.concatenate([b[b"data"] for b in tr]), np.concatenate([b[b"labels"] for b in tr]),
            batches["test_batch"][b"data"], np.array(batches["test_batch"][b"labels"]))


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("CONVKIT_DATA", raising=False)
    monkeypatch.setenv("CONVKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CONVKIT_CIFAR10_MIRROR", "http://127.0.0.1:9/")  # refused
    return tmp_path


def _md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("archive", [True, False])
def test_reads_archive_or_folder_from_root(isolated, archive):
    xtr, ytr, xte, yte = _write_cifar(isolated / "root", archive=archive)
    x, y = data.load_cifar10(root=isolated / "root", split="train", download=False)
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, ytr)
    np.testing.assert_array_equal(x, xtr.reshape(-1, 3, 32, 32).astype(np.float32) / 255)
    xt, yt = data.load_cifar10(root=isolated / "root", split="test", download=False)
    np.testing.assert_array_equal(yt, yte)
    assert xt.shape == (4, 3, 32, 32)


def test_download_checks_md5_and_caches(isolated, monkeypatch):
    src = isolated / "mirror"
    _, ytr, _, _ = _write_cifar(src, seed=1)
    monkeypatch.setattr(data, "_CIFAR_MD5", _md5(src / "cifar-10-python.tar.gz"))
    with _Server(src) as srv:
        monkeypatch.setenv("CONVKIT_CIFAR10_MIRROR", "http://127.0.0.1:9/," + srv.url)
        _, y = data.load_cifar10(quiet=True)
    np.testing.assert_array_equal(y, ytr)
    cache = isolated / "cache" / "cifar-10"
    assert [p.name for p in cache.iterdir()] == ["cifar-10-python.tar.gz"]
    monkeypatch.setenv("CONVKIT_CIFAR10_MIRROR", "http://127.0.0.1:9/")
    np.testing.assert_array_equal(data.load_cifar10(quiet=True)[1], ytr)  # from the cache


@pytest.mark.parametrize("damage", ["truncate", "wrong-checksum"])
def test_bad_download_leaves_nothing_in_the_cache(isolated, monkeypatch, damage):
    src = isolated / "mirror"
    _write_cifar(src, seed=2)
    arc = src / "cifar-10-python.tar.gz"
    monkeypatch.setattr(data, "_CIFAR_MD5", _md5(arc))
    if damage == "truncate":
        arc.write_bytes(arc.read_bytes()[: arc.stat().st_size // 2])
    else:
        monkeypatch.setattr(data, "_CIFAR_MD5", "0" * 32)
    with _Server(src) as srv:
        monkeypatch.setenv("CONVKIT_CIFAR10_MIRROR", srv.url)
        with pytest.raises(FileNotFoundError, match="checksum mismatch") as e:
            data.load_cifar10(quiet=True)
    msg = str(e.value)
    assert "Looked in" in msg and "cifar-10-python.tar.gz" in msg
    cache = isolated / "cache" / "cifar-10"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_damaged_cached_archive_is_downloaded_again(isolated, monkeypatch):
    src = isolated / "mirror"
    _, ytr, _, _ = _write_cifar(src, seed=5)
    monkeypatch.setattr(data, "_CIFAR_MD5", _md5(src / "cifar-10-python.tar.gz"))
    cache = isolated / "cache" / "cifar-10"
    cache.mkdir(parents=True)
    (cache / "cifar-10-python.tar.gz").write_bytes(b"not an archive")
    with _Server(src) as srv:
        monkeypatch.setenv("CONVKIT_CIFAR10_MIRROR", srv.url)
        np.testing.assert_array_equal(data.load_cifar10(quiet=True)[1], ytr)


def test_offline_message_and_bad_files(isolated, tmp_path):
    with pytest.raises(FileNotFoundError, match="could not be downloaded") as e:
        data.load_cifar10(root=tmp_path / "nothing", quiet=True)
    assert str(tmp_path / "nothing") in str(e.value)
    evil = tmp_path / "evil" / "cifar-10-batches-py"
    evil.mkdir(parents=True)

    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        (evil / name).write_bytes(pickle.dumps({b"data": Boom(), b"labels": []}))
    with pytest.raises(ValueError, match="builtins.print"):
        data.load_cifar10(root=tmp_path / "evil", download=False)
    with pytest.raises(ValueError, match="split"):
        data.load_cifar10(split="val")


def test_standardize_per_channel(rng):
    x = rng.uniform(0, 1, (10, 3, 4, 5)).astype(np.float32) * np.array([1, 2, 3]).reshape(1, 3, 1, 1)
    xs, m, s = data.standardize(x)
    np.testing.assert_allclose(xs.mean(axis=(0, 2, 3)), 0, atol=1e-6)
    np.testing.assert_allclose(xs.std(axis=(0, 2, 3)), 1, rtol=1e-5)
    xs2, m2, s2 = data.standardize(x[:3], m, s)  # the training set's statistics
    np.testing.assert_array_equal(m2, m)
    np.testing.assert_allclose(xs2, (x[:3] - m.reshape(1, 3, 1, 1)) / s.reshape(1, 3, 1, 1),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="3 channels"):
        data.standardize(x, mean=[0, 0])


def test_random_crop_flip_is_a_crop_of_the_padded_image(rng):
    x = rng.standard_normal((64, 2, 6, 7)).astype(np.float32)
    y = data.random_crop_flip(x, padding=2, seed=7)
    np.testing.assert_array_equal(y, data.random_crop_flip(x, padding=2, seed=7))  # seeded
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    flips = 0
    for i in range(len(x)):
        found = False
        for flip in (False, True):
            img = padded[i, :, :, ::-1] if flip else padded[i]
            for oy in range(5):
                for ox in range(5):
                    if np.array_equal(img[:, oy:oy + 6, ox:ox + 7], y[i]):
                        found, flips = True, flips + flip
        assert found, f"image {i} is not a (flipped) crop"
    assert 16 < flips < 48  # about half are mirrored
    assert not np.array_equal(y, x)


def test_example_trains_on_a_generated_archive_and_fails_clearly_without_data(isolated):
    import json
    import os
    import subprocess
    import sys
    root = os.path.join(os.path.dirname(__file__), "..")
    script = os.path.join(root, "examples", "train_cifar10.py")
    env = dict(os.environ, CONVKIT_CACHE=str(isolated / "cache"),
               CONVKIT_CIFAR10_MIRROR="http://127.0.0.1:9/")
    r = subprocess.run([sys.executable, script, "--data-dir", str(isolated / "none"), "--json"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1
    assert "could not be downloaded" in r.stderr and "--dataset fashion-mnist" in r.stderr
    _write_cifar(isolated / "data", n=40)
    for model in ("resnet20", "lenet5"):
        r = subprocess.run([sys.executable, script, "--data-dir", str(isolated / "data"),
                            "--model", model, "--epochs", "2", "--batch-size", "64", "--json"],
                           capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["epochs"] == 2 and 0 <= out["test_accuracy"] <= 1 and out["train_seconds"] > 0
        assert np.isfinite(out["history"]["loss"]).all()
