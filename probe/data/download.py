"""The download cache: checked downloads that never leave a partial or corrupt file behind.

A dataset's files live in `cache_dir()/<name>/`. Each is fetched from the first mirror that
serves it with the expected SHA-256; the bytes go to a temporary file in the cache folder and
are renamed onto their final name only after the checksum (and the length the server
announced) check out.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from probe.errors import DataUnavailableError

DOWNLOAD_TIMEOUT_S = 30.0
CHUNK = 1 << 20


def cache_dir() -> pathlib.Path:
    """Folder that holds downloaded datasets: `$PROBE_DATA_DIR` if set, else `~/.cache/probe`."""
    env = os.environ.get("PROBE_DATA_DIR", "").strip()
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / ".cache" / "probe"


def file_sha256(path: pathlib.Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_cached(name: str, files: Mapping[str, str], mirrors: Sequence[str], *,
                  download: bool, progress: bool, fix: str) -> pathlib.Path:
    """Return cache_dir()/name holding every file of `files` (file name -> SHA-256),
    downloading the missing ones from `mirrors` (base URLs, tried in order).

    `fix` ends every error message: what the user can do instead.
    """
    folder = cache_dir() / name
    missing = [f for f in files if not (folder / f).is_file()]
    if not missing:
        return folder
    if not download:
        raise DataUnavailableError(f"{name} is not cached in {folder} (missing {', '.join(missing)}) and "
                                   f"downloading is off. {fix}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataUnavailableError(f"Could not create the cache folder {folder} ({err.strerror or err}). "
                                   f"Set PROBE_DATA_DIR to a writable folder. {fix}") from err
    for filename in missing:
        failures = []
        for mirror in mirrors:
            url = mirror + filename
            reason = download_file(url, folder / filename, files[filename], progress=progress)
            if reason is None:
                break
            failures.append(f"{url} ({reason})")
        else:
            raise DataUnavailableError(f"Could not download {name} from {'; '.join(failures)}. {fix}")
    return folder


def download_file(url: str, dest: pathlib.Path, sha256: str, *, progress: bool) -> str | None:
    """Fetch url into dest if its SHA-256 matches; return None on success, else the reason.

    The bytes go to a temporary file in dest's folder, renamed onto dest only after the
    checksum passes, so an interrupted, truncated or corrupt download never enters the cache
    (and the rename is atomic because both lie on one file system).
    """
    from tqdm.auto import tqdm

    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = pathlib.Path(tmp_name)
    try:
        digest, received = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr,
                      disable=not progress, leave=False) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        # http.client ends a body cut short by a closed connection without an error; say so.
        if total is not None and received != total:
            return f"truncated: received {received:,} of the {total:,} bytes the server announced"
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
