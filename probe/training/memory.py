"""How much memory a group of members trained together needs, projected before it is built.

The runner (`probe.runner.budget`) splits groups so that each fits a budget. The projection
starts from one member's models (built by the study's `member`) and its `TrainConfig`:

- parameters: P trainable float32 values a member, held 6 times over while a group trains
  (`probe.training.members`): the member's own modules (the study's `Member`), the ensemble's
  stacked copy, its gradient buffer, Adam's two moments, and autograd's gradients during a
  step; 7 with per-member learning rates (BatchedAdam's work tensor). A group that resumes also
  holds the loaded checkpoint's 3 copies while it restores them;
- activations: what autograd saves in one member's forward pass at the batch size, measured
  with `torch.autograd.graph.saved_tensors_hooks` on a one-member ensemble, plus the gradients
  of the largest of them during the backward pass (M members save M times that);
- each member's evaluator: its held-out training-batch pairs, its noisy copies of the views
  when the study adds noise, and, with a probe pool, the embeddings its fit in flight holds;
- one evaluation at a time: the encoded splits, then the largest of V-information's float64
  copies of the training embeddings (with its search's split and float32 copy, and the class
  blocks' chunks), the probe's, and g1's Jacobians (one vmap chunk of them measured here);
- on a CPU, the process as it is (torch, the data: its resident memory now); on CUDA the
  budget is the GPU's, and the data are copied to it once.

`bench/memory_projection.py` checks it against the peak resident memory of real groups.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import torch

# Per-member copies of the (M, P) parameters while training, and with per-member learning rates.
PARAMETER_COPIES, PARAMETER_COPIES_PER_MEMBER_LR = 6, 7
RESUME_COPIES = 3                  # a loaded group checkpoint: the parameters and Adam's two moments
BLOCK_CHUNK = 8192                 # probe.analyzers._curvature.COVARIANCE_CHUNK: rows per chunk of a class block
# Bytes per (training row x feature) in one V-information fit: float64 embeddings, their
# standardised copy, the search's train/validation split of it, and its float32 copy.
VINFO_BYTES_PER_VALUE = 8 + 8 + 8 + 4
PROBE_BYTES_PER_VALUE = 8 + 8      # the paper probe: float64 embeddings and their min-max scaled copy
# A Jacobian entry beyond the first chunk: float32 block, its concatenation, the float64 copy and
# the SVD's workspace (measured: 6.1 MiB more per input of a 392 x 392 Jacobian, residual MLP).
JACOBIAN_BYTES_PER_ENTRY = 40


@dataclasses.dataclass(frozen=True)
class MemoryProjection:
    """Projected peak bytes of a group of m members: `fixed + m * per_member` (on `device`).

    `fixed`: the process now (CPU), one evaluation's buffers, the ensemble's template;
    `per_member`: parameters (`parameters` values, `copies` times), activations and evaluator state.
    """

    fixed: int
    per_member: int
    parameters: int
    activations: int
    evaluation: int
    device: str = "cpu"
    copies: int = PARAMETER_COPIES

    def peak(self, members: int) -> int:
        return self.fixed + members * self.per_member

    def members_within(self, budget: int) -> int:
        """The most members whose group fits `budget` bytes (0: not even one)."""
        return max(0, int((budget - self.fixed) // max(self.per_member, 1)))


def project_memory(triple: tuple, data: Any, config: Any, device: torch.device | str, *, pool_workers: int = 0,
                   per_member_lr: bool = False, resuming: bool = False) -> MemoryProjection:
    """The projection for groups of members like `triple` (g1, g2, critic), trained on `data`
    (a PairData) with `config` (a TrainConfig) on `device`; `pool_workers`: probe-pool workers
    (their fits in flight hold each member's embeddings here)."""
    device = torch.device(device)
    parameters = sum(p.numel() for m in triple for p in m.parameters() if p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for m in triple for b in m.buffers())
    copies = (PARAMETER_COPIES_PER_MEMBER_LR if per_member_lr else PARAMETER_COPIES) + (RESUME_COPIES if resuming else 0)
    activations = saved_activation_bytes(triple, data, config.batch_size, device)
    n_train, n_test = len(data.train1), len(data.test1)
    d_in = int(np.prod(data.train1.shape[1:]))
    d_out = output_width(triple[0], data.train1[:2], device)
    per_member = copies * parameters * 4 + 2 * buffers + activations + evaluator_bytes(config, n_train, n_test, d_in)
    if pool_workers and config.probe_protocol == "paper":
        per_member += (n_train + n_test) * d_out * 4  # the fit in flight keeps its embeddings
    evaluation = evaluation_bytes(config, n_train, n_test, d_out, jacobian_bytes(triple[0], data, config))
    fixed = evaluation + 2 * (parameters * 4 + buffers)  # the template and one member's modules at an evaluation
    if device.type == "cpu":
        fixed += resident_bytes()
    else:
        fixed += torch.cuda.memory_allocated(device) + data.train1.nbytes + data.train2.nbytes
    return MemoryProjection(int(fixed), int(per_member), parameters, activations, evaluation, str(device), copies)


def saved_activation_bytes(triple: tuple, data: Any, batch_size: int, device: torch.device) -> int:
    """Bytes autograd keeps for one member's update at `batch_size` pairs (InfoNCE on its scores),
    parameters excluded, plus the largest saved tensor again (its gradient during the backward pass)."""
    from probe.training.ensemble import Ensemble
    from probe.training.ensemble_optim import batched_estimator

    ensemble = Ensemble.from_modules([triple], device=device)
    params = {p.untyped_storage().data_ptr() for p in [ensemble.flat, *ensemble.buffers.values()]}
    rows = np.arange(batch_size) % len(data.train1)
    x1 = torch.from_numpy(np.ascontiguousarray(data.train1[rows]))[None].to(device, ensemble.dtype)
    x2 = torch.from_numpy(np.ascontiguousarray(data.train2[rows]))[None].to(device, ensemble.dtype)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = -batched_estimator("infonce")(ensemble.scores(x1, x2)).sum()
    del loss
    return sum(saved.values()) + max(saved.values(), default=0)


@torch.no_grad()
def output_width(encoder: torch.nn.Module, x: np.ndarray, device: torch.device) -> int:
    """Features of g1's embeddings (for the evaluation buffers)."""
    was_training = encoder.training
    encoder.eval()
    try:
        return int(np.prod(encoder.to(device)(torch.from_numpy(np.ascontiguousarray(x)).to(device)).shape[1:]))
    finally:
        encoder.train(was_training)


def evaluator_bytes(config: Any, n_train: int, n_test: int, d_in: int) -> int:
    """What each member's `Evaluator` holds between evaluations: its training-batch pairs (copies
    of about n_test rows of both views) and, with evaluation noise, its noisy views."""
    pairs = (n_test // config.batch_size) * config.batch_size * 2 * d_in * 4
    noisy = (n_train + 2 * n_test) * d_in * 4 if config.noise_std > 0 else 0
    return pairs + noisy


def evaluation_bytes(config: Any, n_train: int, n_test: int, d_out: int, jacobians: int = 0) -> int:
    """The largest buffers of one evaluation (one member at a time): the encoded splits, held
    throughout, and the largest of the parts that follow one another: the paper probe's fit,
    V-information's (with the class blocks' chunks) and g1's `jacobians` (bytes)."""
    encoded = (n_train + 2 * n_test) * d_out * 4
    fits = PROBE_BYTES_PER_VALUE * (n_train + n_test) * d_out
    if config.analyzers:
        classes = 10  # the image datasets' labels; the blocks scale with it
        # Forming the class blocks: two float32 chunks of rows, and K blocks in float32 and float64
        # with their float64 Cholesky factors.
        blocks = 2 * min(BLOCK_CHUNK, n_train) * (d_out + 1) * 4 + classes * (d_out + 1) ** 2 * (4 + 8 + 8)
        fits = max(fits, VINFO_BYTES_PER_VALUE * n_train * d_out + 16 * n_test * d_out + blocks)
    return encoded + max(fits, jacobians)


def jacobian_bytes(encoder: torch.nn.Module, data: Any, config: Any) -> int:
    """What g1's Jacobians at an evaluation take: measured for one vmap chunk (its intermediates
    depend on the architecture), plus the float32 Jacobians of the other inputs and their float64
    copies and SVD workspace (`JACOBIAN_BYTES_PER_ENTRY` an entry, measured for the residual MLP)."""
    if not config.jacobian_inputs:
        return 0
    from probe import analyzers
    from probe.analyzers.jacobian import BATCH_SIZE

    chunk = min(int(config.jacobian_inputs), BATCH_SIZE)
    inputs = np.ascontiguousarray(data.test1[:chunk].reshape(chunk, -1))
    measured = peak_rise(lambda: analyzers.condition_numbers(encoder, inputs))
    d = inputs.shape[1]
    per_input = JACOBIAN_BYTES_PER_ENTRY * d * d
    first = measured if measured is not None else chunk * per_input * 4
    return int(first + (int(config.jacobian_inputs) - chunk) * per_input)


def peak_rise(fn) -> int | None:
    """How far this process's resident memory rises above its level now while `fn()` runs, from
    the kernel's peak, which /proc/self/clear_refs resets (Linux); None where it cannot be read.
    (The reset also lowers what /usr/bin/time or getrusage report as the process's peak, to the
    peak from here on: this runs before training, below the peaks that matter.)"""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = resident_bytes()
    fn()
    try:
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        return None
    return max(peak - before, 0)


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc; else the peak so far, from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def available_bytes(device: torch.device | str) -> int:
    """Memory a run may still take when it starts: the GPU's free memory on CUDA; else the
    system's available memory (Linux MemAvailable, which counts reclaimable caches), else the
    physical memory."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return 2**63 - 1  # unknown: no limit
