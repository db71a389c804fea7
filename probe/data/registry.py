"""The dataset table: what each name means, where it downloads from, and its checksums."""
from __future__ import annotations

import os
import pathlib

from probe.data import cifar10
from probe.data.containers import ImageDataset
from probe.data.digits import load_digits
from probe.data.download import cache_dir, ensure_cached
from probe.data.idx import IDX_FIX, load_idx_folder
from probe.errors import InputTypeError, unknown_name

DEFAULT_DATASET = "digits"

# Tried in order; a file is taken from the first mirror that serves it with the right checksum.
# yann.lecun.com comes second because it has often refused robots (HTTP 403) since 2023.
# cave.cs.toronto.edu is reported to serve the same CIFAR-10 archive (same MD5) as www.
MIRRORS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/", "https://cave.cs.toronto.edu/kriz/"),
}

# SHA-256 of the files as the mirrors serve them. MNIST / Fashion-MNIST sources, which agree
# with each other: tensorflow/datasets url_checksums/mnist.txt and fashion_mnist.txt (with the
# byte sizes noted below), and several independent download scripts on GitHub. torchvision's
# MD5s for the same files (MNIST f68b3c2d.., d53e105e.., 9fb629c4.., ec29112d..; Fashion-MNIST
# 8d4fb7e6.., 25c81989.., bef4ecab.., bb300cfd..) are listed beside the same SHA-256s in several.
# CIFAR-10: the authors publish only an MD5 (c32a1d4ab5d03f1284b67883e8d87530, on
# https://www.cs.toronto.edu/~kriz/cifar.html); the SHA-256 below is the one independent
# projects (Julia MLDatasets, several download scripts) record beside that MD5 and the size.
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
    "cifar10": {
        cifar10.ARCHIVE: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",  # 170,052,171 B
    },
}

_DESCRIPTIONS = {
    "digits": ("scikit-learn's bundled 8x8 handwritten digits (offline); stratified 75/25 split",
               "1,797 images (1,347 train / 450 test), 8x8"),
    "mnist": ("MNIST handwritten digits (LeCun, Cortes, Burges); the paper's dataset",
              "70,000 images (60,000 train / 10,000 test), 28x28; 11.6 MB download"),
    "fashion-mnist": ("Fashion-MNIST clothing images (Xiao, Rasul, Vollgraf 2017)",
                      "70,000 images (60,000 train / 10,000 test), 28x28; 30.9 MB download"),
    "cifar10": ("CIFAR-10 colour images in 10 classes (Krizhevsky 2009), binary version",
                "60,000 images (50,000 train / 10,000 test), 32x32x3; 170.1 MB download"),
}
KNOWN_DATASETS = tuple(_DESCRIPTIONS)
_FIXES = {"mnist": IDX_FIX, "fashion-mnist": IDX_FIX, "cifar10": cifar10.CIFAR10_FIX}


def load_dataset(
    name: str | None = None,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    progress: bool = True,
) -> ImageDataset:
    """Load a dataset by name, or the files in `data_dir`.

    With `data_dir`, the result is named "folder:<basename>" ("folder:cifar10:<basename>" for the
    CIFAR-10 .bin files); the folder holds either the four
    IDX files or the six CIFAR-10 .bin files (or their cifar-10-batches-bin folder), and
    `name` only matters as "cifar10", which insists on the latter. Otherwise `name` (default
    "digits") is one of `KNOWN_DATASETS`; the others come from the cache, downloaded into it
    first when missing and `download` is true.
    """
    if name is not None and not isinstance(name, str):
        raise InputTypeError(f"load_dataset: name must be a string, got {type(name).__name__} {name!r}.")
    key = (name or DEFAULT_DATASET).strip().lower()
    if data_dir is not None:
        if not isinstance(data_dir, (str, os.PathLike)):
            raise InputTypeError(f"load_dataset: data_dir must be a path, got {type(data_dir).__name__}.")
        folder = pathlib.Path(data_dir).expanduser()
        label = f"folder:{folder.resolve().name}"
        if key == "cifar10" or cifar10.looks_like_cifar10(folder):
            # The name says which dataset the folder holds, whatever the folder is called, so the
            # report finds the paper's CIFAR-10 values (probe.reference.paper_dataset).
            return cifar10.load_cifar10_folder(folder, name=f"folder:cifar10:{folder.resolve().name}")
        return load_idx_folder(folder, name=label, source=str(folder.resolve()))
    if key not in KNOWN_DATASETS:
        raise unknown_name("dataset", name, KNOWN_DATASETS)
    if key == "digits":
        return load_digits()
    folder = ensure_cached(key, SHA256[key], MIRRORS[key], download=download, progress=progress, fix=_FIXES[key])
    if key == "cifar10":
        return cifar10.load_cifar10_archive(folder / cifar10.ARCHIVE, name=key,
                                            expected_sha256=SHA256[key][cifar10.ARCHIVE])
    return load_idx_folder(folder, name=key, source=str(folder), expected=SHA256[key])


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
