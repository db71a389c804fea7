"""Conditioning of an encoder: singular values of its input-output Jacobian.

Tschannen et al. (ICLR 2020), Sec. 3.2 and Fig. 2: encoders that are invertible in principle
but hard to invert in practice, measured by ln(σ_max / σ_min) of the Jacobian of g1 at 128
inputs, reported as percentiles (0, 20, ..., 100). For a square Jacobian Σ ln σ_i is also
ln |det J|, the change-of-volume term of a normalizing flow.

The Jacobians come from torch.func: vmap(jacrev(f)) over a single-example function, falling
back to one jacrev per input for encoders vmap cannot trace (data-dependent control flow).
Singular values are computed in float64.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.func import jacrev, vmap

from probe.analyzers._common import check_seed, make_dataset, var
from probe.analyzers._common import quantiles as _quantiles
from probe.errors import InputTypeError, InputValueError
from probe.validation import check_array, check_positive_int, check_quantiles

CALLER = "condition_numbers"
REFERENCE = ("Tschannen et al., On Mutual Information Maximization for Representation Learning, ICLR 2020, "
             "Sec. 3.2, Fig. 2")
PAPER_QUANTILES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


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


def _singular_values(encoder: Callable, x: torch.Tensor, batch_size: int) -> tuple[np.ndarray, str]:
    """(n, min(d_in, d_out)) singular values, descending, of the encoder Jacobian at each row of x.

    Jacobians are formed batch by batch and reduced to singular values at once, so memory is
    O(batch_size * d_out * d_in), not O(n * d_out * d_in). Returns the method used too.
    """
    def single(v: torch.Tensor) -> torch.Tensor:
        return encoder(v.unsqueeze(0)).squeeze(0)

    batched = vmap(jacrev(single))
    blocks, method = [], "vmap(jacrev)"
    for lo in range(0, x.shape[0], batch_size):
        xb = x[lo:lo + batch_size]
        jac = None
        if method == "vmap(jacrev)":
            try:
                jac = batched(xb)
            except Exception:  # vmap cannot trace this encoder (e.g. data-dependent control flow)
                method = "per-sample jacrev"
        if jac is None:
            try:
                jac = torch.stack([jacrev(single)(v) for v in xb])
            except Exception as err:
                raise InputValueError(
                    f"{CALLER}: the encoder could not be differentiated with respect to its input: {err}. "
                    "It must be a differentiable torch function of a (n, d_in) tensor."
                ) from err
        # float64 SVDs on the CPU: 1.8 s vs 2.8 s on an H200 for 128 x 392², and GPUs without full
        # float64 units are far slower still (bench/evaluation_profile.py, bench/README.md).
        blocks.append(torch.linalg.svdvals(jac.detach().to("cpu", torch.float64)).numpy())
    return np.concatenate(blocks), method


def condition_numbers(
    encoder: Callable[[torch.Tensor], torch.Tensor],
    inputs: Any,
    *,
    quantiles: tuple[float, ...] = PAPER_QUANTILES,
    batch_size: int = 64,
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

    modes = [(m, m.training) for m in encoder.modules()] if isinstance(encoder, torch.nn.Module) else []
    if isinstance(encoder, torch.nn.Module):
        encoder.eval()
    try:
        with torch.no_grad():  # torch.func transforms still differentiate w.r.t. the input
            d_out = _check_output(encoder, x[:batch_size])
            sigma, method = _singular_values(encoder, x, batch_size)
    finally:
        for module, training in modes:
            module.training = training

    d_in = x.shape[1]
    tol = max(d_in, d_out) * torch.finfo(dtype).eps
    s_max, s_min = sigma[:, 0], sigma[:, -1]
    with np.errstate(divide="ignore"):
        log_cond = np.where(s_min > 0, np.log(s_max) - np.log(np.where(s_min > 0, s_min, 1.0)), np.inf)
        log_det = np.log(sigma).sum(axis=1)
    deficient = (s_min <= tol * s_max).astype(np.int8)

    data_vars = {
        "log_condition_number": var("sample", log_cond, "ln(sigma_max / sigma_min) of the encoder Jacobian", "1"),
        "rank_deficient": var("sample", deficient, "1 where sigma_min <= max(d_in, d_out) * eps * sigma_max", "1"),
        "log_condition_number_quantile": var("quantile", _quantiles(log_cond, levels),
                                             "quantiles of ln(sigma_max / sigma_min) over samples", "1"),
    }
    if d_in == d_out:
        data_vars["log_abs_det"] = var("sample", log_det, "ln |det J| = sum of ln sigma_i", "1")
    if return_singular_values:
        data_vars["singular_values"] = var(("sample", "rank"), sigma,
                                           "singular values of the Jacobian, descending", "1")
    n_singular = int(np.sum(s_min == 0))
    warning = (f"{n_singular} of {rows.size} Jacobians have sigma_min = 0: their log condition number is +inf"
               if n_singular else "none")
    return make_dataset(
        CALLER, f"{method}; svdvals in float64 of a {str(dtype).removeprefix('torch.')} Jacobian", data_vars,
        coords={"sample": rows, "quantile": levels}, reference=REFERENCE, d_in=d_in, d_out=d_out,
        batch_size=batch_size, max_samples=max_samples, n_rank_deficient=int(deficient.sum()), warning=warning,
        return_singular_values=return_singular_values, seed=seed,
    )
