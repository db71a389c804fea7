"""Estimator validation: every bound against a closed-form truth (Poole et al. 2019, Fig. 2).

Pairs (x, y) are correlated Gaussians (`probe.data.correlated_gaussian`): d independent
components, each with correlation rho, so I(X; Y) = -d/2 ln(1 - rho²) nats exactly. The true
MI follows a staircase, 2, 4, 6, 8, 10 nats, each held for `steps / 5` steps, with rho from
`probe.data.rho_for_mi`. Every step draws a fresh batch of K pairs (no dataset, no epochs),
evaluates the estimator on the critic's (K, K) score matrix, records that value, then takes one
Adam step on it (the cells of one critic and d train in one step loop, stacked: `run_members`).
The same data also goes through an MI-preserving bijection of y (y -> y³, elementwise, as Song
& Ermon 2020): the truth does not move, so any change in an estimate is the estimator's or the
critic's doing, the point Tschannen et al. (ICLR 2020, Sec. 2) build on.

Known behaviour this study should show (Poole et al. 2019, Sec. 5; Song & Ermon 2020):
InfoNCE saturates at log K (4.16 nats at K = 64) with a small variance; NWJ and JS (reported as
NWJ) follow the truth at low MI but their variance grows roughly exponentially with it; DV is
biased in minibatches. Every cell also evaluates its estimator on the same batch with the
closed-form critic (`OptimalCritic`, no training): the `optimal_critic_*` variables are the
estimator's own bias and variance at this K, apart from how well a critic was learned (they
are the same for every critic of an estimator and transform). SMILE is trained here
as probe.estimators.smile defines it (its own gradient); Song & Ermon train with the JS
gradient and report the clipped DV value. Per cell the results hold the
estimate over steps (`estimate`, raw and `estimate_smoothed`), the truth (`true_mi`), the cap
(`infonce_cap`), and, per MI level, `bias` (mean estimate - truth) and `estimate_sd` (sd of the
per-step estimates), both over the last `window_fraction` of that level's steps.

`bias_variance_table(results)` prints those per-level numbers as a markdown table:

    python -m studies.estimator_validation runs/estimator-validation/.../results.nc
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from probe.critics import CRITICS, make_critic
from probe.data import correlated_gaussian, rho_for_mi
from probe.errors import InputValueError, unknown_name
from probe.estimators import ESTIMATORS
from probe.study import Study
from probe.training import CellResult, seeded_generator
from probe.training.critic_members import CriticMembers, MemberStreams, group_identity
from studies.estimator_validation_verdict import verdict, window_length

DATASET = "correlated-gaussian"


@dataclass(frozen=True)
class Settings:
    # TUBA is left out: with the library's constant log-baseline it is NWJ with a shifted critic,
    # so it would add cells without adding a behaviour.
    estimators: tuple[str, ...] = ("infonce", "nwj", "dv", "js", "smile")
    critics: tuple[str, ...] = ("bilinear", "separable", "concat")
    transforms: tuple[str, ...] = ("identity", "cubic")
    data_dims: tuple[int, ...] = (20,)       # d: components of x and of y
    mi_levels: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0)  # nats, one per stair
    batch_size: int = 64                     # K; InfoNCE <= log K = 4.159 nats
    steps: int = 20_000                      # all stairs together: steps / len(mi_levels) each
    learning_rate: float = 5e-4
    hidden: tuple[int, ...] = (256, 256)     # separable critic's MLPs (Poole et al.: 2 x 256, ReLU)
    embedding: int = 32                      # separable critic's output width (Poole et al.: 32)
    concat_hidden: tuple[int, ...] = (256, 256)  # concat critic's MLP (Poole et al.: 2 x 256, ReLU)
    window_fraction: float = 0.25            # bias and sd over the last quarter of each stair
    records_per_level: int = 20              # points over `step` per stair in results.nc
    smile_tau: float = 5.0                   # SMILE's clipping threshold (Song & Ermon 2020: 5)
    seeds: tuple[int, ...] = (0,)


PRESETS = {
    # Poole et al. (2019), Fig. 2 and their colab: d = 20, K = 64, 4,000 steps per stair over
    # 2, 4, 6, 8, 10 nats, Adam at 5e-4, separable critic 2 x 256 ReLU with 32-d embeddings,
    # concat critic 2 x 256 ReLU. One run per cell as in their figures: the variance we report
    # is over steps within a run, which one seed already measures. We add the bilinear critic
    # (the default of Tschannen et al.), the cubic transform of Song & Ermon (2020), and d = 1
    # and 5 beside 20 (at d = 1 each stair needs rho up to 0.999999998; the truth is exact).
    "paper": Settings(data_dims=(1, 5, 20)),
    # Reduced for 2 CPU cores (< 8 min for the 30 cells): d = 20 only and 400 steps per stair
    # instead of 4,000, so every change below buys back fit within those 400 steps (measured on
    # InfoNCE with a separable critic at 2 and 4 nats, where the optimal critic gives 1.83 and 3.07):
    # - separable MLPs 2 x 128 at lr 1e-3: 1.47 / 2.82 (2 x 64 at 2e-3: 1.15 / 2.47; 2 x 256 at 5e-4:
    #   1.60 / 2.88 but 2x slower);
    # - concat MLP 2 x 64: it scores all K² = 4,096 pairs per step and dominates the cost (~5 ms
    #   per step at 2 x 64, ~15 ms at 2 x 128, ~40 ms at 2 x 256, one core);
    # bias and sd over the last 100 steps of each stair.
    "quick": Settings(data_dims=(20,), steps=2_000, learning_rate=1e-3, hidden=(128, 128), embedding=32,
                      concat_hidden=(64, 64), records_per_level=10),
    # Seconds: for tests and a first look.
    "smoke": Settings(estimators=("infonce", "nwj"), critics=("bilinear", "separable"),
                      data_dims=(5,), mi_levels=(2.0, 6.0), batch_size=32, steps=40, learning_rate=2e-3,
                      hidden=(16,), embedding=8, concat_hidden=(16,), records_per_level=4),
}


# ---------------------------------------------------------------------------- data

@dataclass(frozen=True)
class Transform:
    """A bijection of y (x is left alone), so I(X; f(Y)) = I(X; Y): `forward(y)` and `inverse(y)`."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    inverse: Callable[[torch.Tensor], torch.Tensor]


def _cube_root(y: torch.Tensor) -> torch.Tensor:
    return y.sign() * y.abs().pow(1.0 / 3.0)


TRANSFORMS: dict[str, Transform] = {
    "identity": Transform(lambda y: y, lambda y: y),
    # Song & Ermon (2020): y -> y³, strictly increasing elementwise, heavy-tailed.
    "cubic": Transform(lambda y: y ** 3, _cube_root),
}


@dataclass(frozen=True)
class GaussianStaircase:
    """What the cells share: the staircase's step ranges and correlations (batches are drawn per cell)."""

    boundaries: np.ndarray          # (L + 1,) first step of each stair, then `steps`
    levels: np.ndarray              # (L,) true MI in nats
    rhos: dict[int, np.ndarray]     # d -> (L,) correlation per stair

    def level_of(self, step: np.ndarray | int) -> np.ndarray:
        return np.searchsorted(self.boundaries, step, side="right") - 1


def staircase(settings: Settings) -> GaussianStaircase:
    n_levels = len(settings.mi_levels)
    if settings.steps < n_levels:
        raise InputValueError(f"estimator-validation: steps is {settings.steps}; at least one step per MI level "
                              f"({n_levels}) is required. Pass --steps {n_levels * 100} or more.")
    boundaries = np.asarray([i * settings.steps // n_levels for i in range(n_levels + 1)], dtype=np.int64)
    rhos = {d: np.asarray([rho_for_mi(float(mi), d) for mi in settings.mi_levels]) for d in settings.data_dims}
    return GaussianStaircase(boundaries, np.asarray(settings.mi_levels, dtype=np.float64), rhos)


def load_data(settings: Settings, dataset: str | None, data_dir: str | None) -> tuple[GaussianStaircase, dict]:
    """The study's data are drawn, not loaded: refuse an image dataset rather than ignore it."""
    if dataset is not None or data_dir is not None:
        given = f"--dataset {dataset}" if dataset is not None else f"--data-dir {data_dir}"
        raise InputValueError(f"estimator-validation: {given} does not apply; this study draws correlated "
                              "Gaussians with a closed-form MI. Leave out --dataset and --data-dir.")
    registries = (("transform", settings.transforms, list(TRANSFORMS)),
                  ("critic", settings.critics, list(CRITICS)),
                  ("estimator", settings.estimators, list(ESTIMATORS)))
    for kind, names, known in registries:
        for name in names:  # a typo fails here, before any cell runs
            if name not in known:
                raise unknown_name(kind, name, known)
    data = staircase(settings)
    description = (f"{DATASET} v1: probe.data.correlated_gaussian, d={list(settings.data_dims)}, "
                   f"MI={list(settings.mi_levels)} nats, K={settings.batch_size}, fresh batch per step")
    info = {"dataset": DATASET, "dataset_sha256": hashlib.sha256(description.encode()).hexdigest(),
            "dataset_source": description, "n_train": "fresh", "n_test": "fresh"}
    return data, info


# ---------------------------------------------------------------------------- one cell

class OptimalCritic(torch.nn.Module):
    """The closed-form critic f(x, y) = log p(y | x) / p(y) (+ 1 for NWJ), no parameters.

    For d independent components with correlation rho (s = 1 - rho²):
    log p(y | x) / p(y) = sum_k [ -(y_k - rho x_k)² / (2 s) + y_k² / 2 ] - d/2 ln s,
    evaluated on `transform.inverse(y)`: a bijection of y leaves the density ratio unchanged.
    NWJ is unbiased at 1 + log ratio (its optimum, Poole et al. 2019, Sec. 2.2: hence `offset`),
    and so is JS, reported as NWJ(S + 1); in minibatches DV's log of a sample mean is biased
    upwards, SMILE's clipping more so, and InfoNCE is capped at log K. Computed in float64: at
    d = 1 and 10 nats, s = 2e-9. Set `rho` before each batch.
    """

    def __init__(self, transform: Transform, offset: float):
        super().__init__()
        self.transform, self.offset, self.rho = transform, offset, 0.0

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.double(), self.transform.inverse(y.double())
        s = 1.0 - self.rho ** 2
        log_ratio = (-(y[None, :, :] - self.rho * x[:, None, :]) ** 2 / (2 * s) + y[None, :, :] ** 2 / 2).sum(-1)
        return log_ratio - 0.5 * x.shape[1] * math.log(s) + self.offset


def _critic(settings: Settings, name: str, dim: int, seed: int) -> torch.nn.Module:
    kwargs = {"separable": {"hidden": settings.hidden, "out": settings.embedding},
              "concat": {"hidden": settings.concat_hidden}}.get(name, {})
    generator = seeded_generator(seed, f"critic-{name}-{dim}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        return make_critic(name, dim, dim, **kwargs)


def run_cell(settings: Settings, ids: dict, seed: int, data: GaussianStaircase, device: torch.device,
             on_step=None) -> CellResult:
    """Train one critic on one estimator over the staircase; fresh batches every step."""
    return run_members(settings, [ids], [seed], data, device, on_step)[0]


def run_members(settings: Settings, ids_list: list[dict], seeds: list[int], data: GaussianStaircase,
                device: torch.device, on_step=None, member_context=None) -> list[CellResult]:
    """Train a group of cells of one critic and d (estimators, transforms, seeds) as one model;
    member m draws what its cell draws alone, so its result is that cell's (to float rounding)."""
    around = member_context or (lambda m: contextlib.nullcontext())
    n, steps = len(ids_list), settings.steps
    critic, dim = ids_list[0]["critic"], int(ids_list[0]["data_dim"])  # one per group: Ensemble checks
    critics, pairs = [], _Pairs(settings.batch_size, dim, device)
    for m, (ids, seed) in enumerate(zip(ids_list, seeds)):
        with around(m):
            critics.append(_critic(settings, critic, dim, seed))
            pairs.add(seed, ids["transform"])
    # The estimators run in float64 on the critics' float32 scores: on y³ an untrained critic
    # scores in the hundreds, and NWJ's e^(S - 1) would overflow float32 to -inf at step 0.
    members = CriticMembers(critics, [ids["estimator"] for ids in ids_list], [settings.learning_rate] * n, steps,
                            example=(torch.zeros(settings.batch_size, dim),) * 2, device=device, score_dtype=torch.float64,
                            estimator_options={"smile": {"tau": settings.smile_tau}})
    offsets = torch.tensor([1.0 if ids["estimator"] == "nwj" else 0.0 for ids in ids_list], dtype=torch.float64,
                           device=device)[:, None, None]  # NWJ is tight at 1 + log ratio (OptimalCritic)
    level = data.level_of(np.arange(steps))
    first, saved = members.resume(group_identity(settings, ids_list, seeds), pairs.streams.rngs)
    reference = torch.full((n, steps), math.nan, dtype=torch.float64, device=device)
    wall, last = np.full(steps, np.nan), math.nan
    if saved is not None:
        reference, wall = torch.from_numpy(saved["reference"]).to(device), saved["wall"]
    for step in range(first, steps):
        x, y, optimal = pairs.draw(float(data.rhos[dim][level[step]]))
        reference[:, step] = members.bounds(optimal + offsets)
        members.step(x, y)
        wall[step] = members.elapsed()
        if members.due(step + 1, steps):
            members.save(step + 1, pairs.streams.rngs, {"reference": reference.cpu().numpy(), "wall": wall})
        last = members.last_estimate(0) if (step + 1) % 50 == 0 else last  # the progress bar's, every 50 steps
        if on_step is not None:
            on_step(step + 1, {"bound_test": last})
        if members.all_frozen(step):
            break
    estimates, reference = members.estimates(), reference.cpu().numpy()
    stopped, statuses = members.stopped_at()
    return [_cell_result(settings, data, estimates[m], reference[m], wall, statuses[m], stopped[m]) for m in range(n)]


class _Pairs:
    """A group's batches: one stream per seed (every estimator, critic and transform sees the same draws:
    their differences are paired, not sampling noise), y through each member's transform."""

    def __init__(self, k: int, dim: int, device: torch.device):
        self.k, self.dim, self.device = k, dim, device
        self.streams = MemberStreams()
        self.views: dict[tuple[int, str], int] = {}  # (stream, transform) -> view
        self.of_member: list[int] = []

    def add(self, seed: int, transform: str) -> None:
        stream = self.streams.add(seed, f"gaussian-batches-{self.dim}")
        self.of_member.append(self.views.setdefault((stream, transform), len(self.views)))

    def draw(self, rho: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each member's x and transformed y, (M, K, d) float32, and the closed-form critic's
        float64 scores of them, (M, K, K), without NWJ's offset."""
        drawn = [correlated_gaussian(self.k, self.dim, rho, rng) for rng in self.streams.rngs]
        x_all, y_all = (torch.from_numpy(np.stack(a)).to(self.device) for a in zip(*drawn))
        xs, ys, scores = [], [], []
        for stream, transform in self.views:
            x, y = x_all[stream], TRANSFORMS[transform].forward(y_all[stream])
            optimal = OptimalCritic(TRANSFORMS[transform], offset=0.0)
            optimal.rho = rho
            xs.append(x), ys.append(y), scores.append(optimal(x, y))
        index = torch.tensor(self.of_member, device=self.device)
        return torch.stack(xs)[index], torch.stack(ys)[index], torch.stack(scores)[index]


def _cell_result(settings: Settings, data: GaussianStaircase, estimates: np.ndarray, reference: np.ndarray,
                 wall: np.ndarray, status: str, stopped: int = -1) -> CellResult:
    if stopped >= 0:  # as the cell alone: the closed-form estimate up to the step it stopped at, wall time before
        steps = np.arange(settings.steps)
        reference, wall = np.where(steps <= stopped, reference, np.nan), np.where(steps < stopped, wall, np.nan)
    every = max(1, (settings.steps // len(settings.mi_levels)) // settings.records_per_level)
    recorded = np.arange(0, settings.steps, every)
    blocks = [estimates[s:s + every] for s in recorded]
    smoothed = np.asarray([b.mean() if np.isfinite(b).all() else np.nan for b in blocks])
    result = CellResult(steps=recorded, status=status)
    result.coords["mi_level"] = data.levels
    variables = {
        "estimate": estimates[recorded],
        "estimate_smoothed": smoothed,
        "optimal_critic_estimate": reference[recorded],
        "true_mi": data.levels[data.level_of(recorded)],
        "infonce_cap": np.full(recorded.size, math.log(settings.batch_size)),
        "wall_time": wall[recorded],
    }
    result.variables.update({name: (("step",), values) for name, values in variables.items()})
    mean, sd = _level_stats(settings, data, estimates)
    result.variables["estimate_mean"] = (("mi_level",), mean)
    result.variables["bias"] = (("mi_level",), mean - data.levels)
    result.variables["estimate_sd"] = (("mi_level",), sd)
    mean, sd = _level_stats(settings, data, reference)
    result.variables["optimal_critic_bias"] = (("mi_level",), mean - data.levels)
    result.variables["optimal_critic_estimate_sd"] = (("mi_level",), sd)
    return result


def _level_stats(settings: Settings, data: GaussianStaircase, estimates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample sd of the per-step estimates over the last `window_fraction` of each stair
    (NaN where the run stopped before that window ended)."""
    mean, sd = np.full(len(data.levels), np.nan), np.full(len(data.levels), np.nan)
    for i, (lo, hi) in enumerate(zip(data.boundaries[:-1], data.boundaries[1:])):
        window = estimates[max(lo, hi - window_length(settings.window_fraction, lo, hi)):hi]
        if window.size >= 2 and np.isfinite(window).all():
            mean[i], sd[i] = window.mean(), window.std(ddof=1)
    return mean, sd


# ---------------------------------------------------------------------------- the table

TABLE_COLUMNS = (  # variable, column title, signed
    ("estimate_mean", "mean estimate", True),
    ("bias", "bias", True),
    ("estimate_sd", "sd", False),
    ("optimal_critic_bias", "bias, optimal critic", True),
    ("optimal_critic_estimate_sd", "sd, optimal critic", False),
)


def bias_variance_table(results: Any) -> str:
    """The per-level bias and sd of every cell as a markdown table (means over seeds).

    `results` is the study's Dataset or the path of its results.nc. Rows: one per grid cell and
    MI level; a "—" marks a level the run did not finish (its status says why).
    """
    from probe.results import load_dataset

    names = tuple(name for name, _, _ in TABLE_COLUMNS)
    ds = results if hasattr(results, "data_vars") else load_dataset(results, required=names + ("infonce_cap",))
    cap = float(np.nanmax(ds["infonce_cap"].values))
    grid = [d for d in ("data_dim", "transform", "estimator", "critic") if d in ds.dims]
    columns = {name: ds[name].mean("seed") if "seed" in ds[name].dims else ds[name] for name in names}
    head = [*grid, "true MI", *(title for _, title, _ in TABLE_COLUMNS), "log K"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for combo in np.ndindex(*(ds.sizes[d] for d in grid)):
        where = {d: ds[d].values[i] for d, i in zip(grid, combo)}
        for level in ds["mi_level"].values:
            numbers = [_number(float(columns[name].sel({**where, "mi_level": level})), signed)
                       for name, _, signed in TABLE_COLUMNS]
            lines.append("| " + " | ".join([*(str(v) for v in where.values()), f"{float(level):g}", *numbers,
                                            f"{cap:.3f}"]) + " |")
    return "\n".join(lines)


def _number(value: float, signed: bool) -> str:
    if not math.isfinite(value):
        return "—"
    plus = "+" if signed else ""
    return f"{value:{plus}.3f}" if abs(value) < 1e4 else f"{value:{plus}.3g}"


# The names and units of the variables only this study records (probe.results has the shared ones).
VARIABLES = {
    "estimate": ("MI estimate on the step's fresh batch (before its update)", "nats"),
    "estimate_smoothed": ("MI estimate, mean over the steps up to the next recorded one", "nats"),
    "true_mi": ("true MI of the batch's distribution (closed form)", "nats"),
    "infonce_cap": ("InfoNCE cap log K", "nats"),
    "estimate_mean": ("mean estimate over the last window of each MI level", "nats"),
    "bias": ("mean estimate minus true MI, last window of each MI level", "nats"),
    "estimate_sd": ("sd of the per-step estimates, last window of each MI level", "nats"),
    "optimal_critic_estimate": ("MI estimate on the same batch with the closed-form critic", "nats"),
    "optimal_critic_bias": ("closed-form critic: mean estimate minus true MI, last window of each MI level", "nats"),
    "optimal_critic_estimate_sd": ("closed-form critic: sd of the per-step estimates, last window of each MI level", "nats"),
}


STUDY = Study(
    name="estimator-validation",
    title="Estimator validation: every bound against a closed-form MI staircase",
    figure="Poole et al. 2019, Fig. 2",
    description="InfoNCE, NWJ, DV, JS, SMILE x critics on correlated Gaussians (2-10 nats), incl. bijections of y.",
    presets=PRESETS,
    grid=lambda s: {"estimator": list(s.estimators), "critic": list(s.critics), "transform": list(s.transforms),
                    "data_dim": list(s.data_dims)},
    run_cell=run_cell,
    # Estimators and transforms share a critic's architecture and step loop: they train together.
    member_axes=("estimator", "transform"),
    run_members=run_members,
    verdict=verdict,
    load_data=load_data,
    variables=VARIABLES,
    origin="own",
)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m studies.estimator_validation RESULTS.nc")
    print(bias_variance_table(sys.argv[1]))
