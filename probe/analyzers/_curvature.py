"""The curvature models that precondition probe.analyzers.logistic's trust-region Newton-CG.

Both act on an `_Objective` of that module (its rows x32, sizes n, d, m, k, penalty alpha and
feature means): `Kronecker`, the averaged class curvature times the feature covariance, cheap to
update at every iterate; `ClassBlocks`, the Hessian's diagonal blocks per class, costly to form
(K Gram matrices of n x (d + 1)) and used once CG needs many steps. The optimum does not
depend on either: they only set the steps' metric, so approximations here cost steps, never
accuracy.
"""
from __future__ import annotations

import torch
from scipy.linalg import blas

COVARIANCE_CHUNK = 8192  # rows per float32 product when forming the feature covariance or a block
# A class block may leave out of its off-diagonal the rows with the least weight p (1 - p) |x|^2,
# as long as their sum stays under this share of the penalty's curvature alpha n: the block then
# moves by at most that share of its own smallest eigenvalue (alpha) and the preconditioner's
# conditioning by 1 / (1 - share). Rows a class is confidently right or wrong about add ~0; at
# 45,000 Fashion-MNIST rows 26-35% of each class's rows go, and the Newton and CG counts stay.
BLOCK_SLACK = 0.1


class Kronecker:
    """(A (x) G + alpha I)^-1 on W and A^-1 on the centred intercept, per member."""

    def __init__(self, objective):
        # The covariance of all rows, in float32 chunks: one from a subsample misses features that
        # are rare (a pixel lit in a few images has variance 1 once standardised, ~0 in most
        # subsamples), and the too-small curvature there sent every step far off (measured:
        # 60,000 Fashion-MNIST rows, 8,192-row subsample: steps cut to 1/8 for 25 iterations).
        x32, n = objective.x32, objective.n
        mean = x32.mean(dim=-2, keepdim=True)
        cov = torch.zeros(*x32.shape[:-2], objective.d, objective.d, dtype=torch.float32, device=x32.device)
        for start in range(0, n, COVARIANCE_CHUNK):
            centred = x32[..., start:start + COVARIANCE_CHUNK, :] - mean
            cov += centred.transpose(-1, -2) @ centred
        lam, v = torch.linalg.eigh(cov.to(torch.float64) / n)
        self.lam = lam.clamp_min(0.0).expand(objective.m, objective.d)  # (M, d)
        self.v = v.expand(objective.m, objective.d, objective.d)  # (M, d, d)
        self.objective = objective

    def update(self, p: torch.Tensor) -> None:
        """Re-estimate the class curvature A at the current probabilities (M, n, K)."""
        n = self.objective.n
        curvature = (torch.diag_embed(p.sum(dim=1)) - p.transpose(1, 2) @ p) / n  # (M, K, K)
        a, self.e = torch.linalg.eigh(curvature)
        a = a.clamp_min(0.0)
        self.w_curvature = a[:, :, None] * self.lam[:, None, :] + self.objective.alpha[:, None, None]
        self.w_scale = 1.0 / self.w_curvature
        # The all-ones class direction has a = 0: shifting every intercept by one constant changes
        # nothing, so no step goes that way (float32 round-off in H v would otherwise drift b there).
        self.b_curvature = torch.where(a > 1e-9 * a.amax(dim=1, keepdim=True), a, 0.0)
        self.b_scale = torch.where(self.b_curvature > 0, 1.0 / a.clamp_min(1e-300), 0.0)

    def _rotate(self, sw: torch.Tensor, sb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A raw-coordinate step in the eigenbasis of the preconditioner (centred intercept)."""
        centred_b = sb + torch.einsum("mkd,md->mk", sw, self.objective.mean)
        et = self.e.transpose(1, 2)
        return et @ sw @ self.v, (et @ centred_b[:, :, None]).squeeze(-1)

    def inner(self, a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """<a, b> in the metric of the preconditioner itself (the trust region's norm), (M,)."""
        (aw, ab), (bw, bb) = self._rotate(*a), self._rotate(*b)
        return (aw * bw * self.w_curvature).sum(dim=(1, 2)) + (ab * bb * self.b_curvature).sum(dim=1)

    def apply(self, gw: torch.Tensor, gb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.objective.mean
        centred = gw - gb[:, :, None] * mean[:, None, :]  # the W gradient at fixed centred intercept
        et = self.e.transpose(1, 2)
        zw = self.e @ ((et @ centred @ self.v) * self.w_scale) @ self.v.transpose(1, 2)
        zb = (self.e @ ((et @ gb[:, :, None]).squeeze(-1) * self.b_scale)[:, :, None]).squeeze(-1)
        return zw, zb - torch.einsum("mkd,md->mk", zw, mean)


class ClassBlocks:
    """The Hessian's diagonal blocks per member and class at the iterate they were formed at:
    B_mk = mean_i p_ik (1 - p_ik) [x_i; 1][x_i; 1]^T + alpha on W_k (the cross-class terms
    -p_ik p_il left out; off the diagonal, so are the lightest rows, within BLOCK_SLACK). The
    class-mean direction, which the softmax ignores (only the penalty curves it), gets 1 / alpha
    for W and no step for b."""

    def __init__(self, objective):
        self.objective = objective
        self.row_norms: torch.Tensor | None = None  # |x_i|^2 + 1 in float32, (n,) or (M, n)

    def update(self, p: torch.Tensor) -> bool:
        """Form the blocks at probabilities p (M, n, K); False (and no change) if one is singular."""
        obj = self.objective
        if self.row_norms is None:
            self.row_norms = torch.cat([chunk.square().sum(dim=-1) + 1 for chunk in
                                        obj.x32.split(COVARIANCE_CHUNK, dim=-2)], dim=-1)
        weights = (p * (1 - p)).to(torch.float32)
        slack = BLOCK_SLACK * obj.alpha * obj.n  # (M,): what the left-out rows may add up to, summed over rows
        blocks = torch.stack([
            weighted_grams(obj.x32 if obj.shared else obj.x32[m], weights[m],
                           self.row_norms if obj.shared else self.row_norms[m], float(slack[m]))
            for m in range(obj.m)])
        ridge = torch.cat([obj.alpha[:, None].expand(obj.m, obj.d), torch.full_like(obj.alpha[:, None], 1e-12)], 1)
        blocks = blocks.to(torch.float64) / obj.n + torch.diag_embed(ridge)[:, None]
        chol, info = torch.linalg.cholesky_ex(blocks)
        if bool((info != 0).any()):
            return False
        self.blocks, self.chol = blocks, chol
        return True

    @staticmethod
    def _join(v: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(W, b) as (M, K, d + 1) without its class mean, and that mean (M, 1, d + 1)."""
        joined = torch.cat([v[0], v[1][..., None]], dim=-1)
        mean = joined.mean(dim=1, keepdim=True)
        return joined - mean, mean

    def inner(self, a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        (ac, am), (bc, bm) = self._join(a), self._join(b)
        quad = (ac[..., None, :] @ self.blocks @ bc[..., None]).sum(dim=(1, 2, 3))
        return quad + self.objective.k * self.objective.alpha * (am[..., :-1] * bm[..., :-1]).sum(dim=(1, 2))

    def apply(self, gw: torch.Tensor, gb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centred, mean = self._join((gw, gb))
        z = torch.cholesky_solve(centred[..., None], self.chol)[..., 0]
        z = z - z.mean(dim=1, keepdim=True)
        return z[..., :-1] + mean[..., :-1] / self.objective.alpha[:, None, None], z[..., -1]


def weighted_grams(x: torch.Tensor, weights: torch.Tensor, row_norms: torch.Tensor, slack: float) -> torch.Tensor:
    """sum_i w_ik [x_i; 1][x_i; 1]^T for every column k of weights (n, K), float32 (K, d + 1, d + 1).

    Off the diagonal each class leaves out its lightest rows while their w_ik * row_norms_i sum to
    at most `slack`; the diagonal and the intercept's row and column are over all rows (one pass
    for all classes), so a feature lit only in left-out rows keeps its curvature.
    """
    n, d = x.shape
    grams = x.new_zeros(weights.shape[1], d + 1, d + 1)
    for k in range(weights.shape[1]):
        w = weights[:, k]
        curvature = w * row_norms
        order = torch.sort(curvature, stable=True).indices
        dropped = int((torch.cumsum(curvature[order], 0) <= slack).sum())
        for rows in torch.sort(order[dropped:]).values.split(COVARIANCE_CHUNK):
            scaled = torch.index_select(x, 0, rows).mul_(w[rows].sqrt()[:, None])
            grams[k, :d, :d] += gram(scaled)
    squares = sum(weights[start:start + COVARIANCE_CHUNK].T @ x[start:start + COVARIANCE_CHUNK].square()
                  for start in range(0, n, COVARIANCE_CHUNK))
    grams[:, :d, d] = grams[:, d, :d] = weights.T @ x
    grams[:, d, d] = weights.sum(dim=0)
    grams.diagonal(dim1=1, dim2=2)[:, :d] = squares
    return grams


def gram(a: torch.Tensor) -> torch.Tensor:
    """a^T a for float32 a (m, d). On the CPU BLAS's symmetric rank-k update: half the multiply-adds
    of a product (and 1.6x less time at 22,000 x 393), its upper triangle mirrored."""
    if a.device.type != "cpu":
        return a.T @ a
    upper = torch.from_numpy(blas.ssyrk(1.0, a.numpy().T, trans=0))  # (a^T)(a^T)^T with a^T Fortran-ordered
    return torch.triu(upper) + torch.triu(upper, 1).T
