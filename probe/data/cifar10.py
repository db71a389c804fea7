"""CIFAR-10 in its binary distribution (Krizhevsky 2009), read without unpickling anything.

`cifar-10-binary.tar.gz` holds `cifar-10-batches-bin/` with `data_batch_1.bin` ...
`data_batch_5.bin` (train, 50,000 images) and `test_batch.bin` (test, 10,000). Each file is a
run of 3,073-byte records: one label byte (0..9), then 3,072 pixel bytes, channel-major (1,024
red, 1,024 green, 1,024 blue), each channel row-major 32x32. The official files hold 10,000
records each; smaller files (tests, subsets) are read too, as long as they hold whole records.

Images come back as float32 in [0, 1] of shape (n, 32, 32, 3), channels last.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import tarfile
import zlib

import numpy as np

from probe.data.containers import ImageDataset, Split
from probe.data.download import file_sha256
from probe.errors import DataFormatError, DataUnavailableError

ARCHIVE = "cifar-10-binary.tar.gz"
BATCHES_FOLDER = "cifar-10-batches-bin"
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
BATCH_FILES = (*TRAIN_FILES, TEST_FILE)
HEIGHT, WIDTH, CHANNELS = 32, 32, 3
RECORD_BYTES = 1 + CHANNELS * HEIGHT * WIDTH  # 3,073
OFFICIAL_RECORDS = 10_000  # per batch file
CIFAR10_FIX = "Pass --data-dir DIR with the six extracted CIFAR-10 .bin files, or use --dataset digits (offline)."
_ALL_SIX = "data_batch_1.bin ... data_batch_5.bin (train) and test_batch.bin (test)"
_RECORD = (f"whole {RECORD_BYTES:,}-byte records (1 label byte + {RECORD_BYTES - 1:,} pixel bytes), "
           f"{OFFICIAL_RECORDS:,} of them ({OFFICIAL_RECORDS * RECORD_BYTES:,} bytes) in each official file")
_REEXTRACT = f"Delete it and extract {ARCHIVE} again."


def read_cifar10_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file: images uint8 (n, 32, 32, 3) and labels int64 (n,)."""
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise DataUnavailableError(f"read_cifar10_batch: {path} does not exist.") from err
    except OSError as err:  # a directory, no permission, an I/O error
        raise DataUnavailableError(f"read_cifar10_batch: {path} cannot be read ({err.strerror or err}).") from err
    return decode_batch(raw, name=path.name)


def decode_batch(raw: bytes, *, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode the bytes of one batch file called `name` (for messages); see `read_cifar10_batch`.

    The images are a channels-last view into `raw`, not a copy.
    """
    count, extra = divmod(len(raw), RECORD_BYTES)
    if not raw:
        raise DataFormatError(f"read_cifar10_batch: {name} is empty (0 bytes); a CIFAR-10 batch holds {_RECORD}. "
                              f"{_REEXTRACT}")
    if extra:
        raise DataFormatError(
            f"read_cifar10_batch: {name} is {len(raw):,} bytes, not a whole number of records: {count:,} record(s) "
            f"and {extra:,} byte(s) of a truncated one; a CIFAR-10 batch holds {_RECORD}. {_REEXTRACT}")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(count, RECORD_BYTES)
    labels = records[:, 0]
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        first = int(bad[0])
        raise DataFormatError(
            f"read_cifar10_batch: {name} has label {labels[first]} in record {first:,} (of {count:,}; "
            f"{bad.size:,} bad in all); CIFAR-10 labels are 0..9, the first byte of each {RECORD_BYTES:,}-byte "
            f"record. Is it a CIFAR-100 file (2 label bytes, 3,074-byte records)? {_REEXTRACT}")
    images = records[:, 1:].reshape(count, CHANNELS, HEIGHT, WIDTH).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int64)


def looks_like_cifar10(folder: pathlib.Path) -> bool:
    """Whether `folder` holds any CIFAR-10 batch file, or a cifar-10-batches-bin folder."""
    return (folder / BATCHES_FOLDER).is_dir() or any((folder / f).is_file() for f in BATCH_FILES)


def find_cifar10_files(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """The six batch files in `folder`, or in the cifar-10-batches-bin folder inside it."""
    if not folder.is_dir():
        raise DataUnavailableError(
            f"load_dataset: data folder {folder} does not exist; it must hold {_ALL_SIX}, or the "
            f"{BATCHES_FOLDER} folder holding them. {CIFAR10_FIX}")
    here = folder
    if (folder / BATCHES_FOLDER).is_dir() and not any((folder / f).is_file() for f in BATCH_FILES):
        here = folder / BATCHES_FOLDER
    missing = [f for f in BATCH_FILES if not (here / f).is_file()]
    if missing:
        raise DataUnavailableError(
            f"load_dataset: CIFAR-10 folder {here} lacks {', '.join(missing)}; all six batch files are required, "
            f"{_ALL_SIX}. Extract all of {ARCHIVE} there, or use --dataset cifar10 to download it into the cache.")
    return {f: here / f for f in BATCH_FILES}


def load_cifar10_folder(folder: pathlib.Path, *, name: str) -> ImageDataset:
    """Load the six extracted batch files from `folder` (see `find_cifar10_files`)."""
    files = find_cifar10_files(folder)
    raws = {}
    for filename, path in files.items():
        try:
            raws[filename] = path.read_bytes()
        except OSError as err:
            raise DataUnavailableError(f"load_dataset: {path} cannot be read ({err.strerror or err}).") from err
    return build_dataset(raws, name=name, source=str(files[TEST_FILE].parent.resolve()))


def load_cifar10_archive(path: pathlib.Path, *, name: str, expected_sha256: str | None = None) -> ImageDataset:
    """Load the batches straight from `cifar-10-binary.tar.gz` (nothing is extracted to disk),
    after checking the archive against `expected_sha256` when given."""
    if expected_sha256 is not None:
        got = file_sha256(path)
        if got != expected_sha256:
            raise DataFormatError(
                f"load_dataset: cached {path} has SHA-256 {got}, expected {expected_sha256}; "
                "the copy is corrupt or was replaced. Delete it to download a fresh copy.")
    return build_dataset(read_archive(path), name=name, source=str(path), prefix=f"{path.name}:{BATCHES_FOLDER}/")


def read_archive(path: pathlib.Path) -> dict[str, bytes]:
    """The bytes of the six batch files in the archive, by file name."""
    wanted = {f"{BATCHES_FOLDER}/{f}": f for f in BATCH_FILES}
    raws: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:  # one pass: a .tar.gz can only be read front to back
                if member.name in wanted and member.isfile():
                    raws[wanted[member.name]] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise DataFormatError(f"load_dataset: {path} is not a readable .tar.gz archive ({err}); "
                              "delete it to download a fresh copy.") from err
    missing = [name for name, f in wanted.items() if f not in raws]
    if missing:
        raise DataFormatError(f"load_dataset: {path} lacks {', '.join(missing)}; the CIFAR-10 binary archive holds "
                              f"all six batch files in {BATCHES_FOLDER}/. Delete it to download a fresh copy.")
    return raws


def build_dataset(raws: dict[str, bytes], *, name: str, source: str, prefix: str = "") -> ImageDataset:
    """The dataset from the six files' bytes (file name -> bytes); `prefix` goes before file
    names in messages. `sha256` hashes the six files' SHA-256s, so an archive and a folder
    extracted from it give the same id."""
    decoded = {f: decode_batch(raw, name=prefix + f) for f, raw in raws.items()}
    train_images = np.concatenate([decoded[f][0] for f in TRAIN_FILES])
    train_labels = np.concatenate([decoded[f][1] for f in TRAIN_FILES])
    test_images, test_labels = decoded[TEST_FILE]
    sums = sorted(hashlib.sha256(raws[f]).hexdigest() for f in BATCH_FILES)
    return ImageDataset(
        name=name, train=Split(_to_unit_float(train_images), train_labels),
        test=Split(_to_unit_float(test_images), test_labels),
        sha256=hashlib.sha256("\n".join(sums).encode()).hexdigest(), source=source,
        image_shape=(HEIGHT, WIDTH, CHANNELS),
    )


def _to_unit_float(images: np.ndarray) -> np.ndarray:
    out = np.empty(images.shape, dtype=np.float32)  # C-contiguous, whatever the input's strides
    np.divide(images, np.float32(255), out=out)
    return out
