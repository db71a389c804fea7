"""The 40 tasks of the "Beyond Normal" v1 benchmark, each with its true mutual information.

Czyż, Grabowski, Vogt, Beerenwinkel & Marx, "Beyond Normal: On the Evaluation of Mutual
Information Estimators" (NeurIPS 2023) propose a suite of joint distributions (X, Y) whose MI
is known in closed form: Gaussians, Student-t, additive uniform noise, and those
distributions pushed through injective maps of X and of Y, which leave MI unchanged. The ids,
parameters and order follow their v1 list (cbg-ethz/bmi, `bmi.benchmark.BENCHMARK_TASKS_LIST`).
Unlike bmi's benchmark runner, samples are not rescaled to unit variance here: estimators
standardise their inputs themselves where they need to.

    >>> task = get_task("multinormal-sparse-3-3-2-2.0")
    >>> x, y = task.sample(5000, seed=0)       # (5000, 3), (5000, 3), float64
    >>> task.mutual_information                # nats
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from probe.errors import unknown_name
from probe.ground_truth.distributions import (
    AdditiveUniformPair,
    GaussianPair,
    JointDistribution,
    StudentPair,
)
from probe.ground_truth.transforms import (
    BIMODAL_X,
    BIMODAL_Y,
    WIGGLY_X,
    WIGGLY_Y,
    Asinh,
    Compose,
    HalfCube,
    Identity,
    NormalCDF,
    Spiral,
    SwissRoll,
    Transform,
    Wiggly,
)
from probe.validation import check_positive_int


@dataclass(frozen=True)
class Task:
    """One benchmark task: a joint distribution of (X, Y) and its true MI.

    Attributes:
        name: readable id, as in bmi ("1v1-normal-0.75", "spiral-multinormal-sparse-3-3-2-2.0").
        family: "normal-1v1", "additive-noise", "dense", "sparse", "student", "transformed" or
            "embedding" (a transformed task belongs to "transformed" whatever its base).
        dim_x, dim_y: dimensions of X and Y as sampled (after any transform).
        mutual_information: I(X; Y) in nats: in closed form, or by Monte Carlo for the families
            that have none (computed on first use; `mutual_information_se` is its standard error).
        description: one line: the distribution, its parameters and the transform.
        base: name of the untransformed task (its own name when there is no transform).
        transform: name of the map applied to both sides ("identity" when none).
        distribution: the untransformed P_XY (samples, closed-form MI, pointwise MI).
        transform_x, transform_y: the injective maps applied to X and to Y.
    """

    name: str
    family: str
    dim_x: int
    dim_y: int
    description: str
    base: str
    transform: str
    distribution: JointDistribution = field(repr=False, compare=False)
    transform_x: Transform = field(repr=False, compare=False)
    transform_y: Transform = field(repr=False, compare=False)

    @property
    def mutual_information(self) -> float:
        return self.distribution.mutual_information()

    @property
    def mutual_information_se(self) -> float:
        """Standard error of the true MI in nats (0 for a closed form, else the Monte Carlo's)."""
        return self.distribution.mutual_information_se()

    def sample_base(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The untransformed pairs behind `sample(n, seed)`: (n, base dim_x), (n, base dim_y)."""
        return self._draw(n, seed, f"Task('{self.name}').sample_base")

    def _draw(self, n: int, seed: int, caller: str) -> tuple[np.ndarray, np.ndarray]:
        n = check_positive_int(n, name="n", caller=caller)
        seed = check_positive_int(seed, name="seed", caller=caller, minimum=0)
        return self.distribution.sample(n, np.random.default_rng(seed))

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw `n` pairs with `np.random.default_rng(seed)`.

        Returns float64 arrays x (n, dim_x) and y (n, dim_y); the same seed gives the same arrays.
        """
        x, y = self._draw(n, seed, f"Task('{self.name}').sample")
        return (
            np.ascontiguousarray(self.transform_x.forward(x), dtype=np.float64),
            np.ascontiguousarray(self.transform_y.forward(y), dtype=np.float64),
        )


def make_task(name: str, family: str, description: str, distribution: JointDistribution, *,
          base: str | None = None, transform: str = "identity", transform_x: Transform | None = None,
          transform_y: Transform | None = None) -> Task:
    transform_x = transform_x or Identity()
    transform_y = transform_y or Identity()
    return Task(
        name=name,
        family=family,
        dim_x=distribution.dim_x + transform_x.added_dims,
        dim_y=distribution.dim_y + transform_y.added_dims,
        description=description,
        base=base or name,
        transform=transform,
        distribution=distribution,
        transform_x=transform_x,
        transform_y=transform_y,
    )


def _then(outer: Transform, inner: Transform) -> Transform:
    """outer ∘ inner, dropping identities so that names stay short."""
    if isinstance(inner, Identity):
        return outer
    return inner if isinstance(outer, Identity) else Compose(outer, inner)


def _transformed(task: Task, prefix: str, transform_x: Transform, transform_y: Transform, what: str, *,
                 name: str | None = None, description: str | None = None) -> Task:
    """Push `task` through transform_x × transform_y; bmi's id puts `prefix` in front of the task's."""
    transform_x, transform_y = _then(transform_x, task.transform_x), _then(transform_y, task.transform_y)
    family = "embedding" if transform_x.added_dims or transform_y.added_dims else "transformed"
    return make_task(
        name or f"{prefix}-{task.name}", family, description or f"{what} @ {task.description}", task.distribution,
        base=task.base, transform=prefix if task.transform == "identity" else f"{prefix}∘{task.transform}",
        transform_x=transform_x, transform_y=transform_y,
    )


def bivariate_normal(correlation: float = 0.75) -> Task:
    """(X, Y) standard normal with correlation ρ; MI = -½ log(1 - ρ²)."""
    cov = np.array([[1.0, correlation], [correlation, 1.0]])
    return make_task(f"1v1-normal-{correlation}", "normal-1v1", f"Bivariate normal 1 × 1 (correlation {correlation})",
                 GaussianPair(cov, 1))


def additive_noise(epsilon: float) -> Task:
    """X ~ U(0, 1), Y = X + U(-ε, ε)."""
    return make_task(f"1v1-additive-{epsilon}", "additive-noise", f"Uniform 1 × 1 (additive noise ε={epsilon})",
                 AdditiveUniformPair(epsilon))


def multinormal_dense(dim_x: int, dim_y: int, off_diag: float = 0.5) -> Task:
    """Unit variances and correlation `off_diag` between every two of the dim_x + dim_y coordinates."""
    d = dim_x + dim_y
    cov = np.full((d, d), off_diag) + (1.0 - off_diag) * np.eye(d)
    return make_task(f"multinormal-dense-{dim_x}-{dim_y}-{off_diag}", "dense",
                 f"Multinormal {dim_x} × {dim_y} (dense, correlation {off_diag})", GaussianPair(cov, dim_x))


def multinormal_sparse(dim_x: int, dim_y: int, n_interacting: int = 2, strength: float = 2.0) -> Task:
    """bmi's sparse latent-variable Gaussian: X_i = λ Z_i + E_i, Y_i = λ Z_i + F_i for i < k.

    The other coordinates get independent λ V_i + E_i noise, so all variances are 1 + λ², the k
    pairs (X_i, Y_i) have correlation λ² / (1 + λ²) (0.8 for λ = 2) and all else is uncorrelated:
    MI = -(k/2) log(1 - (λ²/(1 + λ²))²). The matrix is the correlation matrix of that model.
    """
    d, rho = dim_x + dim_y, strength**2 / (1.0 + strength**2)
    cov = np.eye(d)
    for i in range(n_interacting):
        cov[i, dim_x + i] = cov[dim_x + i, i] = rho
    return make_task(f"multinormal-sparse-{dim_x}-{dim_y}-{n_interacting}-{strength}", "sparse",
                 f"Multinormal {dim_x} × {dim_y} ({n_interacting}-pair, correlation {rho:.2f})",
                 GaussianPair(cov, dim_x))


def student_identity(dim_x: int, dim_y: int, dof: int) -> Task:
    """Multivariate Student-t with identity dispersion: uncorrelated, yet dependent through the shared scale."""
    return make_task(f"student-identity-{dim_x}-{dim_y}-{dof}", "student", f"Student-t {dim_x} × {dim_y} (dof={dof})",
                 StudentPair(np.eye(dim_x + dim_y), dim_x, dof))


def normal_cdf(task: Task) -> Task:
    return _transformed(task, "normal_cdf", NormalCDF(), NormalCDF(), "Normal CDF")


def half_cube(task: Task) -> Task:
    return _transformed(task, "half_cube", HalfCube(), HalfCube(), "Half-cube")


def asinh(task: Task) -> Task:
    return _transformed(task, "asinh", Asinh(), Asinh(), "Asinh")


def wiggly(task: Task) -> Task:
    return _transformed(task, "wiggly", Wiggly(WIGGLY_X, "wiggly_x"), Wiggly(WIGGLY_Y, "wiggly_y"), "Wiggly")


def spiral(task: Task, speed: float = 1.0) -> Task:
    """Spirals in the (0, 1) plane of X and the (1, 2) plane of Y at speed / dim (needs dim_y >= 3)."""
    dx, dy = task.dim_x, task.dim_y
    return _transformed(task, "spiral", Spiral(dx, (0, 1), speed / dx), Spiral(dy, (1, 2), speed / dy), "Spiral")


def bimodal(correlation: float = 0.75) -> Task:
    """The bivariate normal with X sent to 0.3 N(0,1) + 0.7 N(5,1) and Y to ½ N(-1,1) + ½ N(3,1)."""
    return _transformed(bivariate_normal(correlation), "bimodal", BIMODAL_X, BIMODAL_Y, "Bimodal",
                        name=f"1v1-bimodal-{correlation}",
                        description=f"Bimodal 1 × 1 (Gaussian correlation {correlation}, mixture marginals)")


def swissroll(task: Task) -> Task:
    """X in [0, 1] (1-D) rolled into the plane: a 2 × 1 task with the base task's MI."""
    return _transformed(task, "swissroll_x", SwissRoll(), Identity(), "Swiss roll 2 × 1")


def _v1_tasks() -> list[Task]:
    binormal = bivariate_normal(0.75)
    uniform = normal_cdf(binormal)
    bistudent = student_identity(1, 1, 1)
    one_dim = [binormal, uniform, additive_noise(0.1), additive_noise(0.75), bimodal(0.75), wiggly(binormal),
               half_cube(binormal), bistudent, asinh(bistudent)]
    embeddings = [swissroll(uniform)]
    multinormal = ([multinormal_dense(d, d) for d in (2, 3, 5, 25, 50)]
                   + [multinormal_sparse(d, d) for d in (2, 3, 5, 25)])
    students = [student_identity(d, d, dof) for d, dof in ((2, 1), (2, 2), (3, 2), (3, 3), (5, 2), (5, 3))]
    sparse = [multinormal_sparse(d, d) for d in (3, 5, 25)]
    transformed = (
        [normal_cdf(t) for t in sparse]
        + [half_cube(t) for t in sparse]
        + [spiral(t) for t in sparse]
        + [spiral(normal_cdf(t)) for t in sparse]
        + [asinh(student_identity(d, d, dof)) for d, dof in ((2, 1), (3, 2), (5, 2))]
    )
    return one_dim + embeddings + multinormal + students + transformed


TASKS: dict[str, Task] = {task.name: task for task in _v1_tasks()}


def list_tasks() -> list[Task]:
    """All tasks in bmi's v1 order."""
    return list(TASKS.values())


def get_task(name: str) -> Task:
    """The task called `name`; an unknown name raises `UnknownNameError` with the closest id."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise unknown_name("task", name, list(TASKS)) from None
