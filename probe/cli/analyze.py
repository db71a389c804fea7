"""`probe analyze`: run analyzers on saved embeddings and write analysis.nc and analysis.html.

Which analyzers exist, what each needs and how each is called on saved embeddings is
`probe.analyzers.registry`; this module reads the user's files, resolves the options to arrays,
runs the chosen analyzers and writes the results.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from probe.embeddings import read_arrays
from probe.errors import DataFormatError, ProbeError, UnknownNameError, unknown_name

if TYPE_CHECKING:  # the analyzers load torch and scikit-learn: imported when the command runs
    from probe.analyzers.registry import Entry, Inputs, Options

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
        arrays = read_arrays(path)
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

def _choose(requested: str, inputs: Inputs) -> list[Entry]:
    from probe.analyzers import get_analyzer
    from probe.analyzers.registry import REGISTRY, describe_needs, entries

    known = entries()
    if requested == "auto":
        return [entry for entry in REGISTRY if entry.auto(inputs)]
    names = list(dict.fromkeys(n.strip() for n in requested.split(",") if n.strip()))
    chosen = []
    for name in names:
        try:
            get_analyzer(name)
        except UnknownNameError as err:
            raise click.BadParameter(str(err), param_hint="--analyzers") from None
        entry = known[name]
        if entry.run is None:
            raise click.BadParameter(
                f"{name} needs a model, not saved embeddings; call probe.analyzers.{name} from Python.",
                param_hint="--analyzers",
            )
        if not entry.fits(inputs):
            raise click.UsageError(f"{name} needs {entry.needs}: pass {describe_needs(entry)}.")
        chosen.append(entry)
    return chosen


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
        check_same_length(z, paired, names=("the embeddings", "--paired"), caller="analyze")

    fraction = check_fraction(opts.test_fraction, name="--test-fraction", caller="analyze")
    strata = None if y is None else check_labels(y, name="labels", caller="analyze", n_samples=z.shape[0])
    tr, te = split_indices(z.shape[0], fraction, opts.seed, labels=strata, caller="analyze")
    part = lambda a, rows: None if a is None else a[rows]  # noqa: E731
    return Inputs(**data, z=z[tr], y=part(y, tr), paired=part(paired, tr),
                  test_z=z[te], test_y=part(y, te), test_paired=part(paired, te))


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
    from probe.analyzers.registry import Inputs, Options
    from probe.report.analysis import analysis_page
    from probe.report.html import write_page
    from probe.results import merge_prefixed, save_dataset

    arrays = read_arrays(embeddings)
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
    chosen = _choose(requested, Inputs(all_z=z, all_y=y, all_paired=p))
    names = [entry.name for entry in chosen]
    opts = Options(seed=seed, test_fraction=test_fraction, protocol=protocol, steps=steps, batch_size=batch_size)
    data = _held_out(z, y, p, tz, ty, tp, opts, names)

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
        for entry in chosen:
            click.echo(f"running {entry.name} ...", err=True)
            results[entry.name] = entry(data, opts)

    out = out if out is not None else Path("runs") / "analyze" / embeddings.stem
    out.mkdir(parents=True, exist_ok=True)
    merged = merge_prefixed(results)
    settings = {"source": embeddings.name, "key": key or "auto", "labels": labels or "none",
                "paired": paired or "none", "test_key": test_key or "none", "seed": seed,
                "test_fraction": test_fraction, "analyzers": ",".join(names)}
    merged.attrs.update({f"analyze_{k}": v for k, v in settings.items()})
    save_dataset(merged, out / "analysis.nc")  # atomic: a failure never leaves half a file
    write_page(out / "analysis.html", analysis_page(results, f"probe analyze: {embeddings.name}", settings))
    click.echo(f"wrote {out / 'analysis.nc'} and {out / 'analysis.html'}")
