"""Fuzzing: malformed inputs at every analyzer, estimator and loader, and failures mid-write.

A seeded generator builds malformed inputs (NaN/inf, empty, one sample, one class, ragged lists,
object/str/complex/bool/float16 dtypes, huge values, wrong rank, mismatched lengths, random bit
patterns) for every analyzer in `probe.analyzers.ANALYZERS` and every estimator in
`probe.estimators.ESTIMATORS`, and malformed files (truncated, wrong magic, trailing bytes,
gzip garbage, pickled objects, not netCDF, missing variables) for every loader. Each case runs
in a daemon thread with a deadline and must end in one of:

- a `probe.errors.ProbeError` subclass (the documented error), or
- for inputs the documentation accepts (float16, bool, finite huge values, ...), a result with
  no NaN in it (and no RuntimeWarning from probe's code: the suite turns those into errors),

never a raw exception from inside torch/numpy/sklearn/netCDF, never a hang. Cases that fail
today are listed in KNOWN_FAILURES (xfail, strict: fixing one makes the suite say so).
`bench/fuzz_counts.py` runs the same cases and prints the counts as one JSON line.

The second half checks that a failure in the middle of a write (a download, a results file, a
study cell, a report, `probe analyze`) leaves no partial file behind.
"""
from __future__ import annotations

import gzip
import io
import threading
import traceback
import warnings
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import xarray as xr
from analyzer_specs import Spec
from analyzer_specs import analyzer_specs as derived_specs

from probe.errors import ProbeError

SEED = 20_200_417
CASE_TIMEOUT_S = 30.0

# ------------------------------------------------------------------------------------ running


@dataclass(frozen=True)
class Case:
    id: str
    target: str                    # "analyzer:geometry", "estimator:nwj", "loader:read_idx", ...
    call: Callable[[Path], Any]    # runs the input; gets a private scratch folder
    accepts: bool = False          # True: a valid result is also fine (documented as accepted)
    check: Callable[[Any], str | None] | None = None  # for an accepted result: its problem, or None


@dataclass(frozen=True)
class Outcome:
    kind: str      # "probe_error", "result", "raw", "bad_result", "timeout"
    error: str     # exception class name ("" for a result)
    detail: str    # message, or the traceback tail of a raw exception

    def passed(self, case: Case) -> bool:
        return self.kind == "probe_error" or (self.kind == "result" and case.accepts)


def run_case(case: Case, workdir: Path, timeout: float = CASE_TIMEOUT_S) -> Outcome:
    """Run `case.call` in a daemon thread; classify how it ended (a hang is abandoned, not joined)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # As pytest's filterwarnings: a RuntimeWarning from probe's own code is an error.
                warnings.filterwarnings("error", category=RuntimeWarning, module=r"probe(\.|$)")
                box["value"] = case.call(workdir)
        except BaseException as err:  # noqa: BLE001 - classifying is the point
            box["error"] = err
            box["trace"] = traceback.format_exc()

    thread = threading.Thread(target=target, name=f"fuzz {case.id}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return Outcome("timeout", "", f"no answer within {timeout:.0f} s")
    if "error" in box:
        err = box["error"]
        if isinstance(err, ProbeError):
            return Outcome("probe_error", type(err).__name__, str(err)[:300])
        tail = "\n".join(box["trace"].strip().splitlines()[-6:])
        return Outcome("raw", type(err).__name__, tail)
    problem = case.check(box.get("value")) if case.check else None
    if problem:
        return Outcome("bad_result", "", problem)
    return Outcome("result", "", "")


def no_nan(value: Any) -> str | None:
    """The problem with a returned Dataset/tensor/array if it holds NaN (a silent NaN), else None."""
    if isinstance(value, xr.Dataset):
        bad = [name for name, v in value.data_vars.items() if v.dtype.kind == "f" and np.isnan(v.values).any()]
        return f"NaN in {', '.join(bad)}" if bad else None
    if isinstance(value, torch.Tensor):
        return "NaN result" if torch.isnan(value.detach().float()).any() else None
    if isinstance(value, dict):  # the cli loader's {name: array}
        return None
    return None


# ------------------------------------------------------------------------------- analyzer inputs


def analyzer_specs() -> dict[str, Spec]:
    """The contract suite's specs (derived from each registry Entry), on 160 rows of SEED's data."""
    return derived_specs(160, SEED, extra=False)


def _runner(spec: Spec, **replace: Any) -> Callable[[Path], Any]:
    return lambda _: spec.call(**replace)


def _one(a: np.ndarray, rng: np.random.Generator, value: float) -> np.ndarray:
    out = np.array(a, dtype=np.float64)
    out[tuple(rng.integers(0, s) for s in out.shape)] = value
    return out


def _ragged(a: np.ndarray, rng: np.random.Generator) -> list:
    rows = a.tolist()
    i = int(rng.integers(0, len(rows)))
    rows[i] = rows[i][:-1] if len(rows[i]) > 1 else rows[i] + [0.0]
    return rows


def _random_bits(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Random float64 bit patterns: NaN, inf, subnormals and 1e±300 all turn up.
    return rng.integers(0, 2**63, size=a.shape, dtype=np.int64).view(np.float64) * rng.choice([-1.0, 1.0], a.shape)


def _float16_overflow(a: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # the overflow to inf is the point
        return (a * 1e6).astype(np.float16)


def _object_with_none(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = a.astype(object)
    out[tuple(rng.integers(0, s) for s in a.shape)] = None
    return out


# name -> (make the bad array from a valid one, accepted?). "accepted": the docs allow it.
ARRAY_CORRUPTIONS: dict[str, tuple[Callable[[np.ndarray, np.random.Generator], Any], bool]] = {
    "nan": (lambda a, r: _one(a, r, np.nan), False),
    "inf": (lambda a, r: _one(a, r, np.inf), False),
    "neg_inf": (lambda a, r: _one(a, r, -np.inf), False),
    "all_nan": (lambda a, r: np.full(a.shape, np.nan), False),
    "empty_rows": (lambda a, r: a[:0], False),
    "empty_features": (lambda a, r: a[:, :0], False),
    "ragged_list": (_ragged, False),
    "object_dtype": (lambda a, r: a.astype(object), False),
    "object_with_none": (_object_with_none, False),
    "string_dtype": (lambda a, r: a.astype(str), False),
    "plain_string": (lambda a, r: "0.1, 0.2", False),
    "bytes": (lambda a, r: a.tobytes(), False),
    "dict": (lambda a, r: {"z": a}, False),
    "complex": (lambda a, r: a.astype(complex), False),
    "datetime": (lambda a, r: (a * 1e6).astype("datetime64[s]"), False),
    "one_dimensional": (lambda a, r: a[:, 0].copy(), False),
    "three_dimensional": (lambda a, r: a[:, :, None].copy(), False),
    "scalar": (lambda a, r: np.float64(1.5), False),
    "float16_overflow": (lambda a, r: _float16_overflow(a), False),
    "torch_nan": (lambda a, r: torch.from_numpy(_one(a, r, np.nan)), False),
    # Accepted by probe.validation.check_array (documented): must give a NaN-free result or a ProbeError.
    "float16": (lambda a, r: a.astype(np.float16), True),
    "bool": (lambda a, r: a > 0, True),
    "int8": (lambda a, r: np.clip(a * 10, -128, 127).astype(np.int8), True),
    "uint64_max": (lambda a, r: np.where(a > 0, np.iinfo(np.uint64).max, 0).astype(np.uint64), True),
    "huge_1e300": (lambda a, r: a * 1e300, True),
    "huge_one_entry": (lambda a, r: _one(a, r, 1e300), True),
    "tiny_1e-300": (lambda a, r: a * 1e-300, True),
    "constant": (lambda a, r: np.ones_like(a), True),
    "nested_list": (lambda a, r: a.tolist(), True),
    "torch_tensor": (lambda a, r: torch.from_numpy(a.copy()), True),
    "random_bits": (_random_bits, True),
}

LABEL_CORRUPTIONS: dict[str, tuple[Callable[[np.ndarray, np.random.Generator], Any], bool]] = {
    "one_class": (lambda y, r: np.zeros_like(y), False),
    "nan_label": (lambda y, r: _one(y.astype(float), r, np.nan), False),
    "fractional": (lambda y, r: _one(y.astype(float), r, 0.5), False),
    "two_dimensional": (lambda y, r: y.reshape(-1, 1), False),
    "wrong_length": (lambda y, r: y[:-1], False),
    "empty": (lambda y, r: y[:0], False),
    "complex": (lambda y, r: y.astype(complex), False),
    "ragged_list": (lambda y, r: [[int(v)] for v in y[:-1]] + [[0, 1]], False),
    "none_inside": (lambda y, r: np.array([None, *y[1:].tolist()], dtype=object), False),
    "plain_string": (lambda y, r: "abc", False),
    "scalar": (lambda y, r: np.int64(1), False),
    # Accepted: any hashable class ids.
    "strings": (lambda y, r: np.array([f"c{v}" for v in y]), True),
    "bool": (lambda y, r: y % 2 == 0, True),
    "negative": (lambda y, r: y - 7, True),
    "huge_ids": (lambda y, r: y.astype(np.int64) * 10**17, True),
    "float_integers": (lambda y, r: y.astype(float), True),
    "list": (lambda y, r: y.tolist(), True),
}


def analyzer_cases() -> list[Case]:
    rng = np.random.default_rng(SEED)
    cases = []
    for spec_id, spec in analyzer_specs().items():
        target = f"analyzer:{spec.analyzer}"
        for name, array in spec.arrays.items():
            for kind, (corrupt, accepted) in ARRAY_CORRUPTIONS.items():
                cases.append(Case(f"{spec_id}:{name}:{kind}", target, _runner(spec, **{name: corrupt(array, rng)}),
                                  accepts=accepted, check=no_nan))
            one = array[:1]
            partners = {k: v[:1] for k, v in {**spec.arrays, **spec.labels}.items()}
            cases.append(Case(f"{spec_id}:{name}:one_sample", target, _runner(spec, **{name: one}),
                              accepts=spec.min_samples <= 1, check=no_nan))
            cases.append(Case(f"{spec_id}:all:one_sample", target, _runner(spec, **partners),
                              accepts=spec.min_samples <= 1, check=no_nan)) if name == next(iter(spec.arrays)) else None
            if len(spec.arrays) + len(spec.labels) > 1:
                drop = int(rng.integers(1, array.shape[0] - 1))
                cases.append(Case(f"{spec_id}:{name}:mismatched_length", target,
                                  _runner(spec, **{name: array[:drop]}),
                                  accepts=not any(name in group for group in spec.groups)))
        for name, labels in spec.labels.items():
            for kind, (corrupt, accepted) in LABEL_CORRUPTIONS.items():
                ok = accepted or (kind == "one_class" and name.startswith("test_"))
                cases.append(Case(f"{spec_id}:{name}:{kind}", target, _runner(spec, **{name: corrupt(labels, rng)}),
                                  accepts=ok, check=no_nan))
    return cases


# ------------------------------------------------------------------------------ estimator inputs


def _scores(k: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, k, generator=g, dtype=torch.float64).to(dtype) + 3 * torch.eye(k, dtype=dtype)


def _with(s: torch.Tensor, value: float, where: tuple[int, int]) -> torch.Tensor:
    s = s.clone()
    s[where] = value
    return s


def no_nan_from_finite(value: Any) -> str | None:
    if not isinstance(value, torch.Tensor) or value.ndim != 0:
        return f"returned {type(value).__name__} {getattr(value, 'shape', '')}; a 0-d tensor is documented"
    return "NaN result" if torch.isnan(value.detach().float()) else None


def nonfinite_in_nonfinite_out(value: Any) -> str | None:
    # NaN/inf scores: a non-finite value (propagated, what training's isfinite check relies on)
    # is acceptable; a finite-looking number computed from them is not.
    if not isinstance(value, torch.Tensor) or value.ndim != 0:
        return f"returned {type(value).__name__}"
    return None if not torch.isfinite(value.detach().float()) else f"finite value {float(value):.4g} from non-finite scores"


SCORE_CORRUPTIONS: dict[str, tuple[Callable[[np.random.Generator], Any], bool, Callable | None]] = {
    "numpy_array": (lambda r: _scores(4).numpy(), False, None),
    "nested_list": (lambda r: _scores(4).tolist(), False, None),
    "none": (lambda r: None, False, None),
    "string": (lambda r: "scores", False, None),
    "scalar_tensor": (lambda r: torch.tensor(1.0), False, None),
    "one_dimensional": (lambda r: torch.randn(5), False, None),
    "three_dimensional": (lambda r: torch.randn(3, 3, 3), False, None),
    "non_square": (lambda r: torch.randn(4, 5), False, None),
    "one_by_one": (lambda r: torch.randn(1, 1), False, None),
    "empty": (lambda r: torch.randn(0, 0), False, None),
    "int_dtype": (lambda r: torch.randint(-3, 3, (4, 4)), False, None),
    "bool_dtype": (lambda r: torch.randn(4, 4) > 0, False, None),
    "complex_dtype": (lambda r: torch.randn(4, 4, dtype=torch.complex64), False, None),
    # Accepted: floating tensors of any precision and values.
    "float16": (lambda r: _scores(8, torch.float16), True, no_nan_from_finite),
    "bfloat16": (lambda r: _scores(8, torch.bfloat16), True, no_nan_from_finite),
    "float64": (lambda r: _scores(8, torch.float64), True, no_nan_from_finite),
    "huge_1e300": (lambda r: _scores(8, torch.float64) * 1e300, True, no_nan_from_finite),
    "huge_30000_float16": (lambda r: (_scores(8) * 1e4).clamp(-3e4, 3e4).half(), True, no_nan_from_finite),
    "huge_1e38_float32": (lambda r: _scores(8) * 1e37, True, no_nan_from_finite),
    "constant": (lambda r: torch.ones(8, 8), True, no_nan_from_finite),
    "two_by_two": (lambda r: _scores(2), True, no_nan_from_finite),
    "requires_grad": (lambda r: _scores(6).requires_grad_(), True, no_nan_from_finite),
    "non_contiguous": (lambda r: _scores(6).T, True, no_nan_from_finite),
    "nan_entry": (lambda r: _with(_scores(6), float("nan"), (1, 2)), True, nonfinite_in_nonfinite_out),
    "nan_diagonal": (lambda r: _with(_scores(6), float("nan"), (3, 3)), True, nonfinite_in_nonfinite_out),
    # SMILE clips the negatives' scores to [-tau, tau], so a +inf there may give a finite value.
    "pos_inf_offdiag": (lambda r: _with(_scores(6), float("inf"), (0, 4)), True, no_nan_from_finite),
    "neg_inf_diag": (lambda r: _with(_scores(6), float("-inf"), (2, 2)), True, nonfinite_in_nonfinite_out),
}

# Keyword arguments of estimators that take some (value, accepted?).
PARAMETER_CORRUPTIONS = {
    "smile": {"tau": [(0.0, False), (-1.0, False), (float("nan"), False), ("5", False), (None, False),
                      (float("inf"), True), (1e-300, True)]},
    "tuba": {"log_baseline": [("a", False), (None, False), (float("nan"), False), (torch.ones(3), False),
                              (2.0, True), (torch.tensor(0.5), True)]},
}


def estimator_cases() -> list[Case]:
    from probe.estimators import ESTIMATORS, get_estimator

    rng = np.random.default_rng(SEED + 1)
    cases = []
    for name, fn in ESTIMATORS.items():
        for kind, (make, accepted, check) in SCORE_CORRUPTIONS.items():
            scores = make(rng)
            cases.append(Case(f"{name}:scores:{kind}", f"estimator:{name}",
                              lambda _, fn=fn, s=scores: fn(s), accepts=accepted, check=check))
        for param, values in PARAMETER_CORRUPTIONS.get(name, {}).items():
            for value, accepted in values:
                cases.append(Case(f"{name}:{param}={value!r}", f"estimator:{name}",
                                  lambda _, fn=fn, p=param, v=value: fn(_scores(6), **{p: v}),
                                  accepts=accepted, check=no_nan_from_finite))
    for bad in ("infoNCE", "", 3, None, ["nwj"]):
        cases.append(Case(f"get_estimator({bad!r})", "estimator:get_estimator", lambda _, b=bad: get_estimator(b)))
    return cases


# ---------------------------------------------------------------------------------- file inputs


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _flip_bits(data: bytes, rng: np.random.Generator, n: int) -> bytes:
    out = bytearray(data)
    for pos in rng.integers(0, len(out), size=n):
        out[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def idx_files(rng: np.random.Generator) -> dict[str, tuple[bytes, bool]]:
    """name -> (file content, accepted?)"""
    valid = idx_bytes(rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8))
    files = {
        "valid": (valid, True),
        "valid_gzip": (gzip.compress(valid), True),
        "empty_file": (b"", False),
        "three_bytes": (valid[:3], False),
        "truncated_header": (valid[:9], False),
        "truncated_payload": (valid[:-7], False),
        "trailing_bytes": (valid + b"\x00\x01", False),
        "wrong_magic": (b"\x01\x00" + valid[2:], False),
        "wrong_dtype_code": (valid[:2] + b"\x0a" + valid[3:], False),
        "ndim_zero": (valid[:3] + b"\x00" + valid[4:], False),
        "huge_dims": (valid[:4] + b"\xff\xff\xff\xff" * 3 + valid[16:], False),
        "text": (b"train-images-idx3-ubyte\n", False),
        "gzip_garbage": (b"\x1f\x8b" + rng.bytes(200), False),
        "gzip_truncated": (gzip.compress(valid)[:-12], False),
        "gzip_of_garbage": (gzip.compress(rng.bytes(100)), False),
        "gzip_of_truncated": (gzip.compress(valid[:-3]), False),
        "float_payload_nan": (idx_bytes(np.array([[np.nan, 1.0]], dtype=np.float32), 0x0D), True),
    }
    for i in range(6):  # random bit flips: a header flip must be caught; a payload flip reads fine
        files[f"bit_flips_{i}"] = (_flip_bits(valid, rng, 1 + i), True)
    return files


def _write(workdir: Path, name: str, content: bytes) -> Path:
    path = workdir / name
    path.write_bytes(content)
    return path


def _npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy(array: Any, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _netcdf(ds: xr.Dataset) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.nc"
        ds.to_netcdf(path, engine="netcdf4")
        return path.read_bytes()


def _npy_huge_header() -> bytes:
    valid = _npy(np.zeros((2, 2)))
    header_end = valid.index(b"\n") + 1
    header = valid[10:header_end].decode("latin1").replace("(2, 2)", "(10000000000, 10000000000)")
    header = header.rstrip("\n").ljust(header_end - 10 - 1) + "\n"
    return valid[:10] + header.encode("latin1") + valid[header_end:]


def embedding_files(rng: np.random.Generator) -> dict[str, tuple[str, bytes, bool]]:
    """name -> (suffix, content, accepted?) for probe analyze's reader."""
    z = rng.standard_normal((40, 3))
    good_nc = _netcdf(xr.Dataset({"z": (("sample", "feature"), z)}))
    files = {
        "valid_npy": (".npy", _npy(z), True),
        "valid_npz": (".npz", _npz(z=z, y=np.arange(40) % 2), True),
        "valid_nc": (".nc", good_nc, True),
        "npz_pickled_objects": (".npz", _npz(z=np.array([{"a": 1}, None], dtype=object)), False),
        "npz_pickled_ragged": (".npz", _npz(z=np.array([[1.0], [1.0, 2.0]], dtype=object)), False),
        "npz_garbage": (".npz", rng.bytes(300), False),
        "npz_truncated": (".npz", _npz(z=z)[:-50], False),
        "npz_empty_archive": (".npz", _npz(), False),
        "npz_only_1d": (".npz", _npz(a=np.arange(5.0), b=np.arange(5.0)), False),
        "npz_two_2d_unnamed": (".npz", _npz(a=z, b=z), False),
        "npz_non_npy_member": (".npz", _zip({"z.txt": b"1 2 3"}), False),
        "npz_garbage_member": (".npz", _zip({"z.npy": rng.bytes(64)}), False),
        "npy_garbage": (".npy", rng.bytes(300), False),
        "npy_empty_file": (".npy", b"", False),
        "npy_truncated": (".npy", _npy(z)[:-40], False),
        "npy_pickled_objects": (".npy", _npy(np.array([1, "a", None], dtype=object), allow_pickle=True), False),
        "npy_zero_d": (".npy", _npy(np.float64(3.0)), False),
        "npy_three_d": (".npy", _npy(z.reshape(4, 10, 3)), False),
        "npy_huge_header": (".npy", _npy_huge_header(), False),
        "npy_csv_text": (".npy", b"1,2,3\n4,5,6\n", False),
        "npy_is_npz": (".npy", _npz(z=z), False),
        "nc_garbage": (".nc", rng.bytes(300), False),
        "nc_empty_file": (".nc", b"", False),
        "nc_truncated": (".nc", good_nc[: len(good_nc) // 2], False),
        "nc_no_variables": (".nc", _netcdf(xr.Dataset(attrs={"a": 1})), False),
        "nc_only_1d": (".nc", _netcdf(xr.Dataset({"y": ("sample", np.arange(4))})), False),
        "nc_is_npz": (".nc", _npz(z=z), False),
        "unsupported_suffix": (".csv", b"1,2\n3,4\n", False),
    }
    return files


def results_files(rng: np.random.Generator) -> dict[str, tuple[bytes, bool, bool]]:
    """name -> (content, accepted by probe.results.load_dataset(required=("bound_test",)),
    accepted by probe.report.write_report (which needs a numeric variable over `step`))."""
    good = xr.Dataset({"bound_test": (("seed", "step"), rng.standard_normal((2, 3)))},
                      coords={"seed": [0, 1], "step": [0, 10, 20]}, attrs={"study": "fuzz"})
    good_bytes = _netcdf(good)
    return {
        "valid": (good_bytes, True, True),
        "not_netcdf": (rng.bytes(500), False, False),
        "empty_file": (b"", False, False),
        "text": (b"bound_test,step\n1,2\n", False, False),
        "truncated": (good_bytes[: len(good_bytes) // 3], False, False),
        "hdf5_signature_only": (b"\x89HDF\r\n\x1a\n" + rng.bytes(100), False, False),
        "cdf_signature_only": (b"CDF\x01" + rng.bytes(100), False, False),
        "missing_variables": (_netcdf(good.rename({"bound_test": "other"})), False, True),
        "no_step": (_netcdf(good.isel(step=0, drop=True)), True, False),
        "string_step": (_netcdf(good.assign_coords(step=["a", "b", "c"])), True, False),
        "only_strings": (_netcdf(xr.Dataset({"bound_test": ("step", np.array(["x", "y"], dtype=object))},
                                            coords={"step": [0, 1]})), True, False),
        "npz": (_npz(bound_test=np.zeros((2, 3))), False, False),
    }


def loader_cases() -> list[Case]:
    from probe.cli.analyze import _main_array
    from probe.data import load_dataset as load_images
    from probe.data import read_idx
    from probe.embeddings import read_arrays as _read_arrays
    from probe.report import write_report
    from probe.results import load_dataset

    rng = np.random.default_rng(SEED + 2)
    cases = []
    for name, (content, accepted) in idx_files(rng).items():
        cases.append(Case(f"read_idx:{name}", "loader:read_idx",
                          lambda w, c=content: read_idx(_write(w, "file-idx3-ubyte", c)), accepts=accepted))
    cases.append(Case("read_idx:missing_file", "loader:read_idx", lambda w: read_idx(w / "absent")))
    cases.append(Case("read_idx:directory", "loader:read_idx", lambda w: read_idx(w)))

    def folder(w: Path, bad_role: str, content: bytes) -> Any:
        labels = np.arange(6, dtype=np.uint8) % 3
        images = rng.integers(0, 256, size=(6, 4, 4), dtype=np.uint8)
        files = {"train-images-idx3-ubyte": idx_bytes(images), "train-labels-idx1-ubyte": idx_bytes(labels),
                 "t10k-images-idx3-ubyte": idx_bytes(images), "t10k-labels-idx1-ubyte": idx_bytes(labels)}
        files[bad_role] = content
        for file_name, data in files.items():
            _write(w, file_name, data)
        return load_images(data_dir=w)

    float_images = idx_bytes(np.zeros((6, 4, 4), dtype=np.float32), 0x0D)
    for role, content, label in (("train-images-idx3-ubyte", float_images, "float_images"),
                                 ("train-labels-idx1-ubyte", idx_bytes(np.full(6, 12, dtype=np.uint8)), "label_12"),
                                 ("t10k-labels-idx1-ubyte", idx_bytes(np.zeros(5, dtype=np.uint8)), "count_mismatch"),
                                 ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((6, 5, 4), dtype=np.uint8)), "size_mismatch"),
                                 ("train-images-idx3-ubyte", idx_bytes(np.zeros((6, 16), dtype=np.uint8)), "images_2d"),
                                 ("t10k-images-idx3-ubyte", b"\x1f\x8bgarbage", "gzip_garbage")):
        cases.append(Case(f"load_dataset(data_dir):{label}", "loader:data.load_dataset",
                          lambda w, r=role, c=content: folder(w, r, c)))
    cases.append(Case("load_dataset(data_dir):missing_folder", "loader:data.load_dataset",
                      lambda w: load_images(data_dir=w / "absent")))

    def read_embeddings(w: Path, suffix: str, content: bytes) -> Any:
        path = _write(w, f"emb{suffix}", content)
        arrays = _read_arrays(path)
        return _main_array(arrays, None, path)

    def analyze_cli(w: Path, suffix: str, content: bytes) -> Any:
        from click.testing import CliRunner

        from probe.cli.analyze import analyze

        path = _write(w, f"emb{suffix}", content)
        result = CliRunner().invoke(analyze, [str(path), "--analyzers", "geometry", "--out", str(w / "out")])
        if isinstance(result.exception, SystemExit) and result.exit_code in (1, 2) and "Traceback" not in result.output:
            raise CliError(f"probe analyze exited {result.exit_code}: {result.output.strip()[-200:]}")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return None

    for name, (suffix, content, accepted) in embedding_files(rng).items():
        cases.append(Case(f"cli_analyze._read_arrays:{name}", "loader:cli_analyze",
                          lambda w, s=suffix, c=content: read_embeddings(w, s, c), accepts=accepted))
        cases.append(Case(f"probe analyze:{name}", "loader:probe analyze (CLI)",
                          lambda w, s=suffix, c=content: analyze_cli(w, s, c), accepts=accepted))

    for name, (content, loads, reports) in results_files(rng).items():
        cases.append(Case(f"results.load_dataset:{name}", "loader:results.load_dataset",
                          lambda w, c=content: load_dataset(_write(w, "results.nc", c), required=("bound_test",)),
                          accepts=loads))
        cases.append(Case(f"write_report:{name}", "loader:report.write_report",
                          lambda w, c=content: write_report(_write(w, "results.nc", c), w / "r.html"),
                          accepts=reports))
    cases.append(Case("results.load_dataset:directory", "loader:results.load_dataset", lambda w: load_dataset(w)))
    return cases


class CliError(ProbeError):
    """`probe analyze` ended with click's one-line error (exit 1 or 2), no traceback: the CLI's documented error."""


def all_cases() -> list[Case]:
    return analyzer_cases() + estimator_cases() + loader_cases()


# Cases that end in a raw exception or a silent NaN today, with the reason. Each is xfail(strict):
# when the owning module is fixed, the test XPASSes and this entry must go.
KNOWN_FAILURES: dict[str, str] = {}


def counts(outcomes: list[tuple[Case, Outcome]]) -> dict:
    """The JSON summary bench/fuzz_counts.py prints."""
    return {
        "inputs": len(outcomes),
        "passed": sum(o.passed(c) for c, o in outcomes),
        "failed": sum(not o.passed(c) for c, o in outcomes),
        "outcomes": dict(Counter(o.kind for _, o in outcomes)),
        "errors_by_class": dict(Counter(o.error for _, o in outcomes if o.error)),
        "inputs_by_target": dict(Counter(c.target.split(":")[0] for c, _ in outcomes)),
        "failures": {c.id: f"{o.kind} {o.error}".strip() for c, o in outcomes if not o.passed(c)},
    }


# ---------------------------------------------------------------------------------------- tests

CASES = all_cases()


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[case.id])] if case.id in KNOWN_FAILURES else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(previous)


def test_every_analyzer_and_estimator_is_fuzzed():
    from probe.analyzers import ANALYZERS
    from probe.estimators import ESTIMATORS

    targets = {c.target for c in CASES}
    assert {f"analyzer:{name}" for name in ANALYZERS} <= targets
    assert {f"estimator:{name}" for name in ESTIMATORS} <= targets
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_malformed_input_gives_a_documented_error(case, tmp_path):
    outcome = run_case(case, tmp_path)
    assert outcome.passed(case), f"{case.id}: {outcome.kind} {outcome.error}\n{outcome.detail}"
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".") and p.suffix in (".tmp", ".part")]
    assert not leftovers, f"{case.id} left temporary files: {leftovers}"


def test_validator_messages_for_what_the_fuzzer_found():
    from probe.errors import InputTypeError, InputValueError
    from probe.validation import MAX_ABS_VALUE, check_array, check_labels

    z = np.ones((4, 2))
    z[2, 1] = -3e300
    with pytest.raises(InputValueError, match=r"f: z has 1 value\(s\) above 1e\+100 .*largest 3e\+300, first at row 2"):
        check_array(z, name="z", caller="f")
    assert check_array(np.full((3, 2), MAX_ABS_VALUE), name="z", caller="f").max() == MAX_ABS_VALUE
    with pytest.raises(InputValueError, match="ragged"):
        check_labels([[0], [1, 2]], caller="f")
    with pytest.raises(InputValueError, match="1 missing label"):
        check_labels(np.array([0, None, 1], dtype=object), caller="f")
    with pytest.raises(InputTypeError, match="holds a list at index 1"):
        check_labels(np.array([0, [1], 2], dtype=object), caller="f")


# ------------------------------------------------------------------- failures mid-write leave no partial file


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class _FailingResponse(io.BytesIO):
    """urlopen's response: serves `data`, then raises `error` (None: ends normally)."""

    def __init__(self, data: bytes, error: BaseException | None):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data) * 2)}
        self.error = error

    def read(self, size: int = -1) -> bytes:
        block = super().read(size)
        if not block and self.error is not None:
            raise self.error
        return block


@pytest.mark.parametrize("failure", ["connection_reset", "checksum_mismatch", "timeout"])
def test_failed_download_leaves_no_partial_file(failure, tmp_path, monkeypatch):
    import urllib.request

    from probe.data import load_dataset
    from probe.errors import DataUnavailableError

    error = {"connection_reset": ConnectionResetError(104, "Connection reset by peer"),
             "checksum_mismatch": None, "timeout": TimeoutError("timed out")}[failure]
    monkeypatch.setenv("PROBE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: _FailingResponse(b"\x1f\x8b" * 1000, error))
    with pytest.raises(DataUnavailableError):
        load_dataset("mnist", progress=False)
    assert _all_files(tmp_path) == []


def test_interrupted_download_leaves_no_partial_file(tmp_path, monkeypatch):
    import urllib.request

    from probe.data import load_dataset

    monkeypatch.setenv("PROBE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: _FailingResponse(b"\x00" * 5000, KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        load_dataset("fashion-mnist", progress=False)
    assert _all_files(tmp_path) == []


def _disk_full(self, path=None, *args, **kwargs):
    """Dataset.to_netcdf that writes half a file, then fails as a full disk would."""
    Path(path).write_bytes(b"CDF\x01" + b"\x00" * 64)
    raise OSError(28, "No space left on device")


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    from probe.results import load_dataset, save_dataset

    good = xr.Dataset({"bound_test": ("step", [1.0, 2.0])}, coords={"step": [0, 1]})
    path = save_dataset(good, tmp_path / "results.nc")
    monkeypatch.setattr(xr.Dataset, "to_netcdf", _disk_full)
    with pytest.raises(OSError):
        save_dataset(good * 2, path)
    assert _all_files(tmp_path) == ["results.nc"]
    monkeypatch.undo()
    xr.testing.assert_identical(load_dataset(path), good)


def test_failing_cell_leaves_only_whole_cells(tmp_path):
    import dataclasses

    import studies.estimator_validation as ev
    from probe.results import load_dataset
    from probe.runner import run_study

    calls = []

    def run_cell(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("cell crashed")
        return ev.run_cell(*args, **kwargs)

    study = dataclasses.replace(ev.STUDY, run_cell=run_cell)
    with pytest.raises(RuntimeError, match="cell crashed"):  # cell by cell: groups would call run_members
        run_study(study, "smoke", out=tmp_path, progress=False, ensemble=False, log=lambda m: None)
    files = _all_files(tmp_path)
    cells = [f for f in files if "/cells/" in f]
    assert len(cells) == 1 and not any("results.nc" in f for f in files), files
    assert all(not Path(f).name.startswith(".") for f in files), files
    load_dataset(tmp_path / cells[0])  # the finished cell is whole


def test_failed_report_write_keeps_the_previous_page(tmp_path, monkeypatch):
    from test_report import make_result

    import probe.io
    import probe.report as report

    out = report.write_report(make_result(seeds=2, steps=3), tmp_path / "page.html")
    before = out.read_bytes()

    class FullDisk:
        def __init__(self, path, mode):
            self.handle = open(path, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(probe.io, "open", FullDisk, raising=False)
    with pytest.raises(OSError):
        report.write_report(make_result(seeds=2, steps=3, study="other"), out)
    monkeypatch.undo()
    assert _all_files(tmp_path) == ["page.html"] and out.read_bytes() == before


def test_failed_analyze_write_leaves_no_partial_file(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from probe.cli.analyze import analyze

    z = np.random.default_rng(0).standard_normal((30, 3))
    np.save(tmp_path / "emb.npy", z)
    out = tmp_path / "out"
    monkeypatch.setattr(xr.Dataset, "to_netcdf", _disk_full)
    CliRunner().invoke(analyze, [str(tmp_path / "emb.npy"), "--analyzers", "geometry", "--out", str(out)])
    assert not out.exists() or _all_files(out) == [], _all_files(out)
