"""`probe analyze`'s table and merged file: one name per variable, each value with its interval and note.

Every analyzer's Dataset becomes rows of (name, value, interval, units, note) on stdout and
variables `<analyzer>_<variable>` of analysis.nc, without a doubled name: a variable that is
the analyzer's own name or a part of it (`v_information`'s `v_information`, `alignment_uniformity`'s
`alignment`) keeps its own name. An MI value in nats or bits is never printed without its
verdict ("reliable" or "UNRELIABLE: <reason>").
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr

MI_ANALYZERS = ("mi_estimate", "mi_bounds", "ksg_mi")  # their values in nats always carry a reliability note
# a value beside which a `kind` variable says "estimate" or "lower_bound" (mi_estimate's result and candidates)
KIND_OF = {"mutual_information": "kind", "candidate_estimate": "candidate_kind"}
WIDEST_VALUE = 48  # characters; a longer value (a method's description) is printed in full below the table


def _part_of(variable: str, analyzer: str) -> bool:
    """Whether `variable` is the analyzer's name, starts with it, or is a run of its words."""
    if variable == analyzer or variable.startswith(f"{analyzer}_"):
        return True
    words, parts = analyzer.split("_"), variable.split("_")
    return any(words[i:i + len(parts)] == parts for i in range(len(words) - len(parts) + 1))


def variable_names(results: dict[str, xr.Dataset]) -> dict[tuple[str, str], str]:
    """{(analyzer, variable): name in analysis.nc}: <analyzer>_<variable>, without a doubled prefix
    (v_information's `v_information` stays `v_information`); a shortened name that would clash
    with another variable's keeps the full one."""
    from collections import Counter

    full = {(a, str(v)): f"{a}_{v}" for a, ds in results.items() for v in ds.data_vars}
    short = {(a, v): (v if _part_of(v, a) else name) for (a, v), name in full.items()}
    counts = Counter(short.values())
    return {key: (name if counts[name] == 1 else full[key]) for key, name in short.items()}


def merge(results: dict[str, xr.Dataset]) -> xr.Dataset:
    from probe.results import merge_prefixed

    renames = {f"{a}_{v}": name for (a, v), name in variable_names(results).items() if name != f"{a}_{v}"}
    return merge_prefixed(results).rename(renames)


def _cell(value: Any) -> str:
    import numpy as np

    value = np.asarray(value)
    return f"{float(value):.4g}" if value.dtype.kind == "f" else str(value.item() if value.ndim == 0 else value.tolist())


def _verdicts(ds: xr.Dataset) -> dict[str, tuple[str, str | None]]:
    """{value: (its reliable variable, its reason)}: `reliable` judges the first value in nats or bits
    with a value per verdict (mi_bounds' `bound`, mi_estimate's `mutual_information`), `<p>_reliable` `<p>_*`."""
    out: dict[str, tuple[str, str | None]] = {}
    for name, var in ds.data_vars.items():
        name = str(name)
        prefix = name.split("_")[0]
        if name.endswith(("reliable", "reason")) or var.attrs.get("units") not in ("nats", "bits"):
            continue
        if f"{prefix}_reliable" in ds:
            reason = next((r for r in (f"{prefix}_reason", f"{prefix}_unreliable_reason") if r in ds), None)
            out[name] = (f"{prefix}_reliable", reason)
        elif "reliable" in ds and "reliable" not in {v for v, _ in out.values()} \
                and set(ds["reliable"].dims) <= set(var.dims):
            out[name] = ("reliable", "unreliable_reason" if "unreliable_reason" in ds else None)
    return out


def _note(ds: xr.Dataset, verdict: tuple[str, str | None] | None, index: dict, value: np.ndarray,
          mi_value: bool) -> str:
    """'reliable' or 'UNRELIABLE: <reason>'; without a verdict an MI value that is negative or not
    finite is still flagged, and any other non-finite value is marked."""
    import numpy as np

    if verdict is not None:
        reliable, reason = (None if v is None else ds[v].sel({d: c for d, c in index.items() if d in ds[v].dims})
                            for v in verdict)
        if bool(reliable.values):
            return "reliable"
        return f"UNRELIABLE: {_cell(reason.values) if reason is not None else 'no reason given'}"
    finite = value.dtype.kind != "f" or bool(np.isfinite(value))
    if mi_value and (not finite or float(value) < 0):
        return "UNRELIABLE: " + ("not finite" if not finite else "negative (MI is never below 0)")
    return "" if finite else "not finite"


def _rows(analyzer: str, ds: xr.Dataset, names: dict[tuple[str, str], str]) -> list[tuple[str, ...]]:
    """(name, value, interval, units, note) for every variable a table can hold."""
    import numpy as np

    from probe.report.intervals import interval_name  # `<name>_ci`, or `<x>_ci` of an `<x>_estimate`

    rows, verdicts = [], _verdicts(ds)
    skip = {v for pair in verdicts.values() for v in pair if v} | {"reliable", "unreliable_reason"}
    skip |= {v for v in ds.data_vars if str(v).endswith("_ci")}
    for var_name, var in ds.data_vars.items():
        if var_name in skip or "sample" in var.dims:  # per-row arrays stay in analysis.nc
            continue
        name, units = names[(analyzer, str(var_name))], str(var.attrs.get("units", ""))
        ci = ds.get(interval_name(ds, str(var_name)) or "")
        mi_value = analyzer in MI_ANALYZERS and units in ("nats", "bits")
        if var.ndim == 0 or (var.ndim == 1 and var.size <= 12 and var.dims[0] in ds.coords):
            labels = [{}] if var.ndim == 0 else [{var.dims[0]: c} for c in ds[var.dims[0]].values]
            for index in labels:
                value = var.sel(index).values if index else var.values
                interval = ""
                if ci is not None and ci.ndim == var.ndim + 1:
                    lo, hi = np.asarray(ci.sel(index).values if index else ci.values, dtype=float).ravel()[:2]
                    interval = f"[{lo:.4g}, {hi:.4g}]"
                note = _note(ds, verdicts.get(str(var_name)), index, value, mi_value)
                label = f"{name}[{next(iter(index.values()))}]" if index else name
                shown = _cell(value)
                kind = ds.get(KIND_OF.get(str(var_name), ""))
                if kind is not None and str(kind.sel(index).values if index else kind.values) == "lower_bound":
                    shown = f"≥ {shown}"  # a bound only: never read as an estimate
                rows.append((label, shown, interval, units, note))
        else:
            values = np.asarray(var.values)
            finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
            shape = ", ".join(f"{d}: {n}" for d, n in var.sizes.items())
            median = f"median {np.median(finite):.4g}" if finite.size and values.dtype.kind in "fiu" else ""
            rows.append((name, median or "—", f"array ({shape})", units, ""))
    return rows


def table(results: dict[str, xr.Dataset], skipped: dict[str, str]) -> str:
    names = variable_names(results)
    rows = [("variable", "value", "interval", "units", "note")]
    for analyzer, ds in results.items():
        rows += _rows(analyzer, ds, names)
    notes = []
    for i, row in enumerate(rows[1:], 1):  # a sentence as a value would widen every row: it goes below the table
        if len(row[1]) > WIDEST_VALUE and not row[0].endswith("_summary"):  # the result in words stays in place
            notes.append(f"[{len(notes) + 1}] {row[0]}: {row[1]}")
            rows[i] = (row[0], f"[{len(notes)}] below", *row[2:])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(f"{c:<{w}}" for c, w in zip(row, widths)).rstrip() for row in rows]
    lines += notes
    lines += [f"skipped {name}: {reason}" for name, reason in skipped.items()]
    return "\n".join(lines)
