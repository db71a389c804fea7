"""Devices, cores and threads: one home for every choice of where and how wide `probe` computes.

Oversubscribed cores make torch's small matmuls 10-50x slower (measured on a loaded 2-core
machine), so the runner, the executors' workers and the analyzers' scikit-learn fits all set
their thread counts here, from one count of the cores this process may use.
"""
from __future__ import annotations

import functools
import os
from typing import Callable

from probe.errors import InputValueError

# BLAS threads for scikit-learn's fits on (thousands x hundreds) arrays: a quarter of the cores,
# at most 4. Measured with bench/analyzer_threads.py (V-information, 4,000 x 392, same value
# every time): 16 cores: 14.8 s with 16 OpenBLAS threads, 0.74 s with 4, 1.2 s with 1;
# 2 cores: 5.6 s with 2 threads, 2.7 s with 1, 57 s with 4. The matrices are too small for more.
MAX_FIT_THREADS = 4


def cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def set_threads(n: int) -> None:
    """Torch and BLAS/OpenMP threads of this process."""
    import torch
    from threadpoolctl import threadpool_limits

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    threadpool_limits(n)


def fit_threads() -> int:
    """BLAS threads for one scikit-learn fit: a quarter of the cores, at least 1, at most 4."""
    return max(1, min(MAX_FIT_THREADS, cores() // 4))


def capped_blas_threads(function: Callable) -> Callable:
    """Run `function` with at most `fit_threads()` BLAS/OpenMP threads; a lower limit already in
    force (`probe run-study --threads 1`, a user's threadpool_limits) is kept, never raised."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_info, threadpool_limits

        current = min((info["num_threads"] for info in threadpool_info()), default=1)
        with threadpool_limits(min(fit_threads(), current)):
            return function(*args, **kwargs)
    return wrapper


def resolve_device(device: str):
    """`auto`, `cpu` or `cuda` as a torch.device; `auto` is the GPU when there is one."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputValueError("--device cuda was requested but no CUDA device is available; use --device cpu or auto.")
    if device not in ("cpu", "cuda"):
        raise InputValueError(f"--device is {device!r}; choose cpu, cuda or auto.")
    return torch.device(device)


def device_label(device) -> str:
    """'cpu', or 'cuda:0 (NVIDIA H200)': what a results file records as its device."""
    import torch

    return str(device) if device.type != "cuda" else f"{device} ({torch.cuda.get_device_name(device)})"


def torch_build() -> dict[str, str]:
    """Which torch this is, for every results file: its version (with the wheel's local label,
    e.g. 2.13.0+cpu) and its build ("CUDA 13.0" or "CPU-only"): the two builds give slightly
    different numbers, and the CUDA one is 5 GB where the CPU one is a few hundred MB."""
    import torch

    cuda = torch.version.cuda
    return {"torch_version": torch.__version__, "torch_build": f"CUDA {cuda}" if cuda else "CPU-only"}
