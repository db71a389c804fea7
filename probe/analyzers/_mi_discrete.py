"""Plug-in MI of discrete pairs with the Miller-Madow correction, as per-row terms.

Each distinct row of x is a state of X (likewise y). With counts c, the plug-in estimate is
the mean over rows of ln(n c(x_i, y_i) / (c(x_i) c(y_i))), and the Miller-Madow correction
adds (m - 1) / (2n) to each plug-in entropy (m the states seen), so

    Î = Î_plug-in - (m_xy - m_x - m_y + 1) / (2n),

removing the first-order bias (for independent variables E[Î_plug-in] ≈ (m_x - 1)(m_y - 1)/(2n)).
The per-row log ratios are the plug-in's influence function plus Î, so their spread gives the
standard error (delta method).

References: Miller, "Note on the bias of information estimates" (1955); Paninski, "Estimation
of Entropy and Mutual Information", Neural Computation 15 (2003), Sec. 3.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PlugIn:
    value: float          # Miller-Madow corrected plug-in MI (nats)
    terms: np.ndarray     # (n,) per-row terms, mean = value
    states: tuple[int, int, int]  # states seen in x, y and (x, y)


def state_codes(a: np.ndarray) -> np.ndarray:
    """(n, d) -> (n,) int64: the index of each row among the distinct rows."""
    return np.unique(a, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def plug_in(cx: np.ndarray, cy: np.ndarray) -> PlugIn:
    """Miller-Madow MI of the paired state codes `cx`, `cy` (each (n,) int64)."""
    n = cx.size
    joint = state_codes(np.stack([cx, cy], axis=1))
    count_x, count_y, count_xy = (np.bincount(c)[c] for c in (cx, cy, joint))
    m_x, m_y, m_xy = (int(c.max()) + 1 for c in (cx, cy, joint))
    correction = (m_xy - m_x - m_y + 1) / (2.0 * n)
    terms = np.log(n * count_xy / (count_x * count_y.astype(np.float64))) - correction
    return PlugIn(float(terms.mean()), terms, (m_x, m_y, m_xy))
