"""The main `probe` commands: run-study, report, list-studies, datasets (and `analyze`, from its own module).

Every heavy import (torch, the studies, the analyzers) happens inside a command, so `probe --help` stays fast.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click

from probe.cli.analyze import analyze
from probe.cli.parsing import parse_seeds, parse_set
from probe.cli.robustness import robustness
from probe.errors import ProbeError


class ProbeGroup(click.Group):
    """Print a user mistake as one clear line (no traceback); let real bugs raise."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ProbeError as err:
            raise click.ClickException(str(err)) from None


@click.group(cls=ProbeGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="probe")
def main() -> None:
    """probe: representation geometry versus mutual information.

    Reproduces Tschannen et al., "On Mutual Information Maximization for Representation
    Learning" (ICLR 2020) and measures what MI does not see.

    Results (paths, verdicts, tables) go to stdout; progress and logs to stderr.

    \b
    Quick start (offline, about 2-3 min on 2 CPU cores after the install):
      probe run-study invertible-encoders --dataset digits
      probe report runs/invertible-encoders/<run>/results.nc
    """


@main.command("run-study")
@click.argument("name")
@click.option("--preset", default="quick", show_default=True,
              help="quick (the default) = reduced for a laptop, minutes on a CPU; paper = the paper's exact "
                   "settings, GPU hours; smoke = seconds.")
@click.option("--dataset", default=None,
              help="mnist, fashion-mnist, cifar10 or digits (offline). Default: the preset's. Not with --data-dir.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="A folder holding the four MNIST-format IDX files (e.g. ../shared/data/mnist-5k).")
@click.option("--views", default=None, metavar="SPLIT",
              help="How an image becomes two views: top-bottom (the paper's halves, the default), left-right, or "
                   "random-split (a fixed random half of the pixels; random-split:SEED for another). Image studies only.")
@click.option("--seeds", default=None, metavar="N|LIST",
              help="Number of seeds (3 -> 0,1,2), a list (0,4,7) or a range (0-9). Default: the preset's.")
@click.option("--steps", type=int, default=None, help="Override the number of training steps.")
@click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE",
              help="Override one setting of the preset, e.g. --set learning_rate=3e-4 --set estimators=infonce,nwj.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="runs", show_default=True,
              help="Runs folder; results go to OUT/<study>/<preset>-<dataset>-<settings hash>/.")
@click.option("--report/--no-report", default=True, show_default=True,
              help="Write the HTML report beside the results, <run folder>/report.html, when the run finishes.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch and BLAS, per worker (default: cores // workers). Use 1 when other jobs "
                   "share the machine.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option("--executor", type=click.Choice(["local", "processes", "dask"]), default="local", show_default=True,
              help="Where cells run: this process; a pool of processes on this machine; a dask cluster. Each "
                   "worker trains one group of cells at a time (see --ensemble); with fewer groups than workers, "
                   "groups are split so that every worker has work.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Dask scheduler, e.g. tcp://host:8786 (with --executor dask). Default: a local cluster.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker processes for --executor processes or a local dask cluster (default: one per core).")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=None, metavar="STEPS",
              help="Save a mid-cell checkpoint every STEPS training steps (default 1000; 0: never). "
                   "A rerun resumes a killed cell from it, with the same numbers.")
@click.option("--ensemble/--no-ensemble", default=True, show_default=True,
              help="Train the cells that share an architecture (seeds, estimators, targets t) together as one "
                   "vectorised model; --no-ensemble trains one cell after another (the same numbers, to float "
                   "rounding).")
@click.option("--tf32", is_flag=True,
              help="Allow TensorFloat-32 in CUDA matmuls and convolutions. It only matters on CUDA GPUs of the "
                   "Ampere generation or newer, where it is faster and changes the numbers slightly; the default "
                   "runs them in full fp32 (convolutions too), for fidelity. Recorded in the results' attrs; a "
                   "--tf32 run gets its own run folder.")
@click.option("--save-embeddings", is_flag=True,
              help="Save g1's embeddings at every evaluation to <run>/embeddings/<cell>/step-N.npz, for "
                   "`probe analyze FILE --labels y --test-key z_test --test-labels y_test`.")
@click.option("--probe-workers", type=click.IntRange(min=0), default=None, metavar="N",
              help="Processes that fit the paper's linear probe (scikit-learn SAGA, CPU) while training goes on; "
                   "the same numbers as fitting it inline. Default: the cores training leaves free (on CUDA all "
                   "but one), at most 4; 0 fits it inline. Local executor only.")
@click.option("--yes", is_flag=True,
              help="Go on with a CPU run projected to take more than 3 h (it stops before training otherwise).")
@click.option("--max-memory", default=None, metavar="SIZE",
              help="Memory a group of cells trained together may take, e.g. 8GiB: groups are split to fit it (a "
                   "cell that cannot fit alone stops before training). Default: 3/4 of the memory available when "
                   "the run starts (on CUDA, of the GPU's free memory).")
def run_study_cmd(name, preset, dataset, data_dir, views, seeds, steps, set_values, device, out, report, threads,
                  no_progress, executor, scheduler, workers, checkpoint_every, ensemble, tf32, save_embeddings, probe_workers,
                  yes, max_memory):
    """Run (or resume) the study NAME and save its results as netCDF.

    After a few training steps it prints the projected wall time; on a CPU a run projected over
    3 h stops there unless --yes. Every cell (e.g. estimator × seed) is saved as soon as it
    finishes; rerunning the same command (after Ctrl-C too) skips finished cells and resumes a
    killed one from its last checkpoint. Cells
    run on --executor: in this process, in --workers processes, or on a dask cluster (each
    worker writes its cells; --out must be a folder every worker sees). See `probe
    list-studies` for the names.

    \b
    Examples:
      probe run-study invertible-encoders --dataset digits      # quick preset, offline, minutes
      probe run-study invertible-encoders --preset paper        # the paper's protocol, MNIST (a GPU job)
      probe run-study invertible-encoders --preset quick --data-dir ../shared/data/mnist-5k --seeds 3
      probe run-study invertible-encoders --preset quick --executor processes --workers 2
      probe run-study invertible-encoders --executor dask --scheduler tcp://head:8786
    """
    seed_choice, set_choice = parse_seeds(seeds), parse_set(set_values)  # typos fail before any import
    from probe.devices import set_threads
    from probe.results import load_dataset
    from probe.runner import RunInterrupted, RunOptions, run
    from probe.verdict import judge
    from studies import find_study

    study = find_study(name)
    if threads is not None:
        set_threads(threads)
    options = RunOptions(preset=preset, dataset=dataset, data_dir=data_dir, seeds=seed_choice, steps=steps,
                         device=device, out=out, progress=not no_progress, set_values=set_choice,
                         executor=executor, scheduler=scheduler, workers=workers, threads=threads,
                         checkpoint_every=checkpoint_every, save_embeddings=save_embeddings, yes=yes,
                         ensemble=ensemble, tf32=tf32, probe_workers=probe_workers, views=views,
                         max_memory=max_memory)
    try:
        path = run(study, options, log=lambda m: click.echo(m, err=True))
    except RunInterrupted as stop:
        click.echo(f"\n{stop.message}", err=True)
        sys.exit(130)  # the shell's code for SIGINT
    click.echo(f"results: {path}")
    verdict = judge(study, load_dataset(path))
    _echo_verdict(verdict)  # before the page: a page that fails to render never hides the run's outcome
    if report:
        from probe.report import write_report

        try:  # beside its results: two runs of a study (presets, --out folders) never share a page
            click.echo(f"report: {write_report(path, path.parent / 'report.html', verdict=verdict)}")
        except Exception:
            click.echo(f"The report page could not be written (a bug in probe: please report the traceback below). "
                       f"The results are saved; write the page later with: probe report {path}", err=True)
            raise


def _echo_verdict(verdict) -> None:
    """One line on whether this run showed the paper's effect (or why it was not judged), and the numbers."""
    head = verdict.label if verdict.reason else f"the claim {verdict.outcome}"
    click.echo(f"verdict: {head}: {verdict.claim}")
    for line in verdict.evidence:
        click.echo(f"  {line}")


@main.command("report")
@click.argument("results", type=click.Path())
@click.option("--all", "all_runs", is_flag=True,
              help="RESULTS is a runs folder: write the page of every results.nc under it and an index.html "
                   "with one verdict per study (did the run show the paper's effect, and which chart decides it).")
@click.option("--gallery", is_flag=True,
              help="As --all, for the committed gallery: the folder defaults to reports/gallery, and a study with no "
                   "run under RESULTS is listed as missing from it.")
@click.option("--out", type=click.Path(), default=None,
              help="HTML file to write (with --all: the folder). Default: reports/<study>.html (with --all: reports/, "
                   "with --gallery: reports/gallery/)")
def report_cmd(results, all_runs, gallery, out):
    """Write a self-contained HTML report (opens offline) for a RESULTS netCDF file.

    \b
    probe report runs/invertible-encoders/quick-digits-1a2b3c/results.nc
    probe report --all runs --out reports/site
    probe report --gallery runs-gallery          # every page of reports/gallery and its index
    """
    all_runs = all_runs or gallery
    if Path(results).is_dir() and not all_runs:
        raise click.UsageError(f"'{results}' is a folder: pass --all to report every results.nc under it, "
                               "or give one results.nc file.")
    from studies import list_studies

    if all_runs:
        from probe.report import write_index

        pages: list[Path] = []
        folder = Path(out) if out else Path("reports/gallery" if gallery else "reports")
        index = write_index(Path(results), list_studies(), folder, written=pages, gallery=gallery)
        for page in pages:
            click.echo(f"report: {page}")
        click.echo(f"index: {index}")
        return
    from probe.report import write_report
    from probe.results import load_dataset
    from probe.verdict import judge

    ds = load_dataset(results, caller="probe report")
    study = {s.name: s for s in list_studies()}.get(str(ds.attrs.get("study", "")))
    path = write_report(ds, out, verdict=judge(study, ds) if study is not None else None)
    click.echo(f"report: {path}")


@main.command("list-studies")
def list_studies_cmd():
    """List the studies with the paper figure each reproduces."""
    from studies import list_studies

    studies = list_studies()
    width = max(len(s.figure) for s in studies)
    for study in studies:
        presets = ", ".join(study.presets)
        click.echo(f"{study.name:<22} {study.figure:<{width}}  {study.description}  [presets: {presets}]")


@main.command("datasets")
def datasets_cmd():
    """Show the datasets probe knows, whether each is cached, and where."""
    import re

    from probe.data import cache_dir, describe_datasets

    click.echo(f"cache: {cache_dir()}  (one folder per dataset; set PROBE_DATA_DIR to move it)\n")
    rows = [("dataset", "state", "train / test", "image", "download", "description")]
    for d in describe_datasets():
        state = "offline" if d.get("cache_path") is None else ("cached" if d["cached"] else "not cached")
        # size reads "70,000 images (60,000 train / 10,000 test), 28x28; 11.6 MB download"
        parts = re.fullmatch(r"[\d,]+ images \(([\d,]+) train / ([\d,]+) test\), (\S+?)(?:; (.+) download)?", d["size"])
        split, image, download = (f"{parts[1]} / {parts[2]}", parts[3], parts[4] or "—") if parts \
            else (d["size"], "", "")
        rows.append((d["name"], state, split, image, download, d["description"]))
    click.echo(_columns(rows))


def _columns(rows: list[tuple[str, ...]]) -> str:
    """Rows as left-aligned columns two spaces apart, each as wide as its longest cell."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(f"{cell!s:<{w}}" for cell, w in zip(row, widths)).rstrip() for row in rows)


main.add_command(analyze)
main.add_command(robustness)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
