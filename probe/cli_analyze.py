"""`probe analyze`: run analyzers on saved embeddings and write analysis.nc and analysis.html.

Registered in the main group with `main.add_command(analyze)`. Heavy imports (torch,
scikit-learn, the analyzers) happen inside the command, so `probe --help` stays fast.
"""
from __future__ import annotations

import os

import html
import zipfile
from pathlib import Path
from typing import Any

import click
import numpy as np

from probe.results import save_dataset
from probe.errors import DataFormatError, ProbeError, UnknownNameError, unknown_name

# Analyzers the command can run, and what each needs besides the embeddings.
NEEDS = {
    "linear_probe": ("labels",),
    "v_information": ("labels or paired",),
    "triplet_margins": ("labels or paired",),
    "mi_bounds": ("paired",),
    "ksg_mi": ("paired",),
    "geometry": (),
}
KSG_AUTO_MAX_DIMS = 20
DEFAULT_KEYS = ("z", "embeddings")

EXAMPLES = """\b
Examples:
  probe analyze embeddings.npz --labels y --analyzers linear_probe,v_information,triplet_margins
  probe analyze view1.npy --paired view2.npy --analyzers mi_bounds,v_information
  probe analyze train.npz --key z --labels y --test-key z_test --test-labels y_test --out runs/analyze/mnist

\b
Inputs: .npy (one array), .npz (named arrays, read with allow_pickle=False) or .nc (netCDF;
the variables of the file). --labels, --paired, --test-key, --test-labels and --test-paired
each take either the name of an array in the embeddings file or the path of another file
(.npy, or .npz/.nc holding a single suitable array).

\b
Held-out data: linear_probe and v_information are scored on --test-key/--test-labels when
given, else on a split of the rows made with --seed and --test-fraction (stratified by label
when there are labels). mi_bounds makes its own seeded split with the same fraction. The other
analyzers use every row of the embeddings.

\b
Output (--out, default runs/analyze/<file stem>/): analysis.nc, every analyzer's variables
prefixed with its name (linear_probe_accuracy, ...), and analysis.html, a self-contained
summary table.
"""


# --- reading ---------------------------------------------------------------------------------

def _read_arrays(path: Path) -> dict[str, np.ndarray]:
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
            import xarray as xr

            with xr.open_dataset(path, engine="netcdf4") as ds:
                return {str(name): np.asarray(var.values) for name, var in ds.data_vars.items()}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
        if isinstance(err, ProbeError):
            raise
        reason = "holds Python objects (dtype=object), which probe does not load (allow_pickle=False)" \
            if "Object arrays" in str(err) else f"could not be read as {suffix} ({type(err).__name__}: {err})"
        raise DataFormatError(f"{path.name}: the file {reason}. Is it truncated or in another format?") from err
    raise DataFormatError(f"{path.name}: unsupported file type '{path.suffix}'; use .npy, .npz or .nc.")


def _pick(arrays: dict[str, np.ndarray], ndim: int, preferred: tuple[str, ...], what: str, source: str) -> str:
    """The name of the only `ndim`-D array, else the first preferred name present."""
    candidates = [name for name, a in arrays.items() if a.ndim == ndim]
    if len(candidates) == 1:
        return candidates[0]
    for name in preferred:
        if name in candidates:
            return name
    found = ", ".join(f"{n} {arrays[n].shape}" for n in arrays) or "none"
    raise DataFormatError(
        f"{source}: cannot tell which array holds the {what} (arrays: {found}); "
        f"name it{' with --key' if what == 'embeddings' else ''}."
    )


def _resolve(spec: str | None, main: dict[str, np.ndarray], main_name: str, *, ndim: int, option: str,
             preferred: tuple[str, ...]) -> np.ndarray | None:
    """`spec` as an array of the embeddings file, else as a path to another file."""
    if spec is None:
        return None
    if spec in main:
        array = main[spec]
    elif Path(spec).is_file():
        path = Path(spec)
        arrays = _read_arrays(path)
        array = arrays[_pick(arrays, ndim, preferred, option.lstrip("-"), path.name)]
    else:
        raise DataFormatError(
            f"{option} '{spec}' is neither an array in {main_name} (arrays: {', '.join(main) or 'none'}) "
            "nor an existing file."
        )
    if array.ndim != ndim:
        raise DataFormatError(
            f"{option} '{spec}' is {array.ndim}-D (shape={array.shape}); a {ndim}-D array is required."
        )
    return array


def _main_array(arrays: dict[str, np.ndarray], key: str | None, path: Path) -> np.ndarray:
    if key is None:
        return arrays[_pick(arrays, 2, DEFAULT_KEYS, "embeddings", path.name)]
    if key not in arrays:
        raise unknown_name(f"array in {path.name}", key, list(arrays))
    return arrays[key]


# --- running ---------------------------------------------------------------------------------

def _choose(requested: str, have_labels: bool, paired: np.ndarray | None, z: np.ndarray) -> list[str]:
    from probe.analyzers import get_analyzer

    if requested == "auto":
        names = ["geometry"]
        if have_labels:
            names += ["linear_probe", "v_information", "triplet_margins"]
        if paired is not None:
            names += [n for n in ("v_information", "triplet_margins", "mi_bounds") if n not in names]
            if z.shape[1] + paired.shape[1] <= KSG_AUTO_MAX_DIMS:
                names.append("ksg_mi")
        return names
    names = [n.strip() for n in requested.split(",") if n.strip()]
    for name in names:
        try:
            get_analyzer(name)
        except UnknownNameError as err:
            raise click.BadParameter(str(err), param_hint="--analyzers") from None
        if name not in NEEDS:
            raise click.BadParameter(
                f"{name} needs a model, not saved embeddings; call probe.analyzers.{name} from Python.",
                param_hint="--analyzers",
            )
        need = NEEDS[name]
        missing = need and not (("labels" in need[0] and have_labels) or ("paired" in need[0] and paired is not None))
        if missing:
            raise click.UsageError(f"{name} needs {need[0]}: pass --{need[0].split()[0]}" +
                                   (" or --paired." if "or" in need[0] else "."))
    return list(dict.fromkeys(names))


def _run(name: str, data: dict[str, Any], opts: dict[str, Any]):
    from probe.analyzers import get_analyzer

    fn, seed = get_analyzer(name), opts["seed"]
    z, y, p = data["z"], data["y"], data["paired"]
    tz, ty, tp = data["test_z"], data["test_y"], data["test_paired"]
    if name == "linear_probe":
        return fn(z, y, tz, ty, protocol=opts["protocol"], seed=seed)
    if name == "v_information":
        if y is not None:
            return fn(z, y, test_z=tz, test_y=ty, seed=seed)
        return fn(z, target=p, test_z=tz, test_target=tp, seed=seed)
    if name == "triplet_margins":
        return fn(data["all_z"], data["all_paired"], labels=data["all_y"], seed=seed)
    if name == "mi_bounds":
        return fn(data["all_z"], data["all_paired"], steps=opts["steps"], batch_size=opts["batch_size"],
                  test_fraction=opts["test_fraction"], seed=seed)
    if name == "ksg_mi":
        return fn(data["all_z"], data["all_paired"], seed=seed)
    return fn(data["all_z"], labels=data["all_y"], paired=data["all_paired"], seed=seed)


def _held_out(z, y, paired, test_z, test_y, test_paired, opts) -> dict[str, Any]:
    """Train/test parts for the analyzers that score held-out rows."""
    data = {"all_z": z, "all_y": y, "all_paired": paired}
    if test_z is not None:
        if y is not None and test_y is None:
            raise click.UsageError("--test-key was given with --labels but without --test-labels.")
        if y is None and paired is not None and test_paired is None and "v_information" in opts["names"]:
            raise click.UsageError("v_information on --paired with --test-key needs --test-paired too.")
        return {**data, "z": z, "y": y, "paired": paired,
                "test_z": test_z, "test_y": test_y, "test_paired": test_paired}
    from probe.analyzers._common import split_indices
    from probe.validation import check_fraction, check_labels, check_same_length

    if paired is not None:
        check_same_length(z, paired, names=("the embeddings", "--paired"), caller="analyze")

    fraction = check_fraction(opts["test_fraction"], name="--test-fraction", caller="analyze")
    strata = None if y is None else check_labels(y, name="labels", caller="analyze", n_samples=z.shape[0])
    tr, te = split_indices(z.shape[0], fraction, opts["seed"], labels=strata, caller="analyze")
    part = lambda a, rows: None if a is None else a[rows]  # noqa: E731
    return {**data, "z": z[tr], "y": part(y, tr), "paired": part(paired, tr),
            "test_z": z[te], "test_y": part(y, te), "test_paired": part(paired, te)}


# --- writing ---------------------------------------------------------------------------------

def _prefixed(results: dict[str, Any]):
    """Merge analyzer Datasets, prefixing variables and attributes with the analyzer name.

    A dimension whose coordinate (or size) differs between analyzers is renamed
    <analyzer>_<dim> so nothing is silently aligned or filled with NaN.
    """
    import xarray as xr

    seen: dict[str, Any] = {}
    parts = []
    for analyzer, ds in results.items():
        renames = {}
        for dim, size in ds.sizes.items():
            values = ds[dim].values if dim in ds.coords else size
            if dim in seen and not np.array_equal(seen[dim], values):
                renames[dim] = f"{analyzer}_{dim}"
            else:
                seen[dim] = values
        ds = ds.rename({**renames, **{v: f"{analyzer}_{v}" for v in ds.data_vars}})
        ds.attrs = {f"{analyzer}_{k}": v for k, v in ds.attrs.items()}
        parts.append(ds)
    # "override" keeps each variable's own attrs (each name occurs once); dataset attrs are rebuilt below.
    merged = xr.merge(parts, compat="no_conflicts", join="exact", combine_attrs="override")
    merged.attrs = {}
    for ds in parts:
        merged.attrs.update(ds.attrs)
    return merged


def _format(variable) -> str:
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


def _html(results: dict[str, Any], title: str, settings: dict[str, Any]) -> str:
    e = html.escape
    rows = []
    for analyzer, ds in results.items():
        rows.append(f'<h2>{e(analyzer)}</h2><p class="method">{e(str(ds.attrs.get("method", "")))}</p>')
        rows.append("<table><tr><th>variable</th><th>value</th><th>units</th><th>meaning</th></tr>")
        for name, var in ds.data_vars.items():
            cells = (name, _format(var), var.attrs.get("units", ""), var.attrs.get("long_name", ""))
            rows.append("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in cells) + "</tr>")
        rows.append("</table>")
        params = "; ".join(f"{k}={v}" for k, v in ds.attrs.items() if k not in ("analyzer", "method"))
        rows.append(f'<p class="params">{e(params)}</p>')
    setting_rows = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in settings.items())
    style = ("body{font-family:sans-serif;max-width:70em;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
             "text-align:left;vertical-align:top}th{background:#f3f3f3}.method,.params{color:#555;font-size:.9em}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<style>{style}</style></head><body><h1>{e(title)}</h1><table>{setting_rows}</table>"
            f"{''.join(rows)}</body></html>\n")


# --- the command -----------------------------------------------------------------------------

@click.command("analyze", epilog=EXAMPLES, context_settings={"max_content_width": 100})
@click.argument("embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", help="Array of EMBEDDINGS (.npz/.nc) to analyse. Default: the only 2-D array, else 'z' or "
              "'embeddings'. Example: --key z")
@click.option("--labels", help="Class labels: an array name in EMBEDDINGS or a file path. Example: --labels y")
@click.option("--paired", help="The paired view's embeddings (same rows): an array name in EMBEDDINGS or a file "
              "path. Example: --paired view2.npy")
@click.option("--test-key", help="Held-out embeddings: an array name in EMBEDDINGS or a file path. "
              "Example: --test-key z_test")
@click.option("--test-labels", help="Labels of the held-out embeddings (name or path). Example: --test-labels y_test")
@click.option("--test-paired", help="Paired view of the held-out embeddings (name or path), for v_information on "
              "--paired. Example: --test-paired view2_test.npy")
@click.option("--analyzers", "requested", default="auto", show_default=True,
              help="Comma-separated analyzers: linear_probe, v_information, triplet_margins, mi_bounds, ksg_mi, "
              "geometry. 'auto' runs every one the inputs allow (ksg_mi only up to 20 joint dimensions). "
              "Example: --analyzers linear_probe,geometry")
@click.option("--protocol", type=click.Choice(["paper", "converged"]), default="paper", show_default=True,
              help="linear_probe protocol: the paper's SAGA tol 0.1, or L-BFGS to tol 1e-6. "
              "Example: --protocol converged")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Critic training steps per estimator for mi_bounds. Example: --steps 500")
@click.option("--batch-size", type=click.IntRange(min=2), default=128, show_default=True,
              help="mi_bounds batch size K, for training and for the held-out bound (InfoNCE <= log K). "
              "Example: --batch-size 64")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of every split, sampler and critic. Example: --seed 3")
@click.option("--test-fraction", type=float, default=0.2, show_default=True,
              help="Held-out share of the rows when no test set is given. Example: --test-fraction 0.25")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder. Default: runs/analyze/<EMBEDDINGS stem>/. Example: --out runs/analyze/mnist")
@click.option("--threads", type=click.IntRange(min=1),
              help="Limit torch and BLAS threads (on a busy machine 1 is often much faster). Example: --threads 1")
def analyze(embeddings: Path, key, labels, paired, test_key, test_labels, test_paired, requested, protocol,
            steps, batch_size, seed, test_fraction, out, threads) -> None:
    """Measure saved embeddings: probe accuracy, V-information, triplet margins, MI bounds, geometry.

    EMBEDDINGS is a .npy, .npz or .nc file holding an (n, d) array.
    """
    try:
        _analyze(embeddings, key, labels, paired, test_key, test_labels, test_paired, requested, protocol,
                 steps, batch_size, seed, test_fraction, out, threads)
    except ProbeError as err:
        raise click.ClickException(str(err)) from None


def _analyze(embeddings, key, labels, paired, test_key, test_labels, test_paired, requested, protocol,
             steps, batch_size, seed, test_fraction, out, threads) -> None:
    arrays = _read_arrays(embeddings)
    if key is not None and embeddings.suffix.lower() == ".npy":
        raise click.UsageError("--key applies to .npz and .nc files; a .npy file holds a single array.")
    z = _main_array(arrays, key, embeddings)
    resolve = lambda spec, ndim, option, preferred=(): _resolve(  # noqa: E731
        spec, arrays, embeddings.name, ndim=ndim, option=option, preferred=preferred)
    y = resolve(labels, 1, "--labels", ("labels", "y"))
    p = resolve(paired, 2, "--paired", ("paired", "z2"))
    tz = resolve(test_key, 2, "--test-key", ("z_test", "test_z"))
    ty = resolve(test_labels, 1, "--test-labels", ("test_labels", "y_test"))
    tp = resolve(test_paired, 2, "--test-paired", ())
    names = _choose(requested, y is not None, p, z)
    opts = dict(seed=seed, test_fraction=test_fraction, protocol=protocol, steps=steps, batch_size=batch_size,
                names=names)
    data = _held_out(z, y, p, tz, ty, tp, opts)

    import contextlib

    results = {}
    with contextlib.ExitStack() as stack:
        if threads is not None:
            import torch
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(threads))
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            stack.callback(torch.set_num_threads, previous)
        for name in names:
            click.echo(f"running {name} ...", err=True)
            results[name] = _run(name, data, opts)

    out = out if out is not None else Path("runs") / "analyze" / embeddings.stem
    out.mkdir(parents=True, exist_ok=True)
    merged = _prefixed(results)
    settings = {"source": embeddings.name, "key": key or "auto", "labels": labels or "none",
                "paired": paired or "none", "test_key": test_key or "none", "seed": seed,
                "test_fraction": test_fraction, "analyzers": ",".join(names)}
    merged.attrs.update({f"analyze_{k}": v for k, v in settings.items()})
    save_dataset(merged, out / "analysis.nc")  # atomic: a failure never leaves half a file
    page = out / "analysis.html"
    tmp = page.with_name(f".{page.name}.tmp")
    try:
        tmp.write_text(_html(results, f"probe analyze: {embeddings.name}", settings), encoding="utf-8")
        os.replace(tmp, page)
    finally:
        tmp.unlink(missing_ok=True)
    click.echo(f"wrote {out / 'analysis.nc'} and {out / 'analysis.html'}")
