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
  and downloaded on first use. Each download is checked against its SHA-256 before it enters
  the cache.
- "cifar10": the binary distribution, one archive cached and checked the same way; colour
  images of shape (32, 32, 3), channels last.
- any folder holding the four IDX files or the six CIFAR-10 .bin files (`--data-dir DIR`),
  e.g. `shared/data/mnist-5k`.

Modules, each importing only those above it in this list: `containers` (Split, ImageDataset),
`download` (the cache and checked downloads), `idx`, `cifar10`, `digits` (the readers),
`registry` (names, mirrors, checksums, `load_dataset`), `pairs` (PairData: the two views a
study trains on), and the independent `views` and `synthetic`.
"""
from __future__ import annotations

from probe.data.cifar10 import read_cifar10_batch
from probe.data.containers import ImageDataset, Split
from probe.data.download import DOWNLOAD_TIMEOUT_S, cache_dir
from probe.data.idx import IDX_FILES, read_idx
from probe.data.pairs import PairData, load_image_pairs
from probe.data.registry import DEFAULT_DATASET, KNOWN_DATASETS, MIRRORS, SHA256, describe_datasets, load_dataset
from probe.data.synthetic import correlated_gaussian, gaussian_mi, rho_for_mi
from probe.data.views import add_noise, split_views

__all__ = [
    "DEFAULT_DATASET", "DOWNLOAD_TIMEOUT_S", "IDX_FILES", "KNOWN_DATASETS", "MIRRORS", "SHA256",
    "ImageDataset", "PairData", "Split", "add_noise", "cache_dir", "correlated_gaussian", "describe_datasets",
    "gaussian_mi", "load_dataset", "load_image_pairs", "read_cifar10_batch", "read_idx", "rho_for_mi", "split_views",
]
