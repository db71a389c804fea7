"""Image datasets, the two-view split, and correlated Gaussians with known MI.

Tschannen et al. (ICLR 2020), Sec. 3: each MNIST image is cut into a top half (view 1, the
first 14 rows, 392 pixels) and a bottom half (view 2). `load_dataset` gives the images as
float32 in [0, 1]; `split_views` cuts them; `add_noise` adds the Gaussian noise of Fig. 2.
`correlated_gaussian` and `gaussian_mi` give pairs whose true MI is known in closed form, to
check the estimators against.

Datasets:
- "digits": scikit-learn's bundled 8x8 digits. Offline, always available; the default so that
  every command and test runs without a network.
- "mnist", "fashion-mnist": the four standard IDX files, cached under `cache_dir()/<name>/`
  and downloaded on first use. Each download is checked against the SHA-256 below before it
  enters the cache.
- any folder holding the four IDX files (`--data-dir DIR`), e.g. `shared/data/mnist-5k`.
"""
from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import pathlib
import sys
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass

import numpy as np

from probe.errors import DataFormatError, DataUnavailableError, InputTypeError, InputValueError, unknown_name
from probe.validation import check_array, check_positive_int

DEFAULT_DATASET = "digits"

# The four files of an IDX dataset, keyed by role; the ".gz" spelling is what the mirrors serve.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Tried in order; a file is taken from the first mirror that serves it with the right checksum.
# yann.lecun.com comes second because it has often refused robots (HTTP 403) since 2023.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}

# SHA-256 of the gzip files as the mirrors serve them. Sources, which agree with each other:
# tensorflow/datasets url_checksums/mnist.txt and fashion_mnist.txt (with the byte sizes noted
# below), and several independent download scripts on GitHub. torchvision's MD5s for the same
# files (MNIST f68b3c2d.., d53e105e.., 9fb629c4.., ec29112d..; Fashion-MNIST 8d4fb7e6..,
# 25c81989.., bef4ecab.., bb300cfd..) are listed beside the same SHA-256s in several of those.
SHA256: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",  # 9,912,422 B
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",  # 28,881 B
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",  # 1,648,877 B
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",  # 4,542 B
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",  # 26,421,880 B
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",  # 29,515 B
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",  # 4,422,102 B
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",  # 5,148 B
    },
}

_DESCRIPTIONS = {
    "digits": ("scikit-learn's bundled 8x8 handwritten digits (offline); stratified 75/25 split",
               "1,797 images (1,347 train / 450 test), 8x8"),
    "mnist": ("MNIST handwritten digits (LeCun, Cortes, Burges); the paper's dataset",
              "70,000 images (60,000 train / 10,000 test), 28x28; 11.6 MB download"),
    "fashion-mnist": ("Fashion-MNIST clothing images (Xiao, Rasul, Vollgraf 2017)",
                      "70,000 images (60,000 train / 10,000 test), 28x28; 30.9 MB download"),
}
KNOWN_DATASETS = tuple(_DESCRIPTIONS)

# IDX type codes (third magic byte) -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
DOWNLOAD_TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_FIX = "Pass --data-dir DIR with the four IDX files, or use --dataset digits (offline)."


def cache_dir() -> pathlib.Path:
    """Folder that holds downloaded datasets: `$PROBE_DATA_DIR` if set, else `~/.cache/probe`."""
    env = os.environ.get("PROBE_DATA_DIR", "").strip()
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "probe"


@dataclass(frozen=True, eq=False)  # eq=False: `==` on arrays is elementwise, not a bool
class Split:
    """One split: `images` float32 (n, H, W) in [0, 1]; `labels` int64 (n,) class ids."""

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.dtype != np.float32:
            raise InputValueError(
                f"Split: images has dtype {self.images.dtype} (shape={self.images.shape}); "
                "float32 of shape (n, H, W) is required."
            )
        if self.labels.shape != (self.images.shape[0],) or self.labels.dtype != np.int64:
            raise InputValueError(
                f"Split: labels has dtype {self.labels.dtype} (shape={self.labels.shape}); "
                f"int64 of shape ({self.images.shape[0]},) is required, one label per image."
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return f"Split(n={len(self)}, image_shape={self.images.shape[1:]})"


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image dataset with a fixed train/test split.

    `sha256` identifies the exact data: for IDX files, the SHA-256 of the four files' SHA-256
    hex digests, sorted and joined by newlines (so it can be checked by hand from a SHA256SUMS
    file); for "digits", the SHA-256 of the four arrays' little-endian bytes.
    """

    name: str
    train: Split
    test: Split
    sha256: str
    source: str
    image_shape: tuple[int, int]

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, train={len(self.train)}, test={len(self.test)}, "
                f"image_shape={self.image_shape}, sha256={self.sha256[:12]}...)")


def load_dataset(
    name: str | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> ImageDataset:
    """Load a dataset by name, or the four IDX files in `data_dir`.

    With `data_dir`, `name` is ignored and the result is named "folder:<basename>". Otherwise
    `name` (default "digits") is one of `KNOWN_DATASETS`; "mnist" and "fashion-mnist" come
    from the cache, downloaded into it first when missing and `download` is true.
    """
    if name is not None and not isinstance(name, str):
        raise InputTypeError(f"load_dataset: name must be a string, got {type(name).__name__} {name!r}.")
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise InputTypeError(f"load_dataset: data_dir must be a path, got {type(data_dir).__name__}.")
        folder = pathlib.Path(data_dir).expanduser()
        return _load_idx_folder(folder, name=f"folder:{folder.resolve().name}", source=str(folder.resolve()))
    key = (name or DEFAULT_DATASET).strip().lower()
    if key not in KNOWN_DATASETS:
        raise unknown_name("dataset", name, KNOWN_DATASETS)
    if key == "digits":
        return _load_digits()
    folder = _ensure_cached(key, download=download, progress=progress)
    return _load_idx_folder(folder, name=key, source=str(folder), expected=SHA256[key])


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
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataFormatError(
            f"read_idx: {path.name} does not start with an IDX magic number (got {raw[:4].hex(' ') or 'no bytes'}); "
            "an IDX file starts 00 00 <type 08/09/0b/0c/0d/0e> <ndim >= 1>. Is this an IDX file?"
        )
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
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


def split_views(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut images (n, H, W) into the paper's two views, each flattened and float32.

    Returns (top, bottom): top is the first H//2 rows, (n, (H//2)*W); bottom the remaining
    rows, (n, (H - H//2)*W) (the same width when H is even: 392 + 392 for MNIST, 32 + 32 for
    digits).
    """
    arr = check_array(images, name="images", caller="split_views", ndim=3, min_samples=1, dtype=np.float32)
    n, height, width = arr.shape
    if height < 2:
        raise InputValueError(f"split_views: images have {height} row(s) (shape={arr.shape}); at least 2 are required.")
    half = height // 2
    return arr[:, :half].reshape(n, half * width), arr[:, half:].reshape(n, (height - half) * width)


def add_noise(
    view1: np.ndarray,
    view2: np.ndarray,
    std: float,
    *,
    coupled: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Add Gaussian noise of standard deviation `std` to both views; returns new float32 arrays.

    `coupled=True` adds the same noise vector to row i of both views (Tschannen et al., Fig. 2:
    the shared noise is information the two halves have in common, so an MI objective is
    rewarded for keeping it); this needs equal widths. `coupled=False` draws independently.
    The inputs (n, d1) and (n, d2) are never modified.
    """
    x = check_array(view1, name="view1", caller="add_noise", min_samples=1, dtype=np.float32)
    y = check_array(view2, name="view2", caller="add_noise", min_samples=1, dtype=np.float32)
    if not isinstance(rng, np.random.Generator):
        raise InputTypeError(f"add_noise: rng must be a numpy Generator, got {type(rng).__name__}. "
                             "Use np.random.default_rng(seed).")
    if isinstance(std, bool) or not isinstance(std, (int, float, np.floating, np.integer)):
        raise InputTypeError(f"add_noise: std must be a number, got {type(std).__name__} {std!r}.")
    if not math.isfinite(std) or std < 0:
        raise InputValueError(f"add_noise: std is {std}; a finite value >= 0 is required.")
    if x.shape[0] != y.shape[0]:
        raise InputValueError(f"add_noise: view1 has {x.shape[0]} rows but view2 has {y.shape[0]}; "
                              "paired views must have the same number of rows.")
    if coupled and x.shape[1] != y.shape[1]:
        raise InputValueError(
            f"add_noise: coupled noise needs views of equal width, got {x.shape[1]} and {y.shape[1]}; "
            "the same noise vector is added to both. Use coupled=False, or an even image height."
        )
    if std == 0:
        return x, y  # check_array already returned copies
    noise = rng.standard_normal(x.shape, dtype=np.float32) * np.float32(std)
    x += noise
    y += noise if coupled else rng.standard_normal(y.shape, dtype=np.float32) * np.float32(std)
    return x, y


def correlated_gaussian(n: int, dim: int, rho: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draw n pairs (x, y), each (n, dim) float32, standard normal per component, with
    corr(x_i, y_i) = rho and components independent across i; I(X; Y) = gaussian_mi(rho, dim)."""
    n = check_positive_int(n, name="n", caller="correlated_gaussian")
    dim = check_positive_int(dim, name="dim", caller="correlated_gaussian")
    rho = _check_rho(rho, caller="correlated_gaussian")
    if not isinstance(rng, np.random.Generator):
        raise InputTypeError(f"correlated_gaussian: rng must be a numpy Generator, got {type(rng).__name__}.")
    x = rng.standard_normal((n, dim))
    y = rho * x + math.sqrt(1.0 - rho * rho) * rng.standard_normal((n, dim))
    return x.astype(np.float32), y.astype(np.float32)


def gaussian_mi(rho: float, dim: int) -> float:
    """MI in nats of `dim` independent bivariate normal pairs with correlation rho:
    -dim/2 * ln(1 - rho^2) (Cover & Thomas, Example 8.5.1)."""
    rho = _check_rho(rho, caller="gaussian_mi")
    dim = check_positive_int(dim, name="dim", caller="gaussian_mi")
    return -0.5 * dim * math.log1p(-rho * rho)


def rho_for_mi(mi: float, dim: int) -> float:
    """The correlation rho >= 0 for which gaussian_mi(rho, dim) == mi (mi in nats, >= 0)."""
    dim = check_positive_int(dim, name="dim", caller="rho_for_mi")
    if isinstance(mi, bool) or not isinstance(mi, (int, float, np.floating, np.integer)):
        raise InputTypeError(f"rho_for_mi: mi must be a number, got {type(mi).__name__} {mi!r}.")
    if not math.isfinite(mi) or mi < 0:
        raise InputValueError(f"rho_for_mi: mi is {mi}; a finite value >= 0 nats is required.")
    rho = math.sqrt(-math.expm1(-2.0 * mi / dim))
    if rho >= 1.0:  # mi/dim above about 18 nats: 1 - rho^2 underflows float64
        raise InputValueError(f"rho_for_mi: mi={mi} nats over dim={dim} is {mi / dim:.1f} nats per component; "
                              "at most about 18 is representable. Use a larger dim.")
    return rho


def describe_datasets() -> list[dict]:
    """One dict per known dataset for `probe datasets`: name, description, size, cached
    (bool), cache_path (str, or None for the bundled digits) and urls (list of str)."""
    rows = []
    for name, (description, size) in _DESCRIPTIONS.items():
        if name == "digits":
            rows.append(dict(name=name, description=description, size=size, cached=True,
                             cache_path=None, urls=[]))
            continue
        folder = cache_dir() / name
        rows.append(dict(
            name=name, description=description, size=size,
            cached=all((folder / f).is_file() for f in SHA256[name]),
            cache_path=str(folder), urls=list(MIRRORS[name]),
        ))
    return rows


# ---------------------------------------------------------------- loading helpers


def _check_rho(rho: float, *, caller: str) -> float:
    if isinstance(rho, bool) or not isinstance(rho, (int, float, np.floating, np.integer)):
        raise InputTypeError(f"{caller}: rho must be a number, got {type(rho).__name__} {rho!r}.")
    if not -1.0 < rho < 1.0:  # also rejects NaN
        raise InputValueError(f"{caller}: rho is {rho}; a value strictly between -1 and 1 is required "
                              "(at |rho| = 1 the mutual information is infinite).")
    return float(rho)


def _load_digits() -> ImageDataset:
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)  # pixel values are 0..16
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels)
    digest = hashlib.sha256()
    for arr in (x_train, y_train, x_test, y_test):
        digest.update(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
    return ImageDataset(
        name="digits", train=Split(x_train, y_train), test=Split(x_test, y_test), sha256=digest.hexdigest(),
        source=f"sklearn.datasets.load_digits (scikit-learn {sklearn.__version__})", image_shape=(8, 8),
    )


def _find_idx_files(folder: pathlib.Path) -> dict[str, pathlib.Path]:
    if not folder.is_dir():
        raise DataUnavailableError(
            f"load_dataset: data folder {folder} does not exist; it must hold "
            f"{', '.join(f + '[.gz]' for f in IDX_FILES.values())}. {_FIX}")
    found, missing = {}, []
    for role, stem in IDX_FILES.items():
        # The gzip file first: it is what the mirrors serve and what the checksums describe.
        hit = next((folder / f for f in (stem + ".gz", stem) if (folder / f).is_file()), None)
        if hit is None:
            missing.append(stem + "[.gz]")
        else:
            found[role] = hit
    if missing:
        raise DataUnavailableError(f"load_dataset: data folder {folder} lacks {', '.join(missing)}. {_FIX}")
    return found


def _file_sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _load_idx_folder(folder: pathlib.Path, *, name: str, source: str,
                     expected: dict[str, str] | None = None) -> ImageDataset:
    files = _find_idx_files(folder)
    sums = {role: _file_sha256(path) for role, path in files.items()}
    for role, path in files.items():
        want = (expected or {}).get(path.name)
        if want is not None and sums[role] != want:
            raise DataFormatError(
                f"load_dataset: cached {path} has SHA-256 {sums[role]}, expected {want}; "
                "the copy is corrupt or was replaced. Delete it to download a fresh copy.")
    arrays = {role: read_idx(path) for role, path in files.items()}
    splits = {}
    for part in ("train", "test"):
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
        splits[part] = Split(np.true_divide(images, np.float32(255), dtype=np.float32), labels.astype(np.int64))
    if splits["train"].images.shape[1:] != splits["test"].images.shape[1:]:
        raise DataFormatError(f"load_dataset: train images are {splits['train'].images.shape[1:]} but test images "
                              f"are {splits['test'].images.shape[1:]} in {folder}; both must have one size.")
    combined = hashlib.sha256("\n".join(sorted(sums.values())).encode()).hexdigest()
    height, width = splits["train"].images.shape[1:]
    return ImageDataset(name=name, train=splits["train"], test=splits["test"], sha256=combined,
                        source=source, image_shape=(int(height), int(width)))


# ---------------------------------------------------------------- download


def _ensure_cached(name: str, *, download: bool, progress: bool) -> pathlib.Path:
    """Return cache_dir()/name with all four files, downloading the missing ones."""
    folder = cache_dir() / name
    missing = [f for f in SHA256[name] if not (folder / f).is_file()]
    if not missing:
        return folder
    if not download:
        raise DataUnavailableError(f"{name} is not cached in {folder} (missing {', '.join(missing)}) and "
                                   f"downloading is off. {_FIX}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataUnavailableError(f"Could not create the cache folder {folder} ({err.strerror or err}). "
                                   f"Set PROBE_DATA_DIR to a writable folder. {_FIX}") from err
    for filename in missing:
        failures = []
        for mirror in MIRRORS[name]:
            url = mirror + filename
            reason = _download(url, folder / filename, SHA256[name][filename], progress=progress)
            if reason is None:
                break
            failures.append(f"{url} ({reason})")
        else:
            raise DataUnavailableError(f"Could not download {name} from {'; '.join(failures)}. {_FIX}")
    return folder


def _download(url: str, dest: pathlib.Path, sha256: str, *, progress: bool) -> str | None:
    """Fetch url into dest if its SHA-256 matches; return None on success, else the reason.

    The bytes go to a temporary file in dest's folder, renamed onto dest only after the
    checksum passes, so an interrupted or corrupt download never enters the cache (and the
    rename is atomic because both lie on one file system).
    """
    from tqdm.auto import tqdm

    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = pathlib.Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr,
                      disable=not progress, leave=False) as bar:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != sha256:
            return f"SHA-256 mismatch: got {digest.hexdigest()}, expected {sha256}"
        os.replace(tmp, dest)
        return None
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code} {err.reason}"
    except urllib.error.URLError as err:
        return str(err.reason)
    except (OSError, http.client.HTTPException) as err:  # timeouts, resets, short reads
        return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    finally:
        tmp.unlink(missing_ok=True)
