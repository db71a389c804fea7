"""`probe robustness`: one study's preset over datasets × views, and the page that compares the verdicts."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click


@click.command("robustness", context_settings={"max_content_width": 100})
@click.argument("name")
@click.option("--preset", default="quick", show_default=True, help="The preset every condition runs.")
@click.option("--dataset", "datasets", multiple=True, metavar="NAME",
              help="A dataset to run on (repeat for more): digits, mnist, fashion-mnist, cifar10. Default, with no "
                   "--data-dir either: every dataset available offline (digits and the cached ones).")
@click.option("--data-dir", "data_dirs", multiple=True, type=click.Path(file_okay=False, exists=True),
              metavar="DIR", help="An image folder to run on (repeat for more), e.g. ../shared/data/mnist-5k.")
@click.option("--views", "views", default="top-bottom,left-right,random-split", show_default=True,
              help="Comma-separated splits of each image into two views (probe.data.views).")
@click.option("--seeds", default=None, metavar="N|LIST", help="Seeds per condition. Default: the preset's.")
@click.option("--steps", type=int, default=None, help="Override the preset's training steps.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="runs", show_default=True,
              help="Runs folder: each condition is an ordinary run there, reused when finished.")
@click.option("--page", type=click.Path(dir_okay=False), default=None,
              help="The page to write. Default: reports/robustness-<study>-<preset>.html")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch and BLAS.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@click.option("--yes", is_flag=True, help="Go on with a condition projected to take more than 3 h on a CPU.")
def robustness(name, preset, datasets, data_dirs, views, seeds, steps, device, out, page, threads, no_progress, yes):
    """Run the study NAME's preset on every dataset × views, then write one page of the verdicts.

    Does the paper's effect hold on other data, and with other views than top and bottom halves?
    Each condition is a run like `probe run-study NAME --views V` (finished runs are reused, so
    the command resumes where it stopped); one that cannot run is listed with its reason.

    \b
    Examples:
      probe robustness invertible-encoders --data-dir ../shared/data/mnist-5k --seeds 3
      probe robustness encoder-architecture --dataset digits --views top-bottom,left-right
    """
    from probe.cli.parsing import parse_seeds
    from probe.data.views import parse_views
    from probe.devices import set_threads
    from probe.report import write_report
    from probe.report.robustness import rows_from, write_robustness
    from probe.runner import RunInterrupted, RunOptions
    from probe.runner.robustness import conditions, run_robustness
    from probe.verdict import judge
    from studies import find_study

    study = find_study(name)
    splits = [v.strip() for v in views.split(",") if v.strip()]
    for split in splits:
        parse_views(split, "--views")
    if threads is not None:
        set_threads(threads)
    options = RunOptions(preset=preset, seeds=parse_seeds(seeds), steps=steps, device=device, out=out,
                         progress=not no_progress, threads=threads, yes=yes)
    grid = conditions(list(datasets), list(data_dirs), splits)
    click.echo(f"{study.name} [{preset}]: {len(grid)} conditions ({', '.join(sorted({c.data_label for c in grid}))} "
               f"× {', '.join(splits)})", err=True)
    try:
        outcomes = run_robustness(study, options, grid, log=lambda m: click.echo(m, err=True))
    except RunInterrupted as stop:
        click.echo(f"\n{stop.message}", err=True)
        sys.exit(130)
    rows = rows_from(outcomes, lambda ds: judge(study, ds), write_report)
    target = Path(page) if page else Path("reports") / f"robustness-{study.name}-{preset}.html"
    words = ["probe", "robustness", study.name, "--preset", preset, *(w for d in datasets for w in ("--dataset", d)),
             *(w for d in data_dirs for w in ("--data-dir", d)), "--views", ",".join(splits),
             *(["--seeds", seeds] if seeds else []), *(["--steps", str(steps)] if steps else [])]
    command = " ".join(shlex.quote(w) for w in words)
    seed_list = ",".join(str(s) for s in options.seed_tuple() or study.settings(preset).seeds)
    write_robustness(target, study.name, preset, seed_list, rows, command=command)
    width = max(len(r.dataset) for r in rows)
    for row in rows:
        outcome = row.verdict.outcome if row.verdict is not None else f"not run: {row.error}"
        first = row.verdict.evidence[0] if row.verdict is not None and row.verdict.evidence else ""
        click.echo(f"{row.dataset:<{width}}  {row.views:<14}  {outcome:<13}  {first}")
    click.echo(f"page: {target}")
