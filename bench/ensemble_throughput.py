"""Member-steps per second: an ensemble of M members (probe.training.ensemble) vs M single-member steps.

For each architecture and size, in one run: M members trained one after another with
train_pair's step (forward, the isfinite check, backward, clip_grad_norm_, torch.optim.Adam,
float(loss)), against one `EnsembleTrainer.step` of all M (the batched-product engine and,
where asked, the vmap engine), InfoNCE with gradient clipping at 1.0, batches already on the
device. Prints a table and, last, one JSON line. Absolute rates on a shared machine are noisy;
each variant is measured in alternating bursts and the median taken, so the ratios hold up.

Architectures (sizes follow the studies' presets; `paper` only where it fits, see --sizes):
  gaussian-concat     critic only, concat critic on scalar x, y (noniid-negatives)
  gaussian-separable  critic only, separable critic on d-dim Gaussians (estimator-validation)
  mlp                 MLP encoders + bilinear critic (critic-capacity, encoder-architecture)
  mlp-concat          MLP encoders + concat critic, 200 hidden units on all K² pairs (critic-capacity)
  convnet             the paper's ConvNet + bilinear critic (encoder-architecture)
  resmlp              residual MLP + bilinear critic (hard-to-invert)
  flow                RealNVP, additive couplings + bilinear critic (invertible-encoders)

Usage: python bench/ensemble_throughput.py [--device cpu|cuda] [--threads N] [--members 1,4,8,20]
       [--archs mlp,flow] [--sizes smoke,quick] [--engines native,vmap] [--seconds 1.5] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

import probe  # noqa: F401  (before torch: sets passive OpenMP waiting, see probe/__init__.py)
from probe.critics import make_critic
from probe.encoders import ConvEncoder, MLPEncoder, RealNVP, ResidualMLPEncoder
from probe.estimators import infonce
from probe.training.ensemble import Ensemble
from probe.training.ensemble_optim import EnsembleTrainer


def _pair(make, critic):
    return lambda: (make(), make(), critic())


# (arch, size) -> (input dim, batch K, factory of one (g1, g2, critic))
CONFIGS = {
    ("gaussian-concat", "smoke"): (1, 32, _pair(nn.Identity, lambda: make_critic("concat", 1, 1, hidden=(10, 10)))),
    ("gaussian-concat", "quick"): (1, 128, _pair(nn.Identity, lambda: make_critic("concat", 1, 1, hidden=(10,) * 5))),
    ("gaussian-separable", "smoke"): (5, 32, _pair(nn.Identity, lambda: make_critic("separable", 5, 5, hidden=(16,),
                                                                                    out=8))),
    ("gaussian-separable", "quick"): (20, 64, _pair(nn.Identity, lambda: make_critic("separable", 20, 20,
                                                                                     hidden=(128, 128), out=32))),
    ("gaussian-separable", "paper"): (20, 64, _pair(nn.Identity, lambda: make_critic("separable", 20, 20,
                                                                                     hidden=(256, 256), out=32))),
    ("mlp", "smoke"): (32, 128, _pair(lambda: MLPEncoder(32, (32,), 16), lambda: make_critic("bilinear", 16, 16))),
    ("mlp", "quick"): (392, 128, _pair(lambda: MLPEncoder(392, (300, 300), 100),
                                       lambda: make_critic("bilinear", 100, 100))),
    ("mlp-concat", "smoke"): (32, 128, _pair(lambda: MLPEncoder(32, (32,), 16),
                                             lambda: make_critic("concat", 16, 16, hidden=(32,)))),
    ("mlp-concat", "quick"): (392, 128, _pair(lambda: MLPEncoder(392, (300, 300), 100),
                                              lambda: make_critic("concat", 100, 100))),
    ("convnet", "smoke"): (32, 128, _pair(lambda: ConvEncoder(32, (4, 8), (4, 8), out=16),
                                          lambda: make_critic("bilinear", 16, 16))),
    ("convnet", "quick"): (392, 128, _pair(lambda: ConvEncoder(392, (14, 28), (16, 32), out=100),
                                           lambda: make_critic("bilinear", 100, 100))),
    ("convnet", "paper"): (392, 128, _pair(lambda: ConvEncoder(392, (14, 28), (64, 128), out=100),
                                           lambda: make_critic("bilinear", 100, 100))),
    ("resmlp", "smoke"): (32, 128, _pair(lambda: ResidualMLPEncoder(32, 2), lambda: make_critic("bilinear", 32, 32))),
    ("resmlp", "quick"): (392, 128, _pair(lambda: ResidualMLPEncoder(392, 5),
                                          lambda: make_critic("bilinear", 392, 392))),
    ("flow", "smoke"): (32, 128, _pair(lambda: RealNVP(32, 2, (32,)), lambda: make_critic("bilinear", 32, 32))),
    ("flow", "quick"): (392, 128, _pair(lambda: RealNVP(392, 6, (256, 256)), lambda: make_critic("bilinear", 392, 392))),
    ("flow", "paper"): (392, 128, _pair(lambda: RealNVP(392, 30, (512, 512)),
                                        lambda: make_critic("bilinear", 392, 392))),
}
CLIP, LR = 1.0, 1e-3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rate(step, device: torch.device, seconds: float) -> float:
    """Calls of `step` per second over at least `seconds` (and 2 calls)."""
    sync(device)
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        step()
        calls += 1
    sync(device)
    return calls / (time.perf_counter() - start)


def sequential_step(triples, x1, x2):
    """train_pair's step for each member in turn."""
    runs = []
    for g1, g2, critic in triples:
        params = [p for m in (g1, g2, critic) for p in m.parameters()]
        runs.append((g1, g2, critic, params, torch.optim.Adam(params, lr=LR)))

    def step():
        for m, (g1, g2, critic, params, optimizer) in enumerate(runs):
            loss = -infonce(critic(g1(x1[m]), g2(x2[m])))
            if not torch.isfinite(loss):
                raise FloatingPointError("diverged")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, CLIP)
            optimizer.step()
            float(loss.detach())

    return step


def ensemble_step(triples, x1, x2, device, engine: str, tf32: bool = False):
    trainer = EnsembleTrainer(Ensemble.from_modules(triples, device=device, engine=engine), "infonce", LR,
                              grad_clips=CLIP, tf32=tf32)

    def step():
        trainer.step(x1, x2)
        if trainer.unread_steps >= 100:  # a caller reads the losses now and then
            trainer.read_losses()

    return step


def measure(steps: dict, device: torch.device, seconds: float, rounds: int) -> dict[str, float]:
    """Median calls per second of each step, measured in `rounds` alternating bursts (so a change
    in the machine's load hits every variant alike), after 2 warm-up calls each."""
    for step in steps.values():
        step(), step()
    rates = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            rates[name].append(rate(step, device, seconds / rounds))
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--members", default="1,4,8,20")
    parser.add_argument("--archs", default=",".join(dict.fromkeys(a for a, _ in CONFIGS)))
    parser.add_argument("--sizes", default=None, help="default: smoke,quick on the CPU, smoke,quick,paper on CUDA")
    parser.add_argument("--engines", default="native,vmap")
    parser.add_argument("--seconds", type=float, default=1.5, help="time per variant and configuration")
    parser.add_argument("--rounds", type=int, default=3, help="alternating bursts per variant (median taken)")
    parser.add_argument("--tf32", action="store_true", help="(CUDA) TF32 in the ensemble's step")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = (args.sizes or ("smoke,quick,paper" if device.type == "cuda" else "smoke,quick")).split(",")
    engines = args.engines.split(",")
    rows = []
    header = f"{'arch':<19} {'size':<6} {'M':>3} {'one-at-a-time':>14} " + " ".join(
        f"{e + ' (x)':>18}" for e in engines)
    print(f"member-steps/s on {device} ({torch.get_num_threads()} threads), InfoNCE, clip {CLIP}")
    print(header)
    for arch in args.archs.split(","):
        for size in sizes:
            if (arch, size) not in CONFIGS:
                continue
            dim, k, factory = CONFIGS[(arch, size)]
            for m in (int(v) for v in args.members.split(",")):
                torch.manual_seed(0)
                triples = [tuple(t.to(device) for t in factory()) for _ in range(m)]
                x1, x2 = torch.rand(m, k, dim, device=device), torch.rand(m, k, dim, device=device)
                steps = {"sequential": sequential_step(triples, x1, x2)}
                for engine in engines:
                    steps[engine] = ensemble_step(triples, x1, x2, device, engine, args.tf32)
                rates = measure(steps, device, args.seconds, args.rounds)
                row = {"arch": arch, "size": size, "members": m, "batch": k, "device": str(device),
                       "threads": torch.get_num_threads(), **{name: m * r for name, r in rates.items()}}
                for engine in engines:
                    row[f"{engine}_speedup"] = row[engine] / row["sequential"]
                rows.append(row)
                cells = " ".join(f"{row[e]:>10.1f} ({row[e + '_speedup']:4.2f}x)" for e in engines)
                print(f"{arch:<19} {size:<6} {m:>3} {row['sequential']:>14.1f} {cells}", flush=True)
    print(json.dumps({"device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
                      "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
