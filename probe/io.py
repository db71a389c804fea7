"""Writing files so that no reader ever sees half of one, with the permissions the user expects.

Every file `probe` writes (results, cell files, checkpoints, reports, saved embeddings) goes
through `atomic_write`: the content is written to a temporary file in the same folder, flushed,
given the mode an ordinary `open()` would give under the current umask (mkstemp's 0600 would
hide results from colleagues on a shared filesystem), then renamed over the target.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on error removed.

    For writers that want a file name rather than a handle (netCDF, `np.savez`). `suffix` keeps
    the extension such writers insist on (np.savez appends ".npz" otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None], *, fsync: bool = False) -> Path:
    """Call `write(handle)` on a temporary binary file, then rename it over `path`; return `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))
