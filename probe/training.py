"""Train two encoders and a critic on two views by maximising an MI bound (or matching it).

One call of `train_pair` is one grid cell of a study: it trains g1, g2 and the critic with
Adam, evaluates at step 0 and every `eval_every` steps, and returns per-step arrays. The
protocol follows the paper (REFERENCE.md, "Common protocol"), with one deliberate fix: the
"test" bound is computed on held-out pairs, in batches of the training batch size (the
notebook computed it on fresh training batches).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
import warnings
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from probe.checkpoint import TrainingCheckpoint, global_rng_state, restored, set_global_rng_state, storable
from probe.estimators import get_estimator
from probe.errors import InputValueError

# Evaluation chunk for encoding whole splits without building a graph.
ENCODE_CHUNK = 2048


@dataclass(frozen=True)
class PairData:
    """Two views of a dataset: float32 (n, d) arrays, integer labels, the view's (H, W)."""

    train1: np.ndarray
    train2: np.ndarray
    test1: np.ndarray
    test2: np.ndarray
    train_labels: np.ndarray
    test_labels: np.ndarray
    view_shape: tuple[int, int]

    @property
    def dim(self) -> int:
        return self.train1.shape[1]


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run. Steps count parameter updates; evaluation at step s
    happens after s updates, for s = 0, eval_every, 2·eval_every, ..., steps."""

    estimator: str
    steps: int
    batch_size: int = 128
    learning_rate: float = 1e-4
    eval_every: int = 1000
    target: float | None = None        # None: maximise the bound; else minimise |I_EST - t|
    grad_clip: float | None = None     # clip the global gradient norm (None: the paper, no clipping)
    noise_std: float = 0.0             # Gaussian noise added to the views during training
    noise_coupled: bool = False        # the same noise vector on both views (paper, Fig. 2)
    probe_protocol: str = "paper"      # linear evaluation protocol, see probe.analyzers
    jacobian_inputs: int = 0           # inputs at which g1's Jacobian is measured per evaluation
    analyzers: bool = True             # record V-information and triplet margins per evaluation
    checkpoint_every: int | None = 1000  # updates between mid-cell checkpoints (study runner only; None: off)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "steps" else 1):
                raise InputValueError(
                    f"training: {name} is {value!r}; a {'non-negative' if name == 'steps' else 'positive'} integer is required."
                )
        if self.steps < 1:
            raise InputValueError("training: steps is 0; at least 1 training step is required. Pass --steps N with N >= 1.")
        if self.checkpoint_every is not None and (not isinstance(self.checkpoint_every, int)
                                                  or self.checkpoint_every < 1):
            raise InputValueError(f"training: checkpoint_every is {self.checkpoint_every!r}; a positive integer "
                                  "(updates between checkpoints) or None (no checkpoints) is required.")
        if self.batch_size < 2:
            raise InputValueError(f"training: batch_size is {self.batch_size}; a bound needs K >= 2 pairs per batch.")
        get_estimator(self.estimator)  # fail early on a typo

    @property
    def eval_steps(self) -> np.ndarray:
        steps = list(range(0, self.steps + 1, self.eval_every))
        if steps[-1] != self.steps:
            steps.append(self.steps)
        return np.asarray(steps, dtype=np.int64)


@dataclass
class CellResult:
    """Per-evaluation values of one run: `variables[name] = (dims, array)`, dims start with "step"."""

    steps: np.ndarray
    variables: dict[str, tuple[tuple[str, ...], np.ndarray]] = field(default_factory=dict)
    coords: dict[str, np.ndarray] = field(default_factory=dict)
    status: str = "ok"


def seeded_generator(seed: int, stream: str) -> torch.Generator:
    """A torch generator per (seed, purpose), so init, batches and noise draw from separate streams."""
    g = torch.Generator()
    g.manual_seed(_stream_seed(seed, stream))
    return g


# The streams one cell drew from, {stream: seed}, while the study runner records them.
_STREAMS: ContextVar[dict[str, int] | None] = ContextVar("probe_stream_seeds", default=None)


@contextlib.contextmanager
def recording_streams() -> Iterator[dict[str, int]]:
    """Collect the seed of every stream drawn inside this block (`seeded_generator`, `stream_rng`,
    `note_seed`); the study runner stores them in each cell's attrs as `seed_<stream>`."""
    streams: dict[str, int] = {}
    token = _STREAMS.set(streams)
    try:
        yield streams
    finally:
        _STREAMS.reset(token)


def note_seed(stream: str, seed: int) -> int:
    """Record a fixed seed (e.g. an analyzer's) with the cell's streams; returns `seed`."""
    streams = _STREAMS.get()
    if streams is not None:
        streams[stream] = int(seed)
    return seed


def _stream_seed(seed: int, stream: str) -> int:
    return note_seed(stream, int(np.random.SeedSequence([seed, *stream.encode()]).generate_state(1)[0]))


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng(_stream_seed(seed, stream))


class BatchSampler:
    """Epoch-wise shuffled minibatches of row indices, dropping the remainder (as tf.data)."""

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator):
        if n < batch_size:
            raise InputValueError(
                f"training: the training split has {n} pairs, fewer than the batch size {batch_size}. "
                "Lower --batch-size or use a larger dataset."
            )
        self.n, self.batch_size, self.rng = n, batch_size, rng
        self._order, self._pos = self.rng.permutation(n), 0

    def __next__(self) -> np.ndarray:
        if self._pos + self.batch_size > self.n:
            self._order, self._pos = self.rng.permutation(self.n), 0
        idx = self._order[self._pos: self._pos + self.batch_size]
        self._pos += self.batch_size
        return idx

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state, "order": torch.from_numpy(self._order.copy()), "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self._order, self._pos = state["order"].numpy().copy(), int(state["pos"])


def add_view_noise(x1: torch.Tensor, x2: torch.Tensor, std: float, coupled: bool,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if std <= 0:
        return x1, x2
    n1 = torch.randn(x1.shape, generator=generator).to(x1.device) * std
    n2 = n1 if coupled else torch.randn(x2.shape, generator=generator).to(x2.device) * std
    return x1 + n1, x2 + n2


@torch.no_grad()
def encode(encoder: nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
    """Encode a whole split in chunks; float32 (n, d_out)."""
    out = [encoder(torch.from_numpy(x[i: i + ENCODE_CHUNK]).to(device)).cpu() for i in range(0, len(x), ENCODE_CHUNK)]
    return torch.cat(out).numpy()


@torch.no_grad()
def batched_bound(g1: nn.Module, g2: nn.Module, critic: nn.Module, estimator: Callable,
                  x1: np.ndarray, x2: np.ndarray, batch_size: int, device: torch.device) -> float:
    """Mean bound over consecutive full batches of `batch_size` pairs (a partial last batch is
    dropped: InfoNCE's cap log K depends on K)."""
    values = []
    for i in range(0, len(x1) - batch_size + 1, batch_size):
        a = torch.from_numpy(x1[i: i + batch_size]).to(device)
        b = torch.from_numpy(x2[i: i + batch_size]).to(device)
        values.append(float(estimator(critic(g1(a), g2(b)))))
    return float(np.mean(values)) if values else math.nan


def number_of_eval_batches(n_test: int, batch_size: int) -> int:
    return n_test // batch_size


_EMBEDDINGS_DIR: ContextVar[Path | None] = ContextVar("probe_embeddings_dir", default=None)


@contextlib.contextmanager
def saving_embeddings(folder: str | os.PathLike | None) -> Iterator[None]:
    """Within this context every evaluation saves g1's embeddings to folder/step-NNNNNN.npz
    (train `z`, `y`; held-out `z_test`, `y_test`; g2's held-out view `paired_test`), ready for
    `probe analyze FILE --labels y --test-key z_test --test-labels y_test`."""
    token = _EMBEDDINGS_DIR.set(None if folder is None else Path(folder))
    try:
        yield
    finally:
        _EMBEDDINGS_DIR.reset(token)


def save_embeddings(path: Path, **arrays: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class Evaluator:
    """Everything measured at one evaluation step, on fixed held-out data."""

    def __init__(self, data: PairData, config: TrainConfig, seed: int, device: torch.device):
        self.data, self.config, self.device = data, config, device
        rng = stream_rng(seed, "eval-noise")
        noisy = lambda a, b: _noisy_numpy(a, b, config.noise_std, config.noise_coupled, rng)  # noqa: E731
        # Fresh noise at evaluation (paper, Fig. 2), drawn once so every step sees the same inputs.
        self.test1, self.test2 = noisy(data.test1, data.test2)
        self.train1, _ = noisy(data.train1, data.train1 if config.noise_coupled else data.train2)
        n_batches = number_of_eval_batches(len(data.test1), config.batch_size)
        if n_batches == 0:
            raise InputValueError(
                f"training: the test split has {len(data.test1)} pairs, fewer than one batch of "
                f"{config.batch_size}; the held-out bound needs at least one full batch."
            )
        order = stream_rng(seed, "eval-train-batches").permutation(len(data.train1))[: n_batches * config.batch_size]
        # The training-batch bound sees the same kind of inputs as training (noisy, if any).
        self.train_pairs = noisy(data.train1[np.sort(order)], data.train2[np.sort(order)])
        self.jacobian_inputs = self.test1[: config.jacobian_inputs] if config.jacobian_inputs else None

    def __call__(self, g1: nn.Module, g2: nn.Module, critic: nn.Module, step: int | None = None) -> dict[str, object]:
        from probe import analyzers

        estimator = get_estimator(self.config.estimator)
        bs = self.config.batch_size
        for m in (g1, g2, critic):
            m.eval()
        out: dict[str, object] = {
            "bound_test": batched_bound(g1, g2, critic, estimator, self.test1, self.test2, bs, self.device),
            "bound_train": batched_bound(g1, g2, critic, estimator, *self.train_pairs, bs, self.device),
        }
        z_train, z_test = encode(g1, self.train1, self.device), encode(g1, self.test1, self.device)
        if not (np.isfinite(z_train).all() and np.isfinite(z_test).all()):
            raise FloatingPointError("non-finite embeddings")
        # The analyzers' seeds are fixed (the same for every cell) and recorded with the cell's streams.
        probe = analyzers.linear_probe(z_train, self.data.train_labels, z_test, self.data.test_labels,
                                       protocol=self.config.probe_protocol, seed=note_seed("probe", 0))
        folder = _EMBEDDINGS_DIR.get()
        if folder is not None and step is not None:
            save_embeddings(folder / f"step-{step:06d}.npz", z=z_train, y=self.data.train_labels, z_test=z_test,
                            y_test=self.data.test_labels, paired_test=encode(g2, self.test2, self.device))
        out["probe_accuracy"] = float(probe["accuracy"])
        out["probe_cross_entropy"] = float(probe["cross_entropy"])
        if self.config.analyzers:
            # Same split as the probe: V-information of the labels, margins of paired views.
            vinfo = analyzers.v_information(z_train, self.data.train_labels, test_z=z_test,
                                            test_y=self.data.test_labels, seed=note_seed("v-information", 0))
            out["v_information"] = float(vinfo["v_information"])
            z2_test = encode(g2, self.test2, self.device)
            # Margins under the critic's own similarity: the geometry InfoNCE optimises (Sec. 4).
            margins = analyzers.triplet_margins(z_test, z2_test, distance=_critic_similarity(critic, self.device),
                                                n_triplets=5000, seed=note_seed("triplets", 0))
            out["triplet_margin_mean"] = float(margins["margin_mean"])
            out["triplet_violation_fraction"] = float(margins["violation_fraction"].values.ravel()[0])
        if self.jacobian_inputs is not None:
            cond = analyzers.condition_numbers(g1, self.jacobian_inputs)
            out["log_condition_number"] = cond["log_condition_number_quantile"].values.astype(np.float64)
            # ln cond of a numerically rank-deficient Jacobian is round-off (~17 in float32), not conditioning.
            out["jacobian_rank_deficient"] = float(cond["rank_deficient"].mean())
            out["quantile"] = cond["quantile"].values
        for m in (g1, g2, critic):
            m.train()
        return out


def _critic_similarity(critic: nn.Module, device: torch.device) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    dtype = next(critic.parameters(), torch.empty(0)).dtype

    @torch.no_grad()
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a_t, b_t = (torch.as_tensor(v, dtype=dtype, device=device) for v in (a, b))
        return critic.score_pairs(a_t, b_t).cpu().numpy()

    return similarity


def _noisy_numpy(a: np.ndarray, b: np.ndarray, std: float, coupled: bool, rng: np.random.Generator):
    if std <= 0:
        return a, b
    na = rng.normal(0.0, std, size=a.shape).astype(np.float32)
    nb = na if coupled else rng.normal(0.0, std, size=b.shape).astype(np.float32)
    return a + na, b + nb


def train_pair(g1: nn.Module, g2: nn.Module, critic: nn.Module, data: PairData, config: TrainConfig, *,
               seed: int, device: torch.device | str = "cpu",
               on_step: Callable[[int, dict], None] | None = None) -> CellResult:
    """Train (g1, g2, critic) jointly with Adam on `config.estimator`; evaluate on a schedule.

    Returns a `CellResult` whose variables have a leading `step` dimension. A non-finite loss
    stops this run: its status says at which step, and the remaining evaluations are NaN.
    `on_step(step, last_eval)` is called after every update (progress bars), after that step's
    evaluation and checkpoint. Inside the study runner's `probe.checkpoint.checkpointing`
    block the run saves a checkpoint every `config.checkpoint_every` updates and resumes from
    one, with the same numbers as an uninterrupted run.
    """
    device = torch.device(device)
    for m in (g1, g2, critic):
        m.to(device).train()
    params = [p for m in (g1, g2, critic) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.learning_rate)
    estimator = get_estimator(config.estimator)
    evaluate = Evaluator(data, config, seed, device)
    sampler = BatchSampler(len(data.train1), config.batch_size, stream_rng(seed, "batches"))
    noise_gen = seeded_generator(seed, "train-noise")
    train1, train2 = torch.from_numpy(data.train1), torch.from_numpy(data.train2)
    stateful = {"g1": g1, "g2": g2, "critic": critic, "optimizer": optimizer, "sampler": sampler}
    ckpt = TrainingCheckpoint.open(_identity(config, seed), config.checkpoint_every)
    saved = ckpt.load() if ckpt is not None else None
    run = _Progress() if saved is None else _resume(saved, stateful, noise_gen)
    eval_steps = config.eval_steps
    eval_at = set(eval_steps.tolist())
    status, start = "ok", time.perf_counter() - run.elapsed

    def evaluate_now() -> bool:
        try:
            run.records.append(evaluate(g1, g2, critic, step=run.step))
        except FloatingPointError:
            return False
        run.wall.append(time.perf_counter() - start)
        run.losses.append(run.last_loss)
        return True

    if saved is None and not evaluate_now():
        status = "non-finite embeddings at step 0"
    while status == "ok" and run.step < config.steps:
        idx = torch.from_numpy(next(sampler))
        x1, x2 = add_view_noise(train1[idx].to(device), train2[idx].to(device),
                                config.noise_std, config.noise_coupled, noise_gen)
        bound = estimator(critic(g1(x1), g2(x2)))
        loss = -bound if config.target is None else (bound - config.target).abs()
        if not torch.isfinite(loss):
            status = f"non-finite loss at step {run.step}"
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        run.last_loss = float(loss.detach())
        run.step += 1
        if run.step in eval_at and not evaluate_now():
            status = f"non-finite embeddings at step {run.step}"
            break
        if ckpt is not None and ckpt.due(run.step, config.steps):
            run.elapsed = time.perf_counter() - start
            ckpt.save(_snapshot(run, stateful, noise_gen))
        if on_step is not None:
            on_step(run.step, run.records[-1] if run.records else {})
    return _collect(eval_steps, run.records, run.wall, run.losses, status)


@dataclass
class _Progress:
    """What the loop has produced so far; with the models, optimizer and generators, a checkpoint."""

    step: int = 0                      # updates done
    records: list[dict] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    last_loss: float = math.nan
    elapsed: float = 0.0               # seconds of training before this process took over


def _snapshot(run: _Progress, stateful: dict, noise_gen: torch.Generator) -> dict:
    return {"step": run.step, "state": {name: obj.state_dict() for name, obj in stateful.items()},
            "train_noise": noise_gen.get_state(), "global_rng": global_rng_state(), "records": storable(run.records),
            "wall": run.wall, "losses": run.losses, "last_loss": run.last_loss, "elapsed": run.elapsed}


def _resume(saved: dict, stateful: dict, noise_gen: torch.Generator) -> _Progress:
    for name, obj in stateful.items():
        obj.load_state_dict(saved["state"][name])
    noise_gen.set_state(saved["train_noise"])
    set_global_rng_state(saved["global_rng"])
    return _Progress(int(saved["step"]), restored(saved["records"]), list(saved["wall"]), list(saved["losses"]),
                     float(saved["last_loss"]), float(saved["elapsed"]))


def _identity(config: TrainConfig, seed: int) -> str:
    """What a checkpoint must match to be resumed: the seed and every setting but its own interval."""
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "checkpoint_every"}
    return json.dumps({"seed": seed, **fields}, sort_keys=True, default=str)


def _collect(eval_steps: np.ndarray, records: list[dict], wall: list[float], losses: list[float],
             status: str) -> CellResult:
    n = len(eval_steps)
    result = CellResult(steps=eval_steps, status=status)
    if records and "quantile" in records[0]:
        result.coords["quantile"] = np.asarray(records[0]["quantile"], dtype=np.float64)
    names = [k for k in (records[0] if records else {}) if k != "quantile"]
    for name in names:
        first = np.asarray(records[0][name], dtype=np.float64)
        values = np.full((n, *first.shape), np.nan)
        for i, rec in enumerate(records):
            values[i] = rec[name]
        dims = ("step",) if first.ndim == 0 else ("step", "quantile")
        result.variables[name] = (dims, values)
    for name, series in (("wall_time", wall), ("loss", losses)):
        values = np.full(n, np.nan)
        values[: len(series)] = series
        result.variables[name] = (("step",), values)
    if not records:
        for name in ("bound_test", "bound_train", "probe_accuracy"):
            result.variables[name] = (("step",), np.full(n, np.nan))
    return result


def pixel_probe_accuracy(data: PairData, seed: int, noise_std: float = 0.0, protocol: str = "paper") -> float:
    """The baseline: the linear probe on raw top-half pixels (with noise, if the study adds it)."""
    from probe import analyzers

    rng = stream_rng(seed, "eval-noise")
    train1, _ = _noisy_numpy(data.train1, data.train1, noise_std, True, rng)
    test1, _ = _noisy_numpy(data.test1, data.test1, noise_std, True, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = analyzers.linear_probe(train1, data.train_labels, test1, data.test_labels, protocol=protocol)
    return float(probe["accuracy"])
