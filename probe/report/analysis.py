"""The page `probe analyze` writes beside analysis.nc: one table per analyzer, self-contained."""
from __future__ import annotations

from typing import Any

import numpy as np

from probe.report.html import escape


def format_value(variable) -> str:
    values = variable.values
    if values.ndim == 0:
        return f"{values.item():.4g}" if values.dtype.kind == "f" else str(values.item())
    if values.ndim == 1 and values.size <= 25:
        dim = variable.dims[0]
        labels = variable[dim].values if dim in variable.coords else range(values.size)
        fmt = (lambda v: f"{v:.4g}") if values.dtype.kind == "f" else str
        return ", ".join(f"{lab}: {fmt(v)}" for lab, v in zip(labels, values))
    finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    summary = f", median {np.median(finite):.4g}" if finite.size else ""
    return f"array {dict(variable.sizes)}{summary}"


def units_text(units: object) -> str:
    """A variable's `units` attr as a table shows it: "1" is "dimensionless", none is "—"."""
    text = str(units or "").strip()
    return "dimensionless" if text == "1" else text or "—"


def analysis_page(results: dict[str, Any], title: str, settings: dict[str, Any]) -> str:
    e = escape
    rows = []
    for analyzer, ds in results.items():
        rows.append(f'<h2>{e(analyzer)}</h2><p class="method">{e(str(ds.attrs.get("method", "")))}</p>')
        rows.append("<table><tr><th>variable</th><th>value</th><th>units</th><th>meaning</th></tr>")
        for name, var in ds.data_vars.items():
            cells = (name, format_value(var), units_text(var.attrs.get("units")), var.attrs.get("long_name", ""))
            rows.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
        rows.append("</table>")
        params = "; ".join(f"{k}={v}" for k, v in ds.attrs.items() if k not in ("analyzer", "method"))
        rows.append(f'<p class="params">{e(params)}</p>')
    setting_rows = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in settings.items())
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
             "text-align:left;vertical-align:top}th{background:#f3f3f3}.method,.params{color:#555;font-size:.9em}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<style>{style}</style></head><body><h1>{e(title)}</h1>"
            f"<table><tr><th>setting</th><th>value</th></tr>{setting_rows}</table>"
            f"{''.join(rows)}</body></html>\n")
