"""`probe analyze`: run analyzers on saved embeddings and write analysis.nc and analysis.html.

Which analyzers exist, what each needs and how each is called on saved embeddings is
`probe.analyzers.registry`; this module reads the user's files, resolves the options to arrays,
checks them in the user's own row order, runs the chosen analyzers (in auto mode only those
the inputs suit, each failure kept to its analyzer), writes what finished and prints a table.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import click

from probe.errors import DataFormatError, ProbeError, UnknownNameError, unknown_name

if TYPE_CHECKING:  # numpy, torch and scikit-learn load when the command runs: `probe --help` stays fast
    import numpy as np
    import xarray as xr

    from probe.analyzers.registry import Entry, Inputs, Options

DEFAULT_KEYS = ("z", "embeddings")
CALLER = "analyze"
SHAPE_DEFAULT = "chosen from the data's shape"  # None lets mi_bounds size steps, batch, critic, lr to its data

EXAMPLES = """\b
Examples:
  probe analyze embeddings.npz --labels y --analyzers linear_probe,v_information,triplet_margins
  probe analyze view1.npy --paired view2.npy --analyzers mi_bounds,v_information
  probe analyze train.npz --key z --labels y --test-key z_test --test-labels y_test --out runs/analyze/mnist

\b
Inputs: .npy (one array), .npz (named arrays, read with allow_pickle=False) or .nc (netCDF;
the variables of the file). --labels, --paired, --test-key, --test-labels and --test-paired
each take either the name of an array in the embeddings file or the path of another file
(.npy, or .npz/.nc holding a single suitable array). Labels are (n,) or (n, 1).

\b
Held-out data: linear_probe and v_information are scored on --test-key/--test-labels when given,
else on a split made with --seed and --test-fraction (stratified by label); mi_bounds makes its
own seeded split; the other analyzers use every row.

\b
Auto mode runs every analyzer the inputs suit and says why it skips the others; a failing
analyzer never costs the ones that finished. Output (--out, default runs/analyze/<EMBEDDINGS
folder>/<stem>/, or a new -2, -3, ... beside an earlier analysis): analysis.nc (variables
<analyzer>_<variable>, e.g. linear_probe_accuracy, v_information) and analysis.html (tables, and
charts of the values with a confidence interval). The table goes to stdout, progress to stderr.
"""


# --- reading ---------------------------------------------------------------------------------

LABEL_KEYS = ("labels", "y")


def _is_label_column(a: np.ndarray) -> bool:
    """(n, 1) integers, bools or strings: labels saved as a column, as scikit-learn users often do."""
    return a.ndim == 2 and a.shape[1] == 1 and a.dtype.kind in "iubUS"


def _pick(arrays: dict[str, np.ndarray], ndim: int, preferred: tuple[str, ...], what: str, source: str) -> str:
    """The name of the only `ndim`-D array, else the first preferred name present."""
    if ndim == 1:
        candidates = [name for name, a in arrays.items() if a.ndim == 1 or a.shape[1:] == (1,)]
    else:  # an (n, 1) column of class ids is labels, not a one-feature embedding
        candidates = [name for name, a in arrays.items() if a.ndim == 2 and not _is_label_column(a)]
    if len(candidates) == 1:
        return candidates[0]
    for name in preferred:
        if name in candidates:
            return name
    if ndim == 2 and len(arrays) == 1:
        (name, only), = arrays.items()
        raise DataFormatError(_not_2d(f"{source}", only))
    found = ", ".join(f"{n} {arrays[n].shape}" for n in arrays) or "none"
    raise DataFormatError(
        f"{source}: cannot tell which array holds the {what} (arrays: {found}); "
        f"name it{' with --key' if what == 'embeddings' else ''}."
    )


def _not_2d(name: str, a: np.ndarray) -> str:
    """The message for embeddings that are not an (n, d) array, with the reshape that fixes a 1-D one."""
    fix = ("reshape a single feature per row with x[:, None] (or x.reshape(-1, 1)) and save it again" if a.ndim == 1
           else "save one (n, d) array: one row per example, one column per feature")
    return f"{name} must be 2-D (n, d); got shape {a.shape}; {fix}."


def _resolve(spec: str | None, main: dict[str, np.ndarray], main_name: str, *, ndim: int, option: str,
             preferred: tuple[str, ...]) -> tuple[np.ndarray, str] | None:
    """`spec` as an array of the embeddings file, else as a path to another file; (array, its name)."""
    if spec is None:
        return None
    from probe.embeddings import read_arrays

    if spec in main:
        array, name = main[spec], f"{spec} in {main_name}"
    elif Path(spec).is_file():
        path = Path(spec)
        arrays = read_arrays(path)
        key = _pick(arrays, ndim, preferred, option.lstrip("-"), path.name)
        array, name = arrays[key], f"{key} in {path.name}"
    else:
        raise DataFormatError(
            f"{option} '{spec}' is neither an array in {main_name} (arrays: {', '.join(main) or 'none'}) "
            "nor an existing file."
        )
    if ndim == 1 and array.shape[1:] == (1,):  # (n, 1) labels, as scikit-learn users often save them
        array = array[:, 0]
    if array.ndim != ndim:
        required = "one class label per row: shape (n,) or (n, 1)" if ndim == 1 else "an (n, d) array"
        raise DataFormatError(
            f"{option} '{spec}' is {array.ndim}-D (shape={array.shape}); {required} is required."
        )
    return array, name


def _labels_beside(arrays: dict[str, np.ndarray], z: np.ndarray, z_name: str, source: str) -> str | None:
    """The name of a `labels` or `y` array beside the embeddings ((n,) or (n, 1), one per row), or None."""
    for name in LABEL_KEYS:
        a = arrays.get(name)
        if a is not None and z_name != f"{name} in {source}" and a.shape[:1] == z.shape[:1] \
                and (a.ndim == 1 or _is_label_column(a)):
            click.echo(f"using {name} {a.shape} in {source} as the labels (pass --labels to choose another array)",
                       err=True)
            return name
    return None


def _main_array(arrays: dict[str, np.ndarray], key: str | None, path: Path) -> tuple[np.ndarray, str]:
    if key is None:
        key = _pick(arrays, 2, DEFAULT_KEYS, "embeddings", path.name)
    elif key not in arrays:
        raise unknown_name(f"array in {path.name}", key, list(arrays))
    return arrays[key], f"{key} in {path.name}"


def _check_finite_rows(named: list[tuple[np.ndarray | None, str]]) -> None:
    """Every float array finite, checked before any split so that a row number is the user's own."""
    from probe.validation import check_array

    for array, name in named:
        if array is not None and array.dtype.kind == "f":
            check_array(array, name=name, caller=CALLER, ndim=array.ndim, min_samples=0, min_features=0)


# --- choosing and running ----------------------------------------------------------------------

def _choose(requested: str, inputs: Inputs) -> tuple[list[Entry], dict[str, str]]:
    """The analyzers to run and, in auto mode, {analyzer: why it is skipped}."""
    from probe.analyzers import get_analyzer
    from probe.analyzers.registry import REGISTRY, entries

    if requested == "auto":
        reasons = {entry.name: entry.skip_reason(inputs) for entry in REGISTRY}
        return [e for e in REGISTRY if reasons[e.name] is None], {k: v for k, v in reasons.items() if v}
    known = entries()
    chosen = []
    for name in dict.fromkeys(n.strip() for n in requested.split(",") if n.strip()):
        try:
            get_analyzer(name)
        except UnknownNameError as err:
            raise click.BadParameter(str(err), param_hint="--analyzers") from None
        entry = known[name]
        reason = entry.unfit_reason(inputs)
        if not entry.on_embeddings:
            raise click.BadParameter(f"{name} {reason}.", param_hint="--analyzers")
        if reason is not None:
            raise click.UsageError(f"{name} {reason}.")
        chosen.append(entry)
    return chosen, {}


def _held_out(z, y, paired, test_z, test_y, test_paired, opts: Options, names: list[str]) -> Inputs:
    """Train/test parts for the analyzers that score held-out rows."""
    from probe.analyzers.registry import Inputs

    data = {"all_z": z, "all_y": y, "all_paired": paired}
    if test_z is not None:
        if y is not None and test_y is None:
            raise click.UsageError("--test-key was given with --labels but without --test-labels.")
        if y is None and paired is not None and test_paired is None and "v_information" in names:
            raise click.UsageError("v_information on --paired with --test-key needs --test-paired too.")
        return Inputs(**data, z=z, y=y, paired=paired, test_z=test_z, test_y=test_y, test_paired=test_paired)
    from probe.analyzers._common import split_indices
    from probe.validation import check_fraction, check_labels, check_same_length

    if paired is not None:
        check_same_length(z, paired, names=("the embeddings", "--paired"), caller=CALLER)
    fraction = check_fraction(opts.test_fraction, name="--test-fraction", caller=CALLER)
    strata = None if y is None else check_labels(y, name="labels", caller=CALLER, n_samples=z.shape[0])
    tr, te = split_indices(z.shape[0], fraction, opts.seed, labels=strata, caller=CALLER)
    part = lambda a, rows: None if a is None else a[rows]  # noqa: E731
    return Inputs(**data, z=z[tr], y=part(y, tr), paired=part(paired, tr),
                  test_z=z[te], test_y=part(y, te), test_paired=part(paired, te))


def _run_all(chosen: list[Entry], data: Inputs, opts: Options, threads: int | None,
             auto: bool) -> tuple[dict[str, xr.Dataset], dict[str, str]]:
    """Run each analyzer; a user-facing failure is kept to its analyzer ({name: message})."""
    import contextlib

    results, failed = {}, {}
    with contextlib.ExitStack() as stack:
        if threads is not None:
            import torch
            from threadpoolctl import threadpool_limits

            stack.enter_context(threadpool_limits(threads))
            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            stack.callback(torch.set_num_threads, previous)
        for entry in chosen:
            click.echo(f"running {entry.name} ...", err=True)
            try:
                results[entry.name] = entry(data, opts)
            except ProbeError as err:
                failed[entry.name] = str(err).removeprefix(f"{entry.name}: ")  # the table names it already
                click.echo(f"  {entry.name} {'skipped' if auto else 'failed'}: {failed[entry.name]}", err=True)
    return results, failed


# --- writing -----------------------------------------------------------------------------------

def _out_folder(out: Path | None, embeddings: Path, overwrite: bool, paired: Path | None = None) -> Path:
    """--out (refused if it holds an analysis, unless --overwrite), else a fresh default folder named
    after the embeddings file, and after the paired file too when --paired is another file."""
    if out is not None:
        if (out / "analysis.nc").exists() and not overwrite:
            raise click.UsageError(f"--out {out} already holds an analysis (analysis.nc); pass --overwrite to "
                                   "replace it, or choose another --out.")
        return out
    # The parent folder is part of the name: two cells' step-000020.npz files never share a folder.
    parent = embeddings.resolve().parent.name or "root"
    stem = embeddings.stem + (f"+{paired.stem}" if paired is not None else "")
    base = Path("runs") / "analyze" / parent / stem
    if overwrite or not (base / "analysis.nc").exists():
        return base
    candidates = (base.with_name(f"{base.name}-{n}") for n in itertools.count(2))
    candidate = next(c for c in candidates if not (c / "analysis.nc").exists())
    click.echo(f"{base} holds an earlier analysis; writing to {candidate} (--overwrite replaces it).", err=True)
    return candidate


class _AnalyzersOption(click.Option):
    """--analyzers, whose help lists the registry's analyzers: read when the help is shown, so that
    `probe --help` never imports them."""

    def get_help_record(self, ctx: click.Context):
        from probe.analyzers.registry import REGISTRY

        names = ", ".join(e.name for e in REGISTRY if e.on_embeddings)
        manual = ", ".join(e.name for e in REGISTRY if e.on_embeddings and not e.auto)
        self.help = self._template.format(names=names, manual=f"not {manual}, which run when named" if manual else
                                          "all of them")
        return super().get_help_record(ctx)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._template = self.help


# --- the command -----------------------------------------------------------------------------

@click.command("analyze", epilog=EXAMPLES, context_settings={"max_content_width": 100})
@click.argument("embeddings", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--key", help="Array of EMBEDDINGS (.npz/.nc) to analyse. Default: the only 2-D array, else 'z' or "
              "'embeddings'. Example: --key z")
@click.option("--labels", help="Class labels, (n,) or (n, 1): an array name in EMBEDDINGS or a file path. "
              "Example: --labels y")
@click.option("--paired", help="The paired view's embeddings (same rows): an array name in EMBEDDINGS or a file "
              "path. Example: --paired view2.npy")
@click.option("--test-key", help="Held-out embeddings: an array name in EMBEDDINGS or a file path. "
              "Example: --test-key z_test")
@click.option("--test-labels", help="Labels of the held-out embeddings (name or path). Example: --test-labels y_test")
@click.option("--test-paired", help="Paired view of the held-out embeddings (name or path), for v_information on "
              "--paired. Example: --test-paired view2_test.npy")
@click.option("--analyzers", "requested", cls=_AnalyzersOption, default="auto", show_default=True,
              help="Comma-separated analyzers: {names}. 'auto' runs every one the inputs suit ({manual}) and says "
              "why it skips the others. Example: --analyzers linear_probe,geometry")
@click.option("--protocol", type=click.Choice(["paper", "converged"]), default="paper", show_default=True,
              help="linear_probe protocol: the paper's SAGA tol 0.1, or L-BFGS to tol 1e-6. "
              "Example: --protocol converged")
@click.option("--steps", type=click.IntRange(min=1), default=None, show_default=SHAPE_DEFAULT,
              help="Most critic training steps per estimator for mi_bounds (it may stop early). Example: --steps 500")
@click.option("--batch-size", type=click.IntRange(min=2), default=None, show_default=SHAPE_DEFAULT,
              help="mi_bounds batch size K, for training and the held-out bound (InfoNCE <= log K). Example: --batch-size 64")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of every split, sampler and critic. Example: --seed 3")
@click.option("--test-fraction", type=float, default=0.2, show_default=True,
              help="Held-out share of the rows when no test set is given. Example: --test-fraction 0.25")
@click.option("--n-bootstrap", type=click.IntRange(min=0), default=200, show_default=True,
              help="Resamples of the held-out rows for each 95% interval (<var>_ci); 0: none. Example: --n-bootstrap 1000")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder. Default: runs/analyze/<EMBEDDINGS folder>/<EMBEDDINGS stem>/ (a new -2, -3, ... "
              "when it holds an analysis). Example: --out runs/analyze/mnist")
@click.option("--overwrite", is_flag=True, help="Replace the analysis already in the output folder. "
              "Example: --overwrite --out runs/analyze/mnist")
@click.option("--threads", type=click.IntRange(min=1),
              help="Limit torch and BLAS threads (on a busy machine 1 is often much faster). Example: --threads 1")
def analyze(embeddings: Path, **options) -> None:
    """Measure saved embeddings: probe accuracy, V-information, triplet margins, MI bounds, geometry.

    EMBEDDINGS is a .npy, .npz or .nc file holding an (n, d) array.
    """
    try:
        _analyze(embeddings, **options)
    except ProbeError as err:
        raise click.ClickException(str(err)) from None


def _analyze(embeddings, key, labels, paired, test_key, test_labels, test_paired, requested, protocol,
             steps, batch_size, seed, test_fraction, n_bootstrap, out, overwrite, threads) -> None:
    import probe
    from probe.analyzers.registry import Inputs, Options
    from probe.cli.table import merge, table
    from probe.devices import torch_build
    from probe.embeddings import read_arrays
    from probe.report.analysis import analysis_page
    from probe.report.html import write_page
    from probe.results import save_dataset

    if key is not None and embeddings.suffix.lower() == ".npy":
        raise click.UsageError("--key applies to .npz and .nc files; a .npy file holds a single array.")
    arrays = read_arrays(embeddings)
    z, z_name = _main_array(arrays, key, embeddings)
    resolve = lambda spec, ndim, option, preferred=(): _resolve(  # noqa: E731
        spec, arrays, embeddings.name, ndim=ndim, option=option, preferred=preferred) or (None, option)
    if labels is None and key is None:
        labels = _labels_beside(arrays, z, z_name, embeddings.name)
    (y, _), (p, p_name) = resolve(labels, 1, "--labels", LABEL_KEYS), resolve(paired, 2, "--paired", ("paired", "z2"))
    tz, tz_name = resolve(test_key, 2, "--test-key", ("z_test", "test_z"))
    ty, _ = resolve(test_labels, 1, "--test-labels", ("test_labels", "y_test"))
    tp, tp_name = resolve(test_paired, 2, "--test-paired", ())
    if z.ndim != 2:
        raise DataFormatError(_not_2d(z_name, z))
    if z.shape[0] == 0:
        raise DataFormatError(f"{z_name} has 0 rows (shape={z.shape}); the embeddings of at least 2 examples are "
                              "required. Was it saved before any example was encoded?")
    _check_finite_rows([(z, z_name), (p, p_name), (tz, tz_name), (tp, tp_name)])
    chosen, skipped = _choose(requested, Inputs(all_z=z, all_y=y, all_paired=p))
    if not chosen:
        raise click.UsageError("no analyzer suits these inputs:\n" + "\n".join(f"  {k}: {v}" for k, v in skipped.items()))
    opts = Options(seed=seed, test_fraction=test_fraction, protocol=protocol, steps=steps, batch_size=batch_size,
                   n_bootstrap=n_bootstrap)
    data = _held_out(z, y, p, tz, ty, tp, opts, [entry.name for entry in chosen])
    paired_file = Path(paired) if paired is not None and paired not in arrays else None
    out = _out_folder(out, embeddings, overwrite, paired_file)  # named only once the inputs passed every check
    results, failed = _run_all(chosen, data, opts, threads, auto=requested == "auto")
    skipped.update(failed if requested == "auto" else {})
    if not results:
        raise click.ClickException("every analyzer failed; nothing was written:\n"
                                   + "\n".join(f"  {k}: {v}" for k, v in failed.items()))

    merged = merge(results)
    settings = {"source": embeddings.name, "key": key or "auto", "labels": labels or "none",
                "paired": paired or "none", "test_key": test_key or "none", "seed": seed,
                "test_fraction": test_fraction, "n_bootstrap": n_bootstrap, "analyzers": ",".join(results),
                "skipped": "; ".join(f"{k}: {v}" for k, v in {**skipped, **failed}.items()) or "none",
                "probe": probe.__version__, "torch": "{torch_version} ({torch_build} build)".format(**torch_build())}
    merged.attrs.update({f"analyze_{k}": v for k, v in settings.items()})
    out.mkdir(parents=True, exist_ok=True)
    save_dataset(merged, out / "analysis.nc")  # atomic: a failure never leaves half a file
    write_page(out / "analysis.html", analysis_page(results, f"probe analyze: {embeddings.name}", settings))
    click.echo(table(results, skipped))
    click.echo(f"wrote {out / 'analysis.nc'} and {out / 'analysis.html'}")
    if failed and requested != "auto":
        raise click.ClickException("; ".join(f"{k} failed: {v}" for k, v in failed.items())
                                   + " (the other analyzers' results were written).")
