"""The saved-embeddings format: written at evaluation, read by `probe analyze`.

`probe run-study --save-embeddings` saves g1's embeddings at every evaluation as
`<run>/embeddings/<cell>/step-NNNNNN.npz` (train `z`, `y`; held-out `z_test`, `y_test`; g2's
held-out view `paired_test`). `read_arrays` reads that format, a single `.npy` array, or the
variables of a netCDF file, with allow_pickle=False and a clear error for anything else.
"""
from __future__ import annotations

import contextlib
import os
import zipfile
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

import numpy as np

from probe.errors import DataFormatError, ProbeError
from probe.io import atomic_path

_EMBEDDINGS_DIR: ContextVar[Path | None] = ContextVar("probe_embeddings_dir", default=None)


@contextlib.contextmanager
def saving_embeddings(folder: str | os.PathLike | None) -> Iterator[None]:
    """Within this context every evaluation saves g1's embeddings to folder/step-NNNNNN.npz
    (train `z`, `y`; held-out `z_test`, `y_test`; g2's held-out view `paired_test`), ready for
    `probe analyze FILE --labels y --test-key z_test --test-labels y_test`."""
    token = _EMBEDDINGS_DIR.set(None if folder is None else Path(folder))
    try:
        yield
    finally:
        _EMBEDDINGS_DIR.reset(token)


def save_embeddings(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write `arrays` to the .npz file `path` atomically."""
    path = Path(path)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)
    return path


def embeddings_folder() -> Path | None:
    """The folder the current evaluation saves embeddings to (`saving_embeddings`), or None."""
    return _EMBEDDINGS_DIR.get()


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array in a .npy/.npz/.nc file, by name (a .npy file's single array under its stem)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.ndarray):  # np.load opens a zip (npz) whatever the suffix says
                if hasattr(loaded, "close"):
                    loaded.close()
                raise DataFormatError(f"{path.name}: the file is an .npz archive, not a .npy array; rename it to .npz.")
            return {path.stem: loaded}
        if suffix == ".npz":
            arrays = {}
            with np.load(path, allow_pickle=False) as npz:
                for name in npz.files:
                    try:
                        arrays[name] = npz[name]
                        if not isinstance(arrays[name], np.ndarray):  # a zip member that is not a .npy file
                            raise DataFormatError(
                                f"{path.name}: member '{name}' is not a .npy array; an .npz must hold only arrays "
                                "written by np.savez."
                            )
                    except ValueError as err:
                        raise DataFormatError(
                            f"{path.name}: array '{name}' holds Python objects (dtype=object), which probe does not "
                            "load (allow_pickle=False). Save it with a numeric or string dtype, e.g. "
                            "np.asarray(x, dtype=float)."
                        ) from err
            return arrays
        if suffix == ".nc":
            from probe.results import load_dataset

            ds = load_dataset(path)
            return {str(name): np.asarray(var.values) for name, var in ds.data_vars.items()}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        if isinstance(err, ProbeError):
            raise
        reason = "holds Python objects (dtype=object), which probe does not load (allow_pickle=False)" \
            if "Object arrays" in str(err) else f"could not be read as {suffix} ({type(err).__name__}: {err})"
        raise DataFormatError(f"{path.name}: the file {reason}. Is it truncated or in another format?") from err
    raise DataFormatError(f"{path.name}: unsupported file type '{path.suffix}'; use .npy, .npz or .nc.")
