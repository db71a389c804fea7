"""Tests for probe.data: IDX reading, folder loading, checked downloads, views, noise, Gaussians."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import pathlib
import socket
import struct
import threading

import numpy as np
import pytest

from probe import data
from probe.errors import DataFormatError, DataUnavailableError, InputTypeError, InputValueError, UnknownNameError

MNIST_5K = pathlib.Path(os.environ.get("PROBE_TEST_MNIST_DIR")
                        or pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist-5k")

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.int16): 0x0B,
          np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D, np.dtype(np.float64): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode an array as IDX, independently of the reader: header then big-endian payload."""
    header = bytes([0, 0, _CODES[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: pathlib.Path, arr: np.ndarray, *, compress: bool) -> pathlib.Path:
    payload = idx_bytes(arr)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def make_images(n: int, seed: int, shape: tuple[int, int] = (4, 6)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), (np.arange(n) % 10).astype(np.uint8)


def write_idx_folder(folder: pathlib.Path, *, compress: bool = True) -> dict[str, pathlib.Path]:
    """Write a small 4x6 dataset (20 train, 10 test) as the four standard IDX files."""
    folder.mkdir(parents=True, exist_ok=True)
    train_x, train_y = make_images(20, seed=1)
    test_x, test_y = make_images(10, seed=2)
    suffix = ".gz" if compress else ""
    arrays = {"train_images": train_x, "train_labels": train_y, "test_images": test_x, "test_labels": test_y}
    return {role: write_idx(folder / (data.IDX_FILES[role] + suffix), arr, compress=compress)
            for role, arr in arrays.items()}


def sha256_of(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
@pytest.mark.parametrize("arr", [
    np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    np.array([-5, 0, 70000], dtype=np.int32),
    np.array([[1.5, -2.25], [np.pi, 0.0]], dtype=np.float32),
    np.array([-3, 4], dtype=np.int16),
], ids=["uint8-3d", "int32-1d", "float32-2d", "int16-1d"])
def test_read_idx_round_trip(tmp_path, arr, compress):
    got = data.read_idx(write_idx(tmp_path / "a.idx", arr, compress=compress))
    assert got.dtype == arr.dtype.newbyteorder("=") and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)
    got[...] = 0  # the result is an ordinary writable array, not a view of a bytes object


def test_read_idx_detects_gzip_by_magic_not_by_name(tmp_path):
    arr = np.arange(6, dtype=np.uint8)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "plain-name", arr, compress=True)), arr)
    np.testing.assert_array_equal(data.read_idx(write_idx(tmp_path / "looks.gz", arr, compress=False)), arr)


def _corrupt(kind: str) -> bytes:
    good = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    return {
        "wrong-magic": b"\x01\x00" + good[2:],
        "unknown-type": good[:2] + b"\x07" + good[3:],
        "zero-ndim": good[:3] + b"\x00" + good[4:],
        "truncated-header": good[:6],
        "truncated-payload": good[:-1],
        "trailing-bytes": good + b"\x00\x00",
        "corrupt-gzip": gzip.compress(good)[:-12] + b"garbage!",
        "empty": b"",
    }[kind]


@pytest.mark.parametrize("kind", ["wrong-magic", "unknown-type", "zero-ndim", "truncated-header",
                                  "truncated-payload", "trailing-bytes", "corrupt-gzip", "empty"])
def test_read_idx_rejects_bad_files_naming_the_file(tmp_path, kind):
    path = tmp_path / f"bad-{kind}-idx"
    path.write_bytes(_corrupt(kind))
    with pytest.raises(DataFormatError, match=path.name):
        data.read_idx(path)


def test_read_idx_size_errors_say_expected_and_actual_bytes(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(_corrupt("truncated-payload"))
    with pytest.raises(DataFormatError, match=r"truncated.*\(3, 4\).*needs 12 payload bytes, but 11 follow"):
        data.read_idx(path)
    path.write_bytes(_corrupt("trailing-bytes"))
    with pytest.raises(DataFormatError, match="2 trailing byte"):
        data.read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataUnavailableError, match="nothing-here"):
        data.read_idx(tmp_path / "nothing-here")


# ---------------------------------------------------------------- folders


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_load_folder(tmp_path, compress):
    files = write_idx_folder(tmp_path / "tiny", compress=compress)
    ds = data.load_dataset("mnist", data_dir=tmp_path / "tiny")  # name is ignored with data_dir
    assert ds.name == "folder:tiny" and ds.image_shape == (4, 6)
    assert ds.train.images.shape == (20, 4, 6) and ds.test.images.shape == (10, 4, 6)
    assert ds.train.images.dtype == np.float32 and ds.train.labels.dtype == np.int64
    assert 0.0 <= ds.train.images.min() and ds.train.images.max() <= 1.0
    raw_x, raw_y = make_images(20, seed=1)
    np.testing.assert_allclose(ds.train.images, raw_x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.train.labels, raw_y)
    expected = hashlib.sha256("\n".join(sorted(sha256_of(p) for p in files.values())).encode()).hexdigest()
    assert ds.sha256 == expected
    assert ds.source == str((tmp_path / "tiny").resolve())


def test_missing_folder_or_file_names_them(tmp_path):
    with pytest.raises(DataUnavailableError, match=r"nope.*does not exist.*--data-dir DIR.*--dataset digits"):
        data.load_dataset(data_dir=tmp_path / "nope")
    files = write_idx_folder(tmp_path / "partial")
    files["test_labels"].unlink()
    with pytest.raises(DataUnavailableError, match=r"partial lacks t10k-labels-idx1-ubyte\[\.gz\]") as info:
        data.load_dataset(data_dir=tmp_path / "partial")
    assert "train-images" not in str(info.value)


def test_folder_with_inconsistent_contents(tmp_path):
    files = write_idx_folder(tmp_path / "d")
    write_idx(files["train_labels"], np.zeros(19, dtype=np.uint8), compress=True)
    with pytest.raises(DataFormatError, match="20 images but train-labels-idx1-ubyte.gz has 19 labels"):
        data.load_dataset(data_dir=tmp_path / "d")
    write_idx(files["train_labels"], np.full(20, 10, dtype=np.uint8), compress=True)
    with pytest.raises(DataFormatError, match="labels from 10 to 10; class labels 0..9"):
        data.load_dataset(data_dir=tmp_path / "d")
    write_idx(files["train_labels"], np.zeros(20, dtype=np.uint8), compress=True)
    write_idx(files["test_images"], np.zeros((10, 5, 6), dtype=np.uint8), compress=True)
    with pytest.raises(DataFormatError, match="both must have one size"):
        data.load_dataset(data_dir=tmp_path / "d")


# ---------------------------------------------------------------- downloads


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server over tmp_path/served; yields (base URL, served folder)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> pathlib.Path:
    monkeypatch.setenv("PROBE_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there once the socket is closed


def publish(monkeypatch, served: pathlib.Path, mirrors: tuple[str, ...]) -> dict[str, str]:
    """Serve a tiny IDX dataset as 'mnist' and point the module's tables at it."""
    files = write_idx_folder(served)
    sums = {p.name: sha256_of(p) for p in files.values()}
    monkeypatch.setitem(data.MIRRORS, "mnist", mirrors)
    monkeypatch.setitem(data.SHA256, "mnist", sums)
    return sums


def test_download_lands_in_cache(server, cache, monkeypatch, capsys):
    url, served = server
    sums = publish(monkeypatch, served, (url,))
    ds = data.load_dataset("mnist", progress=True)
    assert ds.name == "mnist" and ds.train.images.shape == (20, 4, 6)
    assert sorted(os.listdir(cache / "mnist")) == sorted(sums)  # no temporary file left
    assert {f: sha256_of(cache / "mnist" / f) for f in sums} == sums
    assert "train-images-idx3-ubyte.gz" in capsys.readouterr().err  # the progress bar goes to stderr
    for f in sums:
        (served / f).unlink()
    again = data.load_dataset("mnist", download=False, progress=False)  # now served from the cache
    assert again.sha256 == ds.sha256
    assert [row["cached"] for row in data.describe_datasets() if row["name"] == "mnist"] == [True]


def test_wrong_checksum_never_enters_cache(server, cache, monkeypatch):
    url, served = server
    sums = publish(monkeypatch, served, (url,))
    monkeypatch.setitem(data.SHA256, "mnist", {**sums, "train-images-idx3-ubyte.gz": "0" * 64})
    with pytest.raises(DataUnavailableError, match=r"SHA-256 mismatch.*--data-dir DIR.*--dataset digits"):
        data.load_dataset("mnist", progress=False)
    assert not (cache / "mnist" / "train-images-idx3-ubyte.gz").exists()
    assert not [f for f in os.listdir(cache / "mnist") if f.endswith(".part")]


def test_first_mirror_down_uses_second(server, cache, monkeypatch):
    url, served = server
    sums = publish(monkeypatch, served, (closed_port_url(), url + "missing/", url))
    ds = data.load_dataset("mnist", progress=False)
    assert ds.train.images.shape == (20, 4, 6)
    assert sorted(os.listdir(cache / "mnist")) == sorted(sums)


def test_unreachable_server_is_a_clear_error(cache, monkeypatch):
    dead = closed_port_url()
    monkeypatch.setitem(data.MIRRORS, "mnist", (dead,))
    with pytest.raises(DataUnavailableError) as info:
        data.load_dataset("mnist", progress=False)
    message = str(info.value)
    assert f"Could not download mnist from {dead}train-images-idx3-ubyte.gz (" in message
    assert "--data-dir DIR" in message and "--dataset digits" in message
    assert os.listdir(cache / "mnist") == []


def test_not_cached_and_download_off(cache):
    with pytest.raises(DataUnavailableError, match=r"not cached in .*cache.*--data-dir DIR.*--dataset digits"):
        data.load_dataset("fashion-mnist", download=False)


def test_corrupt_cached_file_is_reported(cache, monkeypatch, tmp_path):
    files = write_idx_folder(cache / "mnist")
    monkeypatch.setitem(data.SHA256, "mnist", {p.name: sha256_of(p) for p in files.values()})
    files["test_images"].write_bytes(b"tampered")
    with pytest.raises(DataFormatError, match="t10k-images-idx3-ubyte.gz has SHA-256 .* Delete it"):
        data.load_dataset("mnist", download=False)


def test_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PROBE_DATA_DIR", str(tmp_path))
    assert data.cache_dir() == tmp_path
    monkeypatch.delenv("PROBE_DATA_DIR")
    assert data.cache_dir() == pathlib.Path.home() / ".cache" / "probe"


def test_checksum_tables_are_complete():
    for name in ("mnist", "fashion-mnist"):
        assert sorted(data.SHA256[name]) == sorted(f + ".gz" for f in data.IDX_FILES.values())
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in data.SHA256[name].values())
        assert data.MIRRORS[name]


def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError, match="Unknown dataset 'mnsit'. Did you mean 'mnist'"):
        data.load_dataset("mnsit")
    with pytest.raises(InputTypeError):
        data.load_dataset(3)


def test_describe_datasets(cache):
    rows = {row["name"]: row for row in data.describe_datasets()}
    assert set(rows) == {"digits", "mnist", "fashion-mnist", "cifar10"}
    assert rows["digits"]["cached"] and not rows["mnist"]["cached"]
    assert rows["mnist"]["cache_path"] == str(cache / "mnist")
    assert rows["mnist"]["urls"][0].startswith("https://")
    assert all({"description", "size"} <= set(row) for row in rows.values())


# ---------------------------------------------------------------- digits and mnist-5k


def test_digits_offline():
    ds = data.load_dataset()
    assert ds.name == data.DEFAULT_DATASET == "digits" and ds.image_shape == (8, 8)
    assert ds.train.images.shape == (1347, 8, 8) and ds.test.images.shape == (450, 8, 8)
    assert ds.train.images.dtype == np.float32 and 0.0 <= ds.train.images.min() and ds.train.images.max() == 1.0
    assert np.abs(np.bincount(ds.test.labels) * 3 - np.bincount(ds.train.labels)).max() <= 3  # stratified
    assert data.load_dataset("digits").sha256 == ds.sha256  # deterministic split
    top, bottom = data.split_views(ds.train.images)
    assert top.shape == bottom.shape == (1347, 32)


@pytest.mark.skipif(not MNIST_5K.is_dir(), reason=f"mnist-5k folder not found at {MNIST_5K} "
                    "(set PROBE_TEST_MNIST_DIR or put shared/ beside the repository)")
def test_mnist_5k_folder():
    ds = data.load_dataset(data_dir=MNIST_5K)
    assert ds.name == "folder:mnist-5k" and ds.image_shape == (28, 28)
    assert ds.train.images.shape == (4000, 28, 28) and ds.test.images.shape == (1000, 28, 28)
    assert set(np.unique(ds.train.labels)) == set(range(10)) == set(np.unique(ds.test.labels))
    sums = sorted(line.split()[0] for line in (MNIST_5K / "SHA256SUMS").read_text().splitlines() if line.strip())
    assert ds.sha256 == hashlib.sha256("\n".join(sums).encode()).hexdigest()
    assert data.load_dataset(data_dir=str(MNIST_5K)).sha256 == ds.sha256
    top, bottom = data.split_views(ds.test.images)
    assert top.shape == bottom.shape == (1000, 392)


# ---------------------------------------------------------------- views and noise


def test_split_views_takes_rows():
    images = np.arange(3 * 28 * 28, dtype=np.float32).reshape(3, 28, 28)
    before = images.copy()
    top, bottom = data.split_views(images)
    assert top.shape == bottom.shape == (3, 392) and top.dtype == np.float32
    np.testing.assert_array_equal(top, images[:, :14].reshape(3, -1))
    np.testing.assert_array_equal(bottom, images[:, 14:].reshape(3, -1))
    np.testing.assert_array_equal(images, before)
    top, bottom = data.split_views(np.zeros((2, 5, 3)))  # odd height: the bottom view gets the extra row
    assert top.shape == (2, 6) and bottom.shape == (2, 9)


@pytest.mark.parametrize("bad", [np.zeros((4, 784)), np.zeros((4, 1, 5)), [[["a"]]]])
def test_split_views_rejects(bad):
    with pytest.raises((InputValueError, InputTypeError), match="split_views"):
        data.split_views(bad)


def test_add_noise_coupled_and_independent():
    rng = np.random.default_rng(0)
    v1, v2 = rng.random((500, 6)).astype(np.float32), rng.random((500, 6)).astype(np.float32)
    c1, c2 = v1.copy(), v2.copy()
    n1, n2 = data.add_noise(v1, v2, 0.05, coupled=True, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(v1, c1)
    np.testing.assert_array_equal(v2, c2)
    np.testing.assert_allclose(n1 - v1, n2 - v2, atol=1e-6)
    assert abs(float((n1 - v1).std()) - 0.05) < 0.005
    i1, i2 = data.add_noise(v1, v2, 0.05, coupled=False, rng=np.random.default_rng(1))
    assert abs(np.corrcoef((i1 - v1).ravel(), (i2 - v2).ravel())[0, 1]) < 0.1
    again = data.add_noise(v1, v2, 0.05, coupled=False, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(again[0], i1)  # same seed, same noise
    z1, z2 = data.add_noise(v1, v2, 0, coupled=True, rng=rng)
    assert z1 is not v1 and z2 is not v2
    np.testing.assert_array_equal(z1, v1)
    i1, _ = data.add_noise(v1, np.zeros((500, 3)), 0.1, coupled=False, rng=rng)  # widths may differ
    assert i1.dtype == np.float32


def test_add_noise_rejects():
    rng = np.random.default_rng(0)
    a, b = np.zeros((4, 3)), np.zeros((4, 2))
    with pytest.raises(InputValueError, match="equal width"):
        data.add_noise(a, b, 0.1, coupled=True, rng=rng)
    with pytest.raises(InputValueError, match="std is -0.1"):
        data.add_noise(a, a, -0.1, coupled=True, rng=rng)
    with pytest.raises(InputValueError, match="same number of rows"):
        data.add_noise(a, np.zeros((5, 3)), 0.1, coupled=False, rng=rng)
    with pytest.raises(InputTypeError, match="Generator"):
        data.add_noise(a, a, 0.1, coupled=True, rng=0)


# ---------------------------------------------------------------- correlated Gaussians


def test_correlated_gaussian():
    x, y = data.correlated_gaussian(20_000, 3, 0.8, np.random.default_rng(0))
    assert x.shape == y.shape == (20_000, 3) and x.dtype == y.dtype == np.float32
    corr = np.corrcoef(np.hstack([x, y]).T)
    np.testing.assert_allclose(np.diag(corr[:3, 3:]), 0.8, atol=0.01)
    off = corr - np.diag(np.diag(corr))
    off[:3, 3:] -= np.diag(np.diag(corr[:3, 3:]))
    off[3:, :3] -= np.diag(np.diag(corr[3:, :3]))
    assert np.abs(off).max() < 0.03  # independent across components
    np.testing.assert_allclose(x.std(axis=0), 1.0, atol=0.02)
    np.testing.assert_allclose(y.std(axis=0), 1.0, atol=0.02)


@pytest.mark.parametrize("mi, dim", [(0.0, 1), (0.0204, 1), (2.0, 1), (4.0, 20), (10.0, 392)])
def test_rho_for_mi_inverts_gaussian_mi(mi, dim):
    rho = data.rho_for_mi(mi, dim)
    assert 0.0 <= rho < 1.0
    assert data.gaussian_mi(rho, dim) == pytest.approx(mi, abs=1e-12, rel=1e-12)


def test_gaussian_mi_closed_form():
    # docs/reference.md experiment 6: marginal correlation 0.2 gives -1/2 ln(1 - 0.04) = 0.0204 nats.
    assert data.gaussian_mi(0.2, 1) == pytest.approx(0.020411, abs=1e-6)
    assert data.gaussian_mi(-0.5, 4) == pytest.approx(-2.0 * np.log(0.75))
    for bad in (1.0, -1.0, float("nan"), 1.5):
        with pytest.raises(InputValueError, match="strictly between -1 and 1"):
            data.gaussian_mi(bad, 1)
    with pytest.raises(InputValueError, match="mi is -1"):
        data.rho_for_mi(-1.0, 1)
    with pytest.raises(InputValueError, match="nats per component"):
        data.rho_for_mi(100.0, 1)
