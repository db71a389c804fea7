"""Tests for probe.data's CIFAR-10 reader: binary batches, folders, the checked download, the views."""
from __future__ import annotations

import functools
import hashlib
import http.server
import os
import pathlib
import re
import tarfile
import threading

import numpy as np
import pytest

from probe import data
from probe.data import cifar10
from probe.errors import DataFormatError, DataUnavailableError

# A few records per batch file: enough to tell files, records and channels apart.
COUNTS = {"data_batch_1.bin": 3, "data_batch_2.bin": 2, "data_batch_3.bin": 1, "data_batch_4.bin": 2,
          "data_batch_5.bin": 1, "test_batch.bin": 4}


def encode(images: np.ndarray, labels: np.ndarray) -> bytes:
    """Encode (n, 32, 32, 3) uint8 images as CIFAR-10 records, written independently of the
    reader: per record the label byte, then the red, green and blue planes, each row by row."""
    out = bytearray()
    for image, label in zip(images, labels):
        out.append(int(label))
        for channel in range(3):
            for row in range(32):
                out += bytes(int(v) for v in image[row, :, channel])
    return bytes(out)


def make_batch(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def write_batches(folder: pathlib.Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write the six batch files (COUNTS records each); return each file's images and labels."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for seed, (filename, n) in enumerate(COUNTS.items()):
        arrays[filename] = make_batch(n, seed)
        (folder / filename).write_bytes(encode(*arrays[filename]))
    (folder / "batches.meta.txt").write_text("airplane\nautomobile\n")  # shipped too; ignored
    return arrays


def write_archive(path: pathlib.Path, source: pathlib.Path, skip: tuple[str, ...] = ()) -> pathlib.Path:
    with tarfile.open(path, "w:gz") as tar:
        for file in sorted(source.iterdir()):
            if file.name not in skip:
                tar.add(file, arcname=f"cifar-10-batches-bin/{file.name}")
    return path


def sha256_of(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def folder_id(folder: pathlib.Path) -> str:
    sums = sorted(sha256_of(folder / f) for f in COUNTS)
    return hashlib.sha256("\n".join(sums).encode()).hexdigest()


# ---------------------------------------------------------------- the reader


def test_read_batch_is_channel_major_to_hwc(tmp_path):
    images, labels = make_batch(3, seed=7)
    raw = encode(images, labels)
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(raw)
    got_images, got_labels = data.read_cifar10_batch(path)
    assert got_images.shape == (3, 32, 32, 3) and got_images.dtype == np.uint8
    assert got_labels.dtype == np.int64
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    # record i, channel c, row r, column w sits at byte i*3073 + 1 + c*1024 + r*32 + w
    i, c, r, w = 2, 1, 5, 30
    assert got_images[i, r, w, c] == raw[i * 3073 + 1 + c * 1024 + r * 32 + w]


@pytest.mark.parametrize("inside", [False, True], ids=["bin-files", "batches-folder"])
def test_load_folder(tmp_path, inside):
    bins = tmp_path / "cifar" / ("cifar-10-batches-bin" if inside else "")
    arrays = write_batches(bins)
    ds = data.load_dataset(data_dir=tmp_path / "cifar")
    assert ds.name == "folder:cifar10:cifar" and ds.image_shape == (32, 32, 3)  # named for what it holds
    assert ds.train.images.shape == (9, 32, 32, 3) and ds.test.images.shape == (4, 32, 32, 3)
    assert ds.train.images.dtype == np.float32 and ds.train.labels.dtype == np.int64
    assert ds.train.images.flags.c_contiguous and ds.test.images.flags.c_contiguous
    train = np.concatenate([arrays[f][0] for f in cifar10.TRAIN_FILES])
    np.testing.assert_allclose(ds.train.images, train / 255.0, rtol=1e-6)
    np.testing.assert_allclose(ds.test.images, arrays["test_batch.bin"][0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.train.labels, np.concatenate([arrays[f][1] for f in cifar10.TRAIN_FILES]))
    assert 0.0 <= ds.train.images.min() and ds.train.images.max() <= 1.0
    assert ds.sha256 == folder_id(bins) and ds.source == str(bins.resolve())
    assert data.load_dataset("cifar10", data_dir=bins).sha256 == ds.sha256  # the bin folder itself too


def test_split_views_keeps_channels_in_hwc_order(tmp_path):
    write_batches(tmp_path / "c")
    images = data.load_dataset(data_dir=tmp_path / "c").test.images
    top, bottom = data.split_views(images)
    assert top.shape == bottom.shape == (4, 16 * 32 * 3) == (4, 1536) and top.dtype == np.float32
    np.testing.assert_array_equal(top, images[:, :16].reshape(4, -1))
    np.testing.assert_array_equal(bottom, images[:, 16:].reshape(4, -1))
    np.testing.assert_array_equal(top[0, :6], images[0, 0, :2, :].ravel())  # R, G, B of pixel (0, 0), then (0, 1)
    np.testing.assert_array_equal(bottom[1, :3], images[1, 16, 0])
    odd_top, odd_bottom = data.split_views(np.zeros((2, 5, 4, 3), dtype=np.float32))
    assert odd_top.shape == (2, 24) and odd_bottom.shape == (2, 36)  # the bottom view gets the extra row


# ---------------------------------------------------------------- bad inputs


def test_truncated_record_names_file_and_fix(tmp_path):
    bins = tmp_path / "c"
    write_batches(bins)
    path = bins / "data_batch_2.bin"
    path.write_bytes(path.read_bytes()[:-100])  # 2 records less 100 bytes
    message = ("read_cifar10_batch: data_batch_2.bin is 6,046 bytes, not a whole number of records: 1 record(s) "
               "and 2,973 byte(s) of a truncated one; a CIFAR-10 batch holds whole 3,073-byte records (1 label "
               "byte + 3,072 pixel bytes), 10,000 of them (30,730,000 bytes) in each official file. Delete it and "
               "extract cifar-10-binary.tar.gz again.")
    with pytest.raises(DataFormatError, match=re.escape(message)):
        data.load_dataset(data_dir=bins)
    with pytest.raises(DataFormatError, match=re.escape(message)):
        data.read_cifar10_batch(path)
    path.write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"data_batch_2.bin is empty \(0 bytes\)"):
        data.load_dataset(data_dir=bins)


def test_label_out_of_range_names_file_and_record(tmp_path):
    bins = tmp_path / "c"
    write_batches(bins)
    raw = bytearray((bins / "test_batch.bin").read_bytes())
    raw[2 * 3073] = 11  # the label byte of record 2
    (bins / "test_batch.bin").write_bytes(bytes(raw))
    message = ("read_cifar10_batch: test_batch.bin has label 11 in record 2 (of 4; 1 bad in all); CIFAR-10 labels "
               "are 0..9, the first byte of each 3,073-byte record. Is it a CIFAR-100 file (2 label bytes, "
               "3,074-byte records)? Delete it and extract cifar-10-binary.tar.gz again.")
    with pytest.raises(DataFormatError, match=re.escape(message)):
        data.load_dataset(data_dir=bins)


def test_missing_batch_file_names_it(tmp_path):
    bins = tmp_path / "cifar-10-batches-bin"
    write_batches(bins)
    (bins / "data_batch_3.bin").unlink()
    message = (f"load_dataset: CIFAR-10 folder {bins} lacks data_batch_3.bin; all six batch files are required, "
               "data_batch_1.bin ... data_batch_5.bin (train) and test_batch.bin (test). Extract all of "
               "cifar-10-binary.tar.gz there, or use --dataset cifar10 to download it into the cache.")
    with pytest.raises(DataUnavailableError, match=re.escape(message)):
        data.load_dataset(data_dir=tmp_path)  # found through the cifar-10-batches-bin folder
    with pytest.raises(DataUnavailableError, match=re.escape(message)):
        data.load_dataset(data_dir=bins)
    with pytest.raises(DataUnavailableError, match=r"nowhere does not exist; it must hold data_batch_1.bin"):
        data.load_dataset("cifar10", data_dir=tmp_path / "nowhere")


# ---------------------------------------------------------------- the checked download


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; under /truncated/ it announces the whole file but sends half, then hangs up."""

    def do_GET(self) -> None:
        if not self.path.startswith("/truncated/"):
            return super().do_GET()
        body = (pathlib.Path(self.directory) / self.path.removeprefix("/truncated/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server over tmp_path/served; yields (base URL, served folder)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    served = tmp_path / "served"
    served.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> pathlib.Path:
    monkeypatch.setenv("PROBE_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def publish(monkeypatch, tmp_path: pathlib.Path, served: pathlib.Path, mirrors: tuple[str, ...]) -> pathlib.Path:
    """Serve a tiny archive as cifar10 and point the tables at it; return the extracted folder."""
    bins = tmp_path / "bins"
    write_batches(bins)
    archive = write_archive(served / cifar10.ARCHIVE, bins)
    monkeypatch.setitem(data.MIRRORS, "cifar10", mirrors)
    monkeypatch.setitem(data.SHA256, "cifar10", {cifar10.ARCHIVE: sha256_of(archive)})
    return bins


def test_download_lands_in_cache_once(server, cache, monkeypatch, tmp_path):
    url, served = server
    bins = publish(monkeypatch, tmp_path, served, (url,))
    ds = data.load_dataset("cifar10", progress=False)
    assert ds.name == "cifar10" and ds.image_shape == (32, 32, 3) and len(ds.train) == 9 and len(ds.test) == 4
    assert os.listdir(cache / "cifar10") == [cifar10.ARCHIVE]  # no temporary file, nothing extracted
    assert sha256_of(cache / "cifar10" / cifar10.ARCHIVE) == data.SHA256["cifar10"][cifar10.ARCHIVE]
    assert ds.sha256 == folder_id(bins)  # the archive and its extracted files have one id
    (served / cifar10.ARCHIVE).unlink()
    again = data.load_dataset("cifar10", download=False)  # from the cache now
    assert again.sha256 == ds.sha256
    np.testing.assert_array_equal(again.train.images, ds.train.images)
    assert [row["cached"] for row in data.describe_datasets() if row["name"] == "cifar10"] == [True]


def test_wrong_checksum_never_enters_cache(server, cache, monkeypatch, tmp_path):
    url, served = server
    publish(monkeypatch, tmp_path, served, (url,))
    monkeypatch.setitem(data.SHA256, "cifar10", {cifar10.ARCHIVE: "0" * 64})
    with pytest.raises(DataUnavailableError, match=r"Could not download cifar10 from .*SHA-256 mismatch.*"
                                                   r"--data-dir DIR with the six extracted CIFAR-10 .bin files"):
        data.load_dataset("cifar10", progress=False)
    assert os.listdir(cache / "cifar10") == []


def test_truncated_download_never_enters_cache(server, cache, monkeypatch, tmp_path):
    url, served = server
    publish(monkeypatch, tmp_path, served, (url + "truncated/",))
    with pytest.raises(DataUnavailableError, match=r"truncated/cifar-10-binary.tar.gz \(truncated: received "
                                                   r"[\d,]+ of the [\d,]+ bytes the server announced\)"):
        data.load_dataset("cifar10", progress=False)
    assert os.listdir(cache / "cifar10") == []
    monkeypatch.setitem(data.MIRRORS, "cifar10", (url + "truncated/", url))  # the next mirror serves it whole
    assert len(data.load_dataset("cifar10", progress=False).test) == 4
    assert os.listdir(cache / "cifar10") == [cifar10.ARCHIVE]


def test_corrupt_or_incomplete_cached_archive(cache, monkeypatch, tmp_path):
    bins = tmp_path / "bins"
    write_batches(bins)
    (cache / "cifar10").mkdir(parents=True)
    archive = write_archive(cache / "cifar10" / cifar10.ARCHIVE, bins, skip=("test_batch.bin",))
    monkeypatch.setitem(data.SHA256, "cifar10", {cifar10.ARCHIVE: sha256_of(archive)})
    with pytest.raises(DataFormatError, match=r"lacks cifar-10-batches-bin/test_batch.bin.*Delete it"):
        data.load_dataset("cifar10", download=False)
    archive.write_bytes(b"tampered")
    with pytest.raises(DataFormatError, match=r"cifar-10-binary.tar.gz has SHA-256 .*Delete it to download"):
        data.load_dataset("cifar10", download=False)
    monkeypatch.setitem(data.SHA256, "cifar10", {cifar10.ARCHIVE: sha256_of(archive)})
    with pytest.raises(DataFormatError, match=r"is not a readable .tar.gz archive"):
        data.load_dataset("cifar10", download=False)


def test_not_cached_and_download_off(cache):
    with pytest.raises(DataUnavailableError, match=r"cifar10 is not cached in .*cifar10 \(missing "
                                                   r"cifar-10-binary.tar.gz\) and downloading is off"):
        data.load_dataset("cifar10", download=False)


def test_listed_with_official_source(cache):
    row = {r["name"]: r for r in data.describe_datasets()}["cifar10"]
    assert row["urls"][0] == "https://www.cs.toronto.edu/~kriz/" and not row["cached"]
    assert row["cache_path"] == str(cache / "cifar10") and "32x32x3" in row["size"]
    assert list(data.SHA256["cifar10"]) == ["cifar-10-binary.tar.gz"]
    assert data.SHA256["cifar10"]["cifar-10-binary.tar.gz"].startswith("c4a38c50")
