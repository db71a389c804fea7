"""IDX files (MNIST, Fashion-MNIST): reading one file, and loading a folder of the four."""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import pathlib
import zlib
from collections.abc import Mapping

import numpy as np

from probe.data.containers import ImageDataset, Split
from probe.data.download import file_sha256
from probe.errors import DataFormatError, DataUnavailableError

# The four files of an IDX dataset, keyed by role; the ".gz" spelling is what the mirrors serve.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type codes (third magic byte) -> big-endian numpy dtype.
IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_FIX = "Pass --data-dir DIR with the four IDX files, or use --dataset digits (offline)."


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip-compressed or raw) into a native-endian numpy array.

    Format (LeCun's MNIST page): two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B
    int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then each
    dimension as a big-endian uint32, then the big-endian payload. Compression is detected by
    the gzip magic bytes 1f 8b, not the file name.
    """
    path = pathlib.Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise DataUnavailableError(f"read_idx: {path} does not exist.") from err
    except OSError as err:  # a directory, no permission, an I/O error
        raise DataUnavailableError(f"read_idx: {path} cannot be read ({err.strerror or err}).") from err
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise DataFormatError(
                f"read_idx: {path.name} is a corrupt gzip stream ({err}); delete it and fetch it again."
            ) from err
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise DataFormatError(
            f"read_idx: {path.name} does not start with an IDX magic number (got {raw[:4].hex(' ') or 'no bytes'}); "
            "an IDX file starts 00 00 <type 08/09/0b/0c/0d/0e> <ndim >= 1>. Is this an IDX file?"
        )
    dtype, ndim = np.dtype(IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(
            f"read_idx: {path.name} is truncated inside its header ({len(raw)} bytes; "
            f"the header of a {ndim}-D IDX file is {header} bytes)."
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        problem = "truncated" if actual < expected else f"followed by {actual - expected} trailing byte(s)"
        raise DataFormatError(
            f"read_idx: {path.name} is {problem}: its header declares shape {shape} of {dtype.name}, "
            f"which needs {expected:,} payload bytes, but {actual:,} follow the {header}-byte header. "
            "Delete it and fetch it again."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_files(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    """The four IDX files in `folder` by role, preferring the .gz spelling."""
    if not folder.is_dir():
        raise DataUnavailableError(
            f"load_dataset: data folder {folder} does not exist; it must hold "
            f"{', '.join(f + '[.gz]' for f in IDX_FILES.values())}. {IDX_FIX}")
    found, missing = {}, []
    for role, stem in IDX_FILES.items():
        # The gzip file first: it is what the mirrors serve and what the checksums describe.
        hit = next((folder / f for f in (stem + ".gz", stem) if (folder / f).is_file()), None)
        if hit is None:
            missing.append(stem + "[.gz]")
        else:
            found[role] = hit
    if missing:
        raise DataUnavailableError(f"load_dataset: data folder {folder} lacks {', '.join(missing)}. {IDX_FIX}")
    return found


def load_idx_folder(folder: pathlib.Path, *, name: str, source: str,
                    expected: Mapping[str, str] | None = None) -> ImageDataset:
    """Load the four IDX files in `folder`; `expected` (file name -> SHA-256) checks a cached copy."""
    files = find_idx_files(folder)
    sums = {role: file_sha256(path) for role, path in files.items()}
    for role, path in files.items():
        want = (expected or {}).get(path.name)
        if want is not None and sums[role] != want:
            raise DataFormatError(
                f"load_dataset: cached {path} has SHA-256 {sums[role]}, expected {want}; "
                "the copy is corrupt or was replaced. Delete it to download a fresh copy.")
    arrays = {role: read_idx(path) for role, path in files.items()}
    splits = {part: _idx_split(arrays, files, part) for part in ("train", "test")}
    if splits["train"].images.shape[1:] != splits["test"].images.shape[1:]:
        raise DataFormatError(f"load_dataset: train images are {splits['train'].images.shape[1:]} but test images "
                              f"are {splits['test'].images.shape[1:]} in {folder}; both must have one size.")
    combined = hashlib.sha256("\n".join(sorted(sums.values())).encode()).hexdigest()
    height, width = splits["train"].images.shape[1:]
    return ImageDataset(name=name, train=splits["train"], test=splits["test"], sha256=combined,
                        source=source, image_shape=(int(height), int(width)))


def _idx_split(arrays: dict[str, np.ndarray], files: dict[str, pathlib.Path], part: str) -> Split:
    images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
    img_name, lab_name = files[f"{part}_images"].name, files[f"{part}_labels"].name
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(f"load_dataset: {img_name} holds {images.dtype} of shape {images.shape}; "
                              "images must be ubyte (type 08) of shape (n, H, W).")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataFormatError(f"load_dataset: {lab_name} holds {labels.dtype} of shape {labels.shape}; "
                              "labels must be integers of shape (n,).")
    if labels.shape[0] != images.shape[0]:
        raise DataFormatError(f"load_dataset: {img_name} has {images.shape[0]:,} images but {lab_name} has "
                              f"{labels.shape[0]:,} labels; they must match one to one.")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataFormatError(f"load_dataset: {lab_name} has labels from {labels.min()} to {labels.max()}; "
                              "class labels 0..9 are required.")
    return Split(np.true_divide(images, np.float32(255), dtype=np.float32), labels.astype(np.int64))
