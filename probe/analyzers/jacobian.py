"""Conditioning of an encoder: singular values of its input-output Jacobian.

Tschannen et al. (ICLR 2020), Sec. 3.2 and Fig. 2: encoders that are invertible in principle
but hard to invert in practice, measured by ln(σ_max / σ_min) of the Jacobian of g1 at 128
inputs, reported as percentiles (0, 20, ..., 100). For a square Jacobian Σ ln σ_i is also
ln |det J|, the change-of-volume term of a normalizing flow.

The Jacobians come from torch.func: vmap over inputs of jacrev (one vector-Jacobian product
per output) when d_out <= d_in, else of jacfwd (one Jacobian-vector product per input), so
the cost is min(d_in, d_out) passes per input; an encoder vmap cannot trace (data-dependent
control flow) falls back to one jacrev per input. `member_condition_numbers` does the same
for M members of one architecture at once, vmapping functional_call over their stacked
parameters (an ensemble's). Singular values: torch.linalg.svdvals on (k, d_out, d_in) batches
in float64, on the CPU.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.func import functional_call, jacfwd, jacrev, vmap

from probe.analyzers._common import check_seed, make_dataset, var
from probe.analyzers._common import quantiles as _quantiles
from probe.errors import InputTypeError, InputValueError
from probe.validation import check_array, check_positive_int, check_quantiles

CALLER = "condition_numbers"
REFERENCE = ("Tschannen et al., On Mutual Information Maximization for Representation Learning, ICLR 2020, "
             "Sec. 3.2, Fig. 2")
PAPER_QUANTILES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Inputs per vmap call. Measured (bench/README.md, 128 inputs of the paper's 30-coupling flow, one
# core): 64 at once spent 8 s of 24 in the kernel, faulting in fresh pages for every 51 MB
# intermediate; at 16 (13 MB) the allocator reuses its memory and the kernel time is ~0.
BATCH_SIZE = 16
SVD_BATCH = 128  # Jacobians per svdvals call: one LAPACK batch, float64 copies of 128 x 392² = 157 MB


def _jacobian_dtype(encoder: Callable, raw_inputs: Any) -> torch.dtype:
    """The encoder's parameter dtype; else float32 for float32 inputs; else float64."""
    if isinstance(encoder, torch.nn.Module):
        for param in encoder.parameters():
            if param.dtype.is_floating_point:
                return param.dtype
    raw_dtype = getattr(raw_inputs, "dtype", None)
    return torch.float32 if raw_dtype in (np.float32, torch.float32) else torch.float64


def _jacobian_device(encoder: Callable, raw_inputs: Any) -> torch.device:
    """Where the encoder's parameters live (a CUDA module takes numpy inputs too); else the inputs' device."""
    if isinstance(encoder, torch.nn.Module):
        for param in encoder.parameters():
            return param.device
    return raw_inputs.device if isinstance(raw_inputs, torch.Tensor) else torch.device("cpu")


def _check_output(encoder: Callable, x: torch.Tensor) -> int:
    """Run the encoder once on a batch and return d_out, with a clear error on a bad output."""
    try:
        with torch.no_grad():
            out = encoder(x)
    except Exception as err:  # the user's encoder failed: say so, keep its traceback
        raise InputValueError(f"{CALLER}: the encoder failed on inputs of shape {tuple(x.shape)}: {err}") from err
    if not isinstance(out, torch.Tensor):
        raise InputTypeError(f"{CALLER}: the encoder returned a {type(out).__name__}; a torch.Tensor is required.")
    if out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise InputValueError(
            f"{CALLER}: the encoder maps inputs of shape {tuple(x.shape)} to shape {tuple(out.shape)}; "
            f"an output of shape ({x.shape[0]}, d_out) is required."
        )
    if not torch.isfinite(out).all():
        raise InputValueError(f"{CALLER}: the encoder output contains NaN or inf values; all values must be finite.")
    return int(out.shape[1])


def _transforms(d_in: int, d_out: int) -> list[tuple[str, Callable]]:
    """Jacobian transforms by preference: the mode with fewer passes first, the other as a fallback
    (jacfwd needs forward-mode rules for every op)."""
    modes = [("jacrev", jacrev), ("jacfwd", jacfwd)]
    return modes if d_out <= d_in else modes[::-1]


def _jacobian_blocks(single: Callable, x: torch.Tensor, batch_size: int, d_in: int, d_out: int,
                     methods: list[str]) -> Iterator[torch.Tensor]:
    """(b, d_out, d_in) Jacobians of `single` (one example -> one output) at successive rows of x.

    The method used is appended to `methods` (vmap(jacrev), vmap(jacfwd) or per-sample jacrev).
    """
    candidates = [(f"vmap({name})", vmap(transform(single))) for name, transform in _transforms(d_in, d_out)]
    for lo in range(0, x.shape[0], batch_size):
        xb, jac = x[lo:lo + batch_size], None
        while candidates and jac is None:
            try:
                jac = candidates[0][1](xb)
            except Exception:  # vmap cannot trace this encoder (e.g. data-dependent control flow)
                candidates.pop(0)
        if jac is None:
            try:
                jac = torch.stack([jacrev(single)(v) for v in xb])
            except Exception as err:
                raise InputValueError(
                    f"{CALLER}: the encoder could not be differentiated with respect to its input: {err}. "
                    "It must be a differentiable torch function of a (n, d_in) tensor."
                ) from err
        methods.append(candidates[0][0] if candidates else "per-sample jacrev")
        yield jac.detach()


def _svdvals(blocks: Iterator[torch.Tensor]) -> np.ndarray:
    """(n, min(d_out, d_in)) singular values, descending, of a stream of (b, d_out, d_in) Jacobians.

    float64 on the CPU: 1.8 s vs 2.8 s on an H200 for 128 x 392², and GPUs without full float64
    units are far slower still (bench/README.md). Memory stays O(SVD_BATCH d_out d_in).
    """
    out, pending, count = [], [], 0

    def flush() -> None:
        jac = torch.cat(pending).to("cpu", torch.float64)
        pending.clear()
        # LAPACK refuses non-finite input: such a Jacobian (a diverged encoder) gets NaN singular values.
        finite = torch.isfinite(jac).flatten(1).all(dim=1)
        if bool(finite.all()):
            out.append(torch.linalg.svdvals(jac).numpy())
            return
        sigma = torch.full((jac.shape[0], min(jac.shape[1:])), torch.nan, dtype=torch.float64)
        if bool(finite.any()):
            sigma[finite] = torch.linalg.svdvals(jac[finite])
        out.append(sigma.numpy())

    for block in blocks:
        pending.append(block)
        count += block.shape[0]
        if count >= SVD_BATCH:
            flush()
            count = 0
    if pending:
        flush()
    return np.concatenate(out)


def _summary(sigma: np.ndarray, dtype: torch.dtype, d_in: int, d_out: int) -> dict[str, np.ndarray]:
    """Per-Jacobian log condition number, rank-deficiency flag and Σ ln σ from (..., rank) singular values."""
    tol = max(d_in, d_out) * torch.finfo(dtype).eps
    s_max, s_min = sigma[..., 0], sigma[..., -1]
    with np.errstate(divide="ignore"):
        log_cond = np.where(s_min > 0, np.log(s_max) - np.log(np.where(s_min > 0, s_min, 1.0)), np.inf)
        log_det = np.log(sigma).sum(axis=-1)
    log_cond = np.where(np.isnan(s_min), np.nan, log_cond)  # a non-finite Jacobian (_svdvals)
    return {"log_cond": log_cond, "deficient": (s_min <= tol * s_max).astype(np.int8), "log_det": log_det}


def _data_vars(summary: dict, sigma: np.ndarray, levels: tuple[float, ...], lead: tuple[str, ...],
               d_in: int, d_out: int, return_singular_values: bool) -> dict:
    """The output variables over lead + ("sample",) (lead: () or ("member",))."""
    log_cond = summary["log_cond"]
    per = np.apply_along_axis(_quantiles, -1, log_cond, levels) if log_cond.ndim > 1 else _quantiles(log_cond, levels)
    data_vars = {
        "log_condition_number": var((*lead, "sample"), log_cond, "ln(sigma_max / sigma_min) of the encoder Jacobian",
                                    "1"),
        "rank_deficient": var((*lead, "sample"), summary["deficient"],
                              "1 where sigma_min <= max(d_in, d_out) * eps * sigma_max", "1"),
        "log_condition_number_quantile": var((*lead, "quantile"), per,
                                             "quantiles of ln(sigma_max / sigma_min) over samples", "1"),
    }
    if d_in == d_out:
        data_vars["log_abs_det"] = var((*lead, "sample"), summary["log_det"], "ln |det J| = sum of ln sigma_i", "1")
    if return_singular_values:
        data_vars["singular_values"] = var((*lead, "sample", "rank"), sigma,
                                           "singular values of the Jacobian, descending", "1")
    return data_vars


def _warning(log_cond: np.ndarray) -> str:
    n_singular = int(np.sum(np.isposinf(log_cond)))
    return (f"{n_singular} of {log_cond.size} Jacobians have sigma_min = 0: their log condition number is +inf"
            if n_singular else "none")


class _EvalMode:
    """A module in eval mode for the measurement, its train/eval flags restored after."""

    def __init__(self, module: Any):
        self.modes = [(m, m.training) for m in module.modules()] if isinstance(module, torch.nn.Module) else []

    def __enter__(self) -> None:
        for module, _ in self.modes:
            module.training = False

    def __exit__(self, *exc: Any) -> None:
        for module, training in self.modes:
            module.training = training


def condition_numbers(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    inputs: Any,
    *,
    quantiles: tuple[float, ...] = PAPER_QUANTILES,
    batch_size: int = BATCH_SIZE,
    max_samples: int | None = None,
    return_singular_values: bool = False,
    seed: int = 0,
) -> xr.Dataset:
    """Log condition numbers ln(σ_max / σ_min) of the encoder Jacobian at each input.

    Args:
        encoder: torch nn.Module or callable mapping a (n, d_in) tensor to (n, d_out). A module
            is put in eval mode for the measurement and its train/eval flags restored after;
            parameters get no gradients.
        inputs: (n, d_in) numpy array or tensor. Cast to the encoder's parameter dtype (for a
            plain callable: float32 inputs stay float32, everything else is float64).
        quantiles: levels in [0, 1] for `log_condition_number_quantile` (paper: 0, .2, ..., 1).
        batch_size: inputs per vmap call. max_samples: measure a seeded subset of this many rows.
        return_singular_values: also return `singular_values` over (sample, rank).

    Returns:
        Dataset over `sample` (coordinate = row of `inputs`): `log_condition_number` (1; +inf
        where σ_min = 0), `rank_deficient` (1 where σ_min <= max(d_in, d_out) * eps * σ_max
        in the Jacobian's dtype), `log_abs_det` = Σ ln σ_i when d_in = d_out, and
        `log_condition_number_quantile` over `quantile`. Rectangular Jacobians use their
        min(d_in, d_out) singular values.

    Reference: Tschannen et al., ICLR 2020, Sec. 3.2 and Fig. 2.
    """
    if not callable(encoder):
        raise InputTypeError(
            f"{CALLER}: encoder is a {type(encoder).__name__}; a torch nn.Module or callable is required."
        )
    x_np = check_array(inputs, name="inputs", caller=CALLER, min_samples=1)
    levels = check_quantiles(quantiles, name="quantiles", caller=CALLER)
    batch_size = check_positive_int(batch_size, name="batch_size", caller=CALLER)
    seed = check_seed(seed, CALLER)
    rows = np.arange(x_np.shape[0])
    if max_samples is not None:
        max_samples = check_positive_int(max_samples, name="max_samples", caller=CALLER)
        if max_samples < rows.size:
            rows = np.sort(np.random.default_rng(seed).choice(rows.size, max_samples, replace=False))
    dtype = _jacobian_dtype(encoder, inputs)
    x = torch.as_tensor(x_np[rows], dtype=dtype, device=_jacobian_device(encoder, inputs))

    def single(v: torch.Tensor) -> torch.Tensor:
        return encoder(v.unsqueeze(0)).squeeze(0)

    methods: list[str] = []
    with _EvalMode(encoder), torch.no_grad():  # torch.func transforms still differentiate w.r.t. the input
        d_out = _check_output(encoder, x[:batch_size])
        sigma = _svdvals(_jacobian_blocks(single, x, batch_size, x.shape[1], d_out, methods))

    d_in = x.shape[1]
    summary = _summary(sigma, dtype, d_in, d_out)
    data_vars = _data_vars(summary, sigma, levels, (), d_in, d_out, return_singular_values)
    return make_dataset(
        CALLER, f"{methods[-1]}; svdvals in float64 of a {str(dtype).removeprefix('torch.')} Jacobian", data_vars,
        coords={"sample": rows, "quantile": levels}, reference=REFERENCE, d_in=d_in, d_out=d_out,
        batch_size=batch_size, max_samples=max_samples, n_rank_deficient=int(summary["deficient"].sum()),
        warning=_warning(summary["log_cond"]), return_singular_values=return_singular_values, seed=seed,
    )


def member_condition_numbers(
    module: torch.nn.Module,
    state: dict[str, torch.Tensor],
    inputs: Any,
    *,
    quantiles: tuple[float, ...] = PAPER_QUANTILES,
    batch_size: int = BATCH_SIZE,
    return_singular_values: bool = False,
) -> xr.Dataset:
    """`condition_numbers` of M members of one architecture at once: `module`'s forward with
    each member's parameters (functional_call under vmap over the member axis).

    Args:
        module: the architecture; its own parameter values are not used. Put in eval mode for
            the measurement, flags restored after.
        state: {name: (M, *shape)}: every parameter and buffer of `module`, stacked over the
            members, e.g. an `Ensemble`'s params and buffers under "g1." with the prefix stripped.
        inputs: (n, d_in) shared by every member, or (M, n, d_in) one set per member.
        quantiles, batch_size (Jacobians per vmap call, over all members), return_singular_values:
            as `condition_numbers`.

    Returns:
        `condition_numbers`'s variables with a leading `member` dimension: member m's values
        are those `condition_numbers` gives for member m alone, to float rounding.
    """
    if not isinstance(module, torch.nn.Module) or not isinstance(state, dict) or not state:
        raise InputTypeError(f"{CALLER}: module must be an nn.Module and state a non-empty dict of stacked tensors.")
    levels = check_quantiles(quantiles, name="quantiles", caller=CALLER)
    batch_size = check_positive_int(batch_size, name="batch_size", caller=CALLER)
    state = {k: v.detach() for k, v in state.items()}
    first = next(iter(state.values()))
    m = first.shape[0]
    dtype = next((v.dtype for v in state.values() if v.dtype.is_floating_point), torch.float32)
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs,
                        dtype=dtype, device=first.device)
    if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[0] != m) or x.shape[-2] == 0 or not torch.isfinite(x).all():
        raise InputValueError(f"{CALLER}: inputs of shape {tuple(x.shape)} for {m} members; finite (n, d_in) shared "
                              f"inputs or ({m}, n, d_in) per member, n >= 1, are required.")
    shared = x.ndim == 2
    xs = x.expand(m, *x.shape) if shared else x
    n, d_in = xs.shape[1:]

    def single(params: dict, v: torch.Tensor) -> torch.Tensor:
        return functional_call(module, params, (v.unsqueeze(0),)).squeeze(0)

    methods: list[str] = []
    with _EvalMode(module), torch.no_grad():
        member0 = {k: v[0] for k, v in state.items()}
        d_out = _check_output(lambda v: functional_call(module, member0, (v,)), xs[0, :batch_size])
        sizes: list[int] = []
        try:
            name, transform = _transforms(d_in, d_out)[0]
            jac = vmap(vmap(transform(single, argnums=1), in_dims=(None, 0)))
            chunk = max(1, batch_size // m)
            blocks = [jac(state, xs[:, lo:lo + chunk]) for lo in range(0, n, chunk)]  # each (M, b, d_out, d_in)
            sizes = [b.shape[1] for b in blocks]
            flat = _svdvals(b.reshape(-1, d_out, d_in) for b in blocks)
            methods.append(f"vmap over members of vmap({name}) of functional_call")
        except Exception:  # a module vmap cannot trace over stacked parameters: member by member
            sigma = []
            for i in range(m):
                own = {k: v[i] for k, v in state.items()}
                sigma.append(_svdvals(_jacobian_blocks(lambda v, own=own: single(own, v), xs[i], batch_size, d_in,
                                                       d_out, methods)))
            sigma = np.stack(sigma)
    if sizes:  # stream order is block by block, members within a block: back to (M, n, rank)
        pieces = np.split(flat, np.cumsum([m * b for b in sizes])[:-1])
        sigma = np.concatenate([p.reshape(m, b, -1) for p, b in zip(pieces, sizes)], axis=1)

    summary = _summary(sigma, dtype, d_in, d_out)
    data_vars = _data_vars(summary, sigma, levels, ("member",), d_in, d_out, return_singular_values)
    return make_dataset(
        CALLER, f"{methods[-1]}; svdvals in float64 of a {str(dtype).removeprefix('torch.')} Jacobian", data_vars,
        coords={"member": np.arange(m), "sample": np.arange(n), "quantile": levels}, reference=REFERENCE,
        d_in=d_in, d_out=d_out, batch_size=batch_size, n_members=m,
        n_rank_deficient=int(summary["deficient"].sum()), warning=_warning(summary["log_cond"]),
        return_singular_values=return_singular_values, shared_inputs=shared,
    )
