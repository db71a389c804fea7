"""Small two-view data with a shared latent, for tests that train members (no dataset needed)."""
import numpy as np

from probe.data import PairData


def latent_pairs(n: int = 192, d: int = 12, seed: int = 0) -> PairData:
    """n training and 128 test pairs of d-dim views of one 4-dim latent, labels from its signs.
    The factor 0.2 keeps NWJ's exp(scores) of a 12-dim bilinear critic finite at init."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n + 128, 4)).astype(np.float32)
    a = 0.2 * (z @ rng.standard_normal((4, d)) + 0.3 * rng.standard_normal((n + 128, d))).astype(np.float32)
    b = 0.2 * (z @ rng.standard_normal((4, d)) + 0.3 * rng.standard_normal((n + 128, d))).astype(np.float32)
    y = (z[:, 0] > 0).astype(np.int64) + 2 * (z[:, 1] > 0)
    return PairData(a[:n], b[:n], a[n:], b[n:], y[:n], y[n:], (1, d))
