"""Everything measured at one evaluation step, on fixed held-out data.

The "test" bound is computed on held-out pairs, in batches of the training batch size (the
notebook computed it on fresh training batches: docs/reference.md, "Common protocol"); the
linear probe, V-information, triplet margins and g1's Jacobian are measured on the same
encodings, each split encoded once. The torch fits (V-information, the converged probe) run
on the training device; the paper's SAGA probe runs inline, or in the pool of an enclosing
`probe.training.probe_pool.background_probes` while training goes on (`Evaluator.settle`).

With `reuse_fits`, an `Evaluator` picks V-information's C by its validation walk at the run's
first evaluation only, and starts every later fit from the previous evaluation's weights
(times: bench/README.md, "One evaluation, part by part"). The C used and the step that chose
it are recorded at every evaluation; `state_dict` is what a checkpoint must keep for a
resumed run to match.
"""
from __future__ import annotations

import math
import time
import warnings
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn

from probe.data import PairData
from probe.embeddings import embeddings_folder, save_embeddings
from probe.errors import InputValueError
from probe.estimators import get_estimator
from probe.training.config import TrainConfig
from probe.training.noise import noisy_numpy
from probe.training.probe_pool import ProbeFits
from probe.training.streams import note_seed, stream_rng
from probe.training.timing import TimedStart

if TYPE_CHECKING:
    from probe.analyzers.usable_information import WarmStart

# Evaluation chunk for encoding whole splits without building a graph.
ENCODE_CHUNK = 2048


@torch.no_grad()
def _encode_on(encoder: nn.Module, x: np.ndarray, device: torch.device) -> torch.Tensor:
    """A whole split encoded in chunks, left on `device`: (n, d_out)."""
    return torch.cat([encoder(torch.from_numpy(x[i: i + ENCODE_CHUNK]).to(device))
                      for i in range(0, len(x), ENCODE_CHUNK)])


def encode(encoder: nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
    """Encode a whole split in chunks; float32 (n, d_out)."""
    return _encode_on(encoder, x, device).cpu().numpy()


@torch.no_grad()
def _bound_of_codes(critic: nn.Module, estimator: Callable, z1: torch.Tensor, z2: torch.Tensor,
                    batch_size: int) -> float:
    """`batched_bound` from encodings already computed."""
    values = [float(estimator(critic(z1[i: i + batch_size], z2[i: i + batch_size])))
              for i in range(0, len(z1) - batch_size + 1, batch_size)]
    return float(np.mean(values)) if values else math.nan


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


def _jacobian_record(cond: xr.Dataset) -> dict[str, object]:
    """The Jacobian entries of an evaluation record, from condition_numbers' output (one member's)."""
    return {
        "log_condition_number": cond["log_condition_number_quantile"].values.astype(np.float64),
        # Per input too: results.combine_cells pools them over seeds, as the notebook's Fig. 2 bands.
        "log_condition_number_input": cond["log_condition_number"].values.astype(np.float64),
        # ln cond of a numerically rank-deficient Jacobian is round-off (~17 in float32), not conditioning.
        "jacobian_rank_deficient": float(cond["rank_deficient"].mean()),
        # Condition numbers compare only between Jacobians of one shape (d_out x d_in).
        "jacobian_shape": np.array([cond.attrs["d_out"], cond.attrs["d_in"]], dtype=np.float64),
        "quantile": cond["quantile"].values,
    }


class Evaluator:
    """Everything measured at one evaluation step, on fixed held-out data.

    `reuse_fits`: V-information's C is chosen at the first evaluation and kept, and each fit
    starts from the previous one (see the module docstring); without it every evaluation
    searches C afresh from a cold start, as a single `v_information` call does.
    """

    def __init__(self, data: PairData, config: TrainConfig, seed: int, device: torch.device, *,
                 reuse_fits: bool = False):
        self.data, self.config, self.device = data, config, torch.device(device)
        self.reuse_fits = reuse_fits
        self.last_search_s = 0.0  # seconds of V-information's C search in the last call
        self._vinfo: tuple[float, float, "WarmStart"] | None = None  # (C, the step that chose it, last fit)
        rng = stream_rng(seed, "eval-noise")
        noisy = lambda a, b: noisy_numpy(a, b, config.noise_std, config.noise_coupled, rng)  # noqa: E731
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
        # The probe: the paper's SAGA goes to the pool of an enclosing `background_probes`, if it takes it.
        self._probe = ProbeFits(len(data.train1), config.probe_protocol)

    def __call__(self, g1: nn.Module, g2: nn.Module, critic: nn.Module, step: int | None = None, *,
                 jacobian: dict[str, object] | None = None) -> dict[str, object]:
        """One evaluation record. `jacobian`: this member's entry of `member_jacobian_records`
        (g1's Jacobians measured for a whole ensemble at once); None measures them here.
        With a probe pool the record's probe entries are written by `settle`."""
        for m in (g1, g2, critic):
            m.eval()
        try:
            return self._evaluate(g1, g2, critic, step, jacobian)
        finally:
            for m in (g1, g2, critic):
                m.train()

    def _evaluate(self, g1, g2, critic, step, jacobian) -> dict[str, object]:
        from probe import analyzers

        estimator = get_estimator(self.config.estimator)
        bs, device = self.config.batch_size, self.device
        codes1, codes2 = _encode_on(g1, self.test1, device), _encode_on(g2, self.test2, device)
        out: dict[str, object] = {
            "bound_test": _bound_of_codes(critic, estimator, codes1, codes2, bs),
            "bound_train": batched_bound(g1, g2, critic, estimator, *self.train_pairs, bs, device),
        }
        z_train, z_test, z2_test = encode(g1, self.train1, device), codes1.cpu().numpy(), codes2.cpu().numpy()
        if not (np.isfinite(z_train).all() and np.isfinite(z_test).all()):
            raise FloatingPointError("non-finite embeddings")
        # The analyzers' seeds are fixed (the same for every cell) and recorded with the cell's streams.
        self._probe.fit_into(out, z_train, self.data.train_labels, z_test, self.data.test_labels,
                             note_seed("probe", 0), device)
        folder = embeddings_folder()
        if folder is not None and step is not None:
            save_embeddings(folder / f"step-{step:06d}.npz", z=z_train, y=self.data.train_labels, z_test=z_test,
                            y_test=self.data.test_labels, paired_test=z2_test)
        if self.config.analyzers:
            # Same split as the probe: V-information of the labels, margins of paired views.
            out.update(self._v_information(z_train, z_test, step))
            # Margins under the critic's own similarity: the geometry InfoNCE optimises (Sec. 4).
            margins = analyzers.triplet_margins(z_test, z2_test, distance=_critic_similarity(critic, device),
                                                n_triplets=5000, seed=note_seed("triplets", 0))
            out["triplet_margin_mean"] = float(margins["margin_mean"])
            out["triplet_violation_fraction"] = float(margins["violation_fraction"].values.ravel()[0])
        if self.jacobian_inputs is not None:
            out.update(jacobian if jacobian is not None
                       else _jacobian_record(analyzers.condition_numbers(g1, self.jacobian_inputs)))
        return out

    def settle(self) -> None:
        """Write the probe entries of every record still waiting for the pool (blocks until its
        fit is done). Call before a record is saved or read."""
        self._probe.settle()

    @property
    def probe_pooled(self) -> bool:
        """Whether this evaluator's probe fits go to a probe pool."""
        return self._probe.pool is not None

    def _v_information(self, z_train: np.ndarray, z_test: np.ndarray, step: int | None) -> dict[str, float]:
        from probe.analyzers.usable_information import label_v_information

        previous = self._vinfo if self.reuse_fits else None
        fit = label_v_information(z_train, self.data.train_labels, z_test, self.data.test_labels,
                                  C=previous[0] if previous is not None else "auto",
                                  warm_start=previous[2] if previous is not None else None,
                                  seed=note_seed("v-information", 0), device=self.device)
        chosen_at = float(step) if step is not None else math.nan
        self._vinfo = (fit.C, previous[1] if previous is not None else chosen_at, fit.warm_start)
        self.last_search_s = fit.search_s  # for the runner's projection: later evaluations skip the search
        return {"v_information": float(fit.v_information), "v_information_C": fit.C,
                "v_information_C_step": self._vinfo[1]}

    def state_dict(self) -> dict[str, object]:
        """What a checkpoint keeps so that a resumed run gives the uninterrupted run's numbers: the
        V-information C, the step that chose it and the last fit (the next one's start); {} before
        the first evaluation."""
        if self._vinfo is None:
            return {}
        C, chosen_at, start = self._vinfo
        return {"C": C, "C_step": chosen_at, "classes": torch.from_numpy(np.asarray(start.classes)),
                "coef": start.coef.detach().cpu(), "intercept": start.intercept.detach().cpu()}

    def load_state_dict(self, state: dict[str, object]) -> None:
        if not state:
            self._vinfo = None
            return
        from probe.analyzers.usable_information import WarmStart

        start = WarmStart(np.asarray(state["classes"]), state["coef"], state["intercept"])
        self._vinfo = (float(state["C"]), float(state["C_step"]), start)


def timed_evaluation(evaluator: Evaluator, members: int, first_eval_s: float, step_s: float = math.nan,
                     setup_s: float = 0.0) -> TimedStart:
    """What the runner's projection needs from a first evaluation just made by `evaluator` (it
    took `first_eval_s`): its C search and inline probe fit, and, when the probe went to the
    pool, the wait for it (settled here: the same record, a few seconds sooner)."""
    waited = time.perf_counter()
    evaluator.settle()
    pooled = evaluator.probe_pooled
    fit_s = evaluator._probe.last_fit_s
    return TimedStart(members, first_eval_s, step_s, search_s=evaluator.last_search_s,
                      probe_s=0.0 if pooled else fit_s, pool_s=time.perf_counter() - waited if pooled else 0.0,
                      pool_fit_s=fit_s if pooled else 0.0, pool_workers=evaluator._probe.pool.workers if pooled else 0,
                      setup_s=setup_s)


def member_jacobian_records(g1: nn.Module, state: dict[str, torch.Tensor],
                            evaluators: Sequence[Evaluator]) -> list[dict[str, object]]:
    """The Jacobian entries of M members' evaluation records at once, to pass to each member's
    evaluator as `jacobian=`: g1's Jacobians at each evaluator's inputs, vmapped over the members.

    `g1`: the members' shared architecture; `state`: {name: (M, ...)} its parameters and buffers
    stacked in the order of `evaluators` (an Ensemble's entries under "g1.", prefix stripped).
    """
    from probe.analyzers.jacobian import member_condition_numbers

    inputs = [e.jacobian_inputs for e in evaluators]
    if not evaluators or any(x is None for x in inputs):
        raise InputValueError("member_jacobian_records: every evaluator must measure Jacobians (jacobian_inputs > 0).")
    shared = all(np.array_equal(x, inputs[0]) for x in inputs[1:])  # no evaluation noise: one input set
    cond = member_condition_numbers(g1, state, inputs[0] if shared else np.stack(inputs))
    return [_jacobian_record(cond.isel(member=m)) for m in range(len(evaluators))]


def _critic_similarity(critic: nn.Module, device: torch.device) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    dtype = next(critic.parameters(), torch.empty(0)).dtype

    @torch.no_grad()
    def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a_t, b_t = (torch.as_tensor(v, dtype=dtype, device=device) for v in (a, b))
        return critic.score_pairs(a_t, b_t).cpu().numpy()

    return similarity


def pixel_probe_accuracy(data: PairData, seed: int, noise_std: float = 0.0, protocol: str = "paper") -> float:
    """The baseline: the linear probe on raw top-half pixels (with noise, if the study adds it)."""
    from probe import analyzers

    rng = stream_rng(seed, "eval-noise")
    train1, _ = noisy_numpy(data.train1, data.train1, noise_std, True, rng)
    test1, _ = noisy_numpy(data.test1, data.test1, noise_std, True, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe = analyzers.linear_probe(train1, data.train_labels, test1, data.test_labels, protocol=protocol)
    return float(probe["accuracy"])
