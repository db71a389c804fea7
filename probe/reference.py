"""The values Tschannen et al. (ICLR 2020, arXiv 1907.13625) report, as plain Python data.

The same numbers as docs/reference.md (the paper's protocol and results, in the repository;
tests/test_report.py checks that every value here appears there). Every number keeps its source
tag: [P] stated in the paper, [F] read off its figures by eye (about ±0.005 accuracy, ±0.2
nats), [C] in the companion notebook's code. A value the paper gives only as an inequality or a
range is stored as a note or a band, never as an invented number.

Shape of one study entry (`PAPER[study]`)::

    {
        "figure":   "Fig. 1a/b",                  # where the paper shows it
        "dataset":  "mnist",                      # "mnist", "cifar10", or "synthetic" (own data)
        "takeaway": "...",                          # one line: what the figure shows
        "grid":     ("estimator",),                 # grid dims that the labels below name
        "values":   {variable: {label: [(step, value), ...]}},
        "bands":    {variable: {label: [(step, low, high), ...]}},   # ranges the paper gives
        "tags":     {variable: "F" | "P" | "C"},
        "notes":    ["...", ...],                   # inequalities, ranges over time, caveats
        "baselines": {name: {"value": float, "tag": str, "about": str}},
    }

A label joins one coordinate per grid dim with " · " in the order of `grid`, e.g.
"infonce · bilinear" for grid ("estimator", "critic"); "*" matches any coordinate, and the
label "" of an empty grid matches every run. Use `label_matches` to compare a label with a run's
coordinates: it ignores case, punctuation and the dim order of the result file.

Quantile variables (dim `quantile`, e.g. `log_condition_number`) name the statistic after a
colon: "log_condition_number:median", "log_condition_number:max"; `QUANTILE_STATS` maps the
statistic to its quantile.

The grid ids assumed here (estimators "infonce", "nwj"; critics "bilinear", "separable",
"concat"; encoders "convnet", "mlp"; targets "2", "4"; negatives "iid", "noniid") follow the
project's readable-id convention; `label_matches` also accepts common spellings
("concat_mlp", "ConvNet", "t=4").
"""
from __future__ import annotations

import copy
import re

CITATION = "Tschannen et al. 2020"
QUANTILE_STATS = {"min": 0.0, "median": 0.5, "max": 1.0}

_PIXELS = {"value": 0.85, "tag": "P", "about": "logistic regression on the raw top-half pixels"}
_PIXELS_NOISE = {
    "value": 0.84,
    "tag": "P",
    "about": "logistic regression on top-half pixels with Gaussian noise of std 0.05 (notebook: about 0.835)",
}
_SUPERVISED = {"value": 0.94, "tag": "P", "about": "a supervised MLP or ConvNet on the top half"}

PAPER: dict[str, dict] = {
    "invertible-encoders": {
        "figure": "Fig. 1a/b",
        "dataset": "mnist",
        "takeaway": (
            "Bijective encoders keep the true MI constant, yet maximising an MI bound raises the "
            "linear-probe accuracy from 0.86 to about 0.90: what improves is not MI."
        ),
        "grid": ("estimator",),
        "values": {
            "probe_accuracy": {
                "infonce": [(0, 0.862), (1000, 0.872), (5000, 0.889), (20000, 0.896)],
                "nwj": [(0, 0.862), (1000, 0.866), (5000, 0.879), (20000, 0.890)],
            },
            "bound_test": {
                "infonce": [(0, -1.3), (1000, 4.4), (5000, 4.7), (20000, 4.75)],
                "nwj": [(1000, 3.5), (5000, 4.7), (20000, 5.7)],
            },
        },
        "bands": {"bound_test": {"nwj": [(20000, 5.3, 6.1)]}},
        "tags": {"probe_accuracy": "F", "bound_test": "F"},
        "notes": [
            "I_NWJ at step 0 is below -5 nats [F] (off the plotted range); not drawn.",
            "I_NWJ at 20k spreads over 5.3-6.1 nats across runs [F].",
            "I_NCE cannot exceed log(128) = 4.852 nats at batch size 128 [P].",
        ],
        "baselines": {"pixels": _PIXELS, "supervised": _SUPERVISED},
    },
    "adversarial-encoder": {
        "figure": "Fig. 1c",
        "dataset": "mnist",
        "takeaway": (
            "An invertible encoder (MI stays maximal) trained against a linear classifier drives "
            "the probe accuracy from 0.86 down to about 0.48: MI says nothing about linear usability."
        ),
        "grid": (),
        "values": {"probe_accuracy": {"": [(0, 0.86), (400, 0.77), (800, 0.45), (4000, 0.48)]}},
        "bands": {"probe_accuracy": {"": [(4000, 0.41, 0.55)]}},
        "tags": {"probe_accuracy": "F"},
        "notes": [
            "One run in the paper.",
            "After 0.8k iterations the accuracy moves between 0.41 and 0.55 [F], ending about 0.48.",
            "Learning rates 1e-3 / 1e-5 in the notebook [C]; the paper text says 1e-4 / 1e-6 [P].",
        ],
        "baselines": {"pixels": _PIXELS},
    },
    "hard-to-invert": {
        "figure": "Fig. 2",
        "dataset": "mnist",
        "takeaway": (
            "Residual-MLP encoders that start at the identity become ill-conditioned as the bound "
            "is maximised (ln condition number 0 to about 4.6 median) while accuracy rises to 0.88."
        ),
        "grid": ("estimator",),
        "values": {
            "probe_accuracy": {
                "infonce": [(0, 0.840), (20000, 0.880)],
                "nwj": [(0, 0.840), (20000, 0.878)],
            },
            "log_condition_number:median": {
                "infonce": [(0, 0.0), (20000, 4.6)],
                "nwj": [(0, 0.0), (20000, 3.4)],
            },
            "log_condition_number:max": {
                "infonce": [(0, 0.0), (20000, 6.7)],
                "nwj": [(0, 0.0), (20000, 5.4)],
            },
        },
        "bands": {},
        "tags": {
            "probe_accuracy": "F",
            "log_condition_number:median": "F",
            "log_condition_number:max": "F",
        },
        "notes": [
            "InfoNCE's largest ln condition number spikes to about 7.7 during training [F].",
            "Percentiles 0, 20, ..., 100 of ln(sigma_max/sigma_min) over 128 inputs per evaluation [P].",
            "Coupled Gaussian noise (std 0.05) during training lowers the pixel baseline to about 0.84 [P].",
        ],
        "baselines": {"pixels": _PIXELS_NOISE, "supervised": _SUPERVISED},
    },
    "critic-capacity": {
        "figure": "Fig. 3",
        "dataset": "mnist",
        "takeaway": (
            "The critic with the tightest bound (concat MLP) gives the worst representation; the "
            "looser bilinear and separable critics give better ones."
        ),
        "grid": ("estimator", "critic"),
        "values": {
            "probe_accuracy": {
                "infonce · concat": [(0, 0.80), (20000, 0.856)],
                "nwj · concat": [(0, 0.80), (20000, 0.855)],
                "infonce · bilinear": [(0, 0.80), (20000, 0.880)],
                "nwj · bilinear": [(0, 0.80), (20000, 0.870)],
                "infonce · separable": [(0, 0.80), (20000, 0.877)],
                "nwj · separable": [(0, 0.80), (20000, 0.866)],
            },
            "bound_test": {
                "nwj · concat": [(20000, 6.2)],
                "nwj · bilinear": [(20000, 5.4)],
                "nwj · separable": [(20000, 5.5)],
                "infonce · concat": [(20000, 4.70)],
                "infonce · bilinear": [(20000, 4.72)],
                "infonce · separable": [(20000, 4.72)],
            },
        },
        "bands": {},
        "tags": {"probe_accuracy": "F", "bound_test": "F"},
        "notes": [
            "All critics start near 0.80 accuracy [F] (stored as 0.80 at step 0).",
            "Encoders: MLP 392-300-300-100, 238,300 parameters [C].",
        ],
        "baselines": {"pixels": _PIXELS, "supervised": _SUPERVISED},
    },
    "encoder-architecture": {
        "figure": "Fig. 4a/b",
        "dataset": "mnist",
        "takeaway": (
            "At the same bound value (t = 2 or 4 nats) a ConvNet encoder is 3.5-4.5 points more "
            "accurate than an MLP: the architecture, not MI, decides."
        ),
        "grid": ("encoder", "target", "estimator"),
        "values": {
            "probe_accuracy": {
                "convnet · 4 · infonce": [(20000, 0.905)],
                "convnet · 4 · nwj": [(20000, 0.905)],
                "convnet · 2 · infonce": [(20000, 0.894)],
                "convnet · 2 · nwj": [(20000, 0.897)],
                "mlp · 4 · infonce": [(20000, 0.869)],
                "mlp · 4 · nwj": [(20000, 0.868)],
                "mlp · 2 · infonce": [(20000, 0.850)],
                "mlp · 2 · nwj": [(20000, 0.855)],
            },
            # L_t = |I_EST - t| reaches about 0 within 7k steps [F], i.e. the estimate sits at t.
            "bound_test": {
                "* · 4 · *": [(7000, 4.0), (20000, 4.0)],
                "* · 2 · *": [(7000, 2.0), (20000, 2.0)],
            },
        },
        "bands": {},
        "tags": {"probe_accuracy": "F", "bound_test": "F"},
        "notes": [
            "L_t reaches about 0 within 7k steps [F]; the bound values drawn are the targets t.",
            "ConvNet 219,748 parameters; MLP 238,300 [C]. Trained supervised, both reach 0.94 [P].",
        ],
        "baselines": {"pixels": _PIXELS, "supervised": _SUPERVISED},
    },
    "noniid-negatives": {
        "figure": "Fig. 4c",
        "dataset": "synthetic",
        "takeaway": (
            "When the negatives in a batch share a latent, InfoNCE and NWJ report 0.1-0.2 nats, far "
            "above the true MI of 0.0204 nats; with i.i.d. negatives both sit just below it."
        ),
        "grid": ("estimator", "negatives"),
        "values": {},
        "bands": {
            "bound_test": {
                "infonce · noniid": [(20000, 0.17, 0.20)],
                "nwj · noniid": [(20000, 0.09, 0.10)],
            }
        },
        "tags": {"bound_test": "F"},
        "notes": [
            "Curves smoothed with a Gaussian filter of sigma = 100 steps [P]; the bands are the "
            "smoothed curves' range late in training [F].",
            "With i.i.d. negatives both estimates sit just under the true MI of 0.0204 nats [F].",
        ],
        "baselines": {"true_mi": {"value": 0.0204, "tag": "P", "about": "true MI, -0.5 ln(1 - 0.04) nats"}},
    },
}

# Appendix G (experiment 7): the experiments of Sec. 3.2 (Fig. 8) and 3.3 (Fig. 9) on CIFAR-10. Views
# are the top and bottom halves, 16x32x3 = 1,536 values each [P] (the text's "32 x 14 x 3" is taken
# as a typo); learning rate 1e-5 instead of 1e-4 and 3x the iterations, 60k steps [P]. The values are
# read off the appendix figures [F] (docs/reference.md, experiment 7); all at step 60k.
_CIFAR_PIXELS = {"value": 0.24, "tag": "F", "about": "logistic regression on the raw top-half pixels (16x32x3)"}
_CIFAR_PROTOCOL = ("CIFAR-10 appendix: views 16x32x3 (1,536 values; the text's \"32 x 14 x 3\" read as a typo), "
                   "learning rate 1e-5, 60k steps (3x MNIST's) [P].")

PAPER_CIFAR10: dict[str, dict] = {
    "critic-capacity": {
        "figure": "App. G, Fig. 8 (CIFAR-10)",
        "dataset": "cifar10",
        "takeaway": (
            "On CIFAR-10 too the concat critic gives the worst representation (0.31 against about 0.34), "
            "while its I_NWJ is the highest (6.1 nats against 3.1 and 4.1)."
        ),
        "grid": ("estimator", "critic"),
        "values": {
            "probe_accuracy": {
                "infonce · concat": [(60000, 0.31)],
                "nwj · concat": [(60000, 0.31)],
                "infonce · bilinear": [(60000, 0.345)],
                "nwj · bilinear": [(60000, 0.34)],
                "infonce · separable": [(60000, 0.338)],
                "nwj · separable": [(60000, 0.335)],
            },
            "bound_test": {
                "infonce · concat": [(60000, 4.5)],
                "nwj · concat": [(60000, 6.1)],
                "infonce · bilinear": [(60000, 4.65)],
                "nwj · bilinear": [(60000, 3.1)],
                "infonce · separable": [(60000, 4.65)],
                "nwj · separable": [(60000, 4.1)],
            },
        },
        "bands": {},
        "tags": {"probe_accuracy": "F", "bound_test": "F"},
        "notes": [
            _CIFAR_PROTOCOL,
            "I_NWJ of the bilinear (about 3.1) and separable (about 4.1) critics is very noisy across runs [F].",
            "Encoders: MLP 1536-300-300-100 (581,500 parameters), critics as in Fig. 3.",
        ],
        "baselines": {"pixels": _CIFAR_PIXELS},
    },
    "encoder-architecture": {
        "figure": "App. G, Fig. 9 (CIFAR-10)",
        "dataset": "cifar10",
        "takeaway": (
            "On CIFAR-10 too, at the same target t the ConvNet's representation (0.39-0.415) beats the "
            "MLP's (about 0.34)."
        ),
        "grid": ("encoder", "target", "estimator"),
        "values": {"probe_accuracy": {"mlp · * · *": [(60000, 0.34)]}},
        "bands": {
            "probe_accuracy": {"convnet · * · *": [(60000, 0.39, 0.415)]},
            # The paper plots L_t = |I_EST - t|; target_gap is that on held-out pairs.
            "target_gap": {"* · 4 · *": [(60000, 0.3, 0.6)]},
        },
        "tags": {"probe_accuracy": "F", "target_gap": "F"},
        "notes": [
            _CIFAR_PROTOCOL,
            "ConvNet 0.39-0.415 over targets and estimators; MLP about 0.34 [F].",
            "The t = 4 runs have not matched their target at 60k: L_t about 0.3-0.6 [F].",
            "ConvNet on 16x32x3 views: 222,948 parameters; MLP 1536-300-300-100: 581,500.",
        ],
        "baselines": {"pixels": _CIFAR_PIXELS},
    },
}

_TABLES = {"mnist": PAPER, "cifar10": PAPER_CIFAR10}


def paper_dataset(dataset: str | None) -> str | None:
    """The paper's dataset that a result's `dataset` attr names: "mnist", "cifar10" or None.

    "mnist", "mnist-5k", "folder:mnist-5k" -> "mnist"; "cifar10", "folder:CIFAR-10" ->
    "cifar10"; anything else (e.g. "digits", scikit-learn's 8x8 digits) -> None, because the
    paper's numbers are not comparable there.
    """
    if not dataset:
        return None
    name = str(dataset).lower()
    if "mnist" in name and "fashion" not in name:
        return "mnist"
    if re.search(r"cifar[-_ ]?10(?!\d)", name):
        return "cifar10"
    return None


def paper_values(study: str, dataset: str = "mnist") -> dict | None:
    """The paper's reported values for `study` on `dataset` ("mnist" or "cifar10"), or None.

    Returns a deep copy (see the module docstring for its shape), so callers may edit it.
    """
    table = _TABLES.get(dataset, {})
    entry = table.get(study)
    return copy.deepcopy(entry) if entry is not None else None


_ALIASES = {"concatmlp": "concat", "mlpconcat": "concat", "cnn": "convnet", "conv": "convnet"}


def normalize_id(value: object) -> str:
    """Canonical form of a grid coordinate for matching: "Concat_MLP" -> "concat", "t=4" -> "4"."""
    text = str(value).strip().lower()
    number = re.fullmatch(r"t?\s*=?\s*(\d+)(?:\.0+)?", text)
    if number:
        return number.group(1)
    text = re.sub(r"[^a-z0-9]", "", text)
    return _ALIASES.get(text, text)


def label_matches(label: str, grid: tuple[str, ...], coords: dict[str, object]) -> bool:
    """Whether a paper `label` over `grid` names the run whose grid coordinates are `coords`.

    A "*" part matches anything; a dim of `grid` that the run lacks makes it no match.
    """
    parts = [p.strip() for p in label.split("·")] if grid else []
    if len(parts) != len(grid):
        raise ValueError(f"label_matches: label {label!r} has {len(parts)} part(s); grid {grid} needs {len(grid)}.")
    for dim, part in zip(grid, parts):
        if part == "*":
            continue
        if dim not in coords or normalize_id(coords[dim]) != normalize_id(part):
            return False
    return True


def comparable_paper_values(study: str, dataset: str | None) -> tuple[dict | None, str]:
    """The paper's values that a result on `dataset` (its `dataset` attr) can be held against.

    Returns (entry, "") or (None, a sentence saying why nothing is comparable). Studies on the
    paper's own synthetic data (noniid-negatives) are comparable whatever the attr says.
    """
    if study not in PAPER and study not in PAPER_CIFAR10:
        return None, f"The paper has no experiment matching study '{study}'."
    if PAPER.get(study, {}).get("dataset") == "synthetic":
        return paper_values(study), ""
    family = paper_dataset(dataset)
    if family is None:
        return None, (
            f"The paper's values are for MNIST (some for CIFAR-10); this result is on '{dataset}', "
            "so they are not shown."
        )
    entry = paper_values(study, family)
    if entry is None:
        return None, f"The paper reports no {family} values for study '{study}'."
    return entry, ""
