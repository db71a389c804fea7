"""Pairs of real images whose MI is known: two images whose classes agree with probability 1 - β.

After Lee & Rhee, "A Benchmark Suite for Evaluating Neural Mutual Information Estimators on
Unstructured Datasets" (NeurIPS 2024): draw a class C₁ uniformly from the m classes of an image
dataset, C₂ = C₁ with probability 1 - β and otherwise one of the other m - 1 classes uniformly,
then X an image of class C₁ and Y a different image of class C₂, each uniformly from the
dataset's images of that class. Every image carries one label, so the class is a function of
the image and X and Y depend on each other only through their classes:

    I(X; Y) = I(C₁; C₂) = ln m - H(β) - β ln(m - 1)     (nats; ln 10 = 2.303 at β = 0).

Rows are the flattened pixels (784 for MNIST), with the constant border pixels and the repeated
images (an image serves many rows) that real data bring.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from probe.errors import InputValueError
from probe.ground_truth.discrete import binary_entropy
from probe.ground_truth.distributions import JointDistribution
from probe.ground_truth.tasks import Task, make_task


class ImageClassPair(JointDistribution):
    """Image pairs from `images` (N, D) with class `labels` (N,), classes agreeing w.p. 1 - `beta`."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, beta: float) -> None:
        caller = "ImageClassPair"
        self.images = np.asarray(images)
        labels = np.asarray(labels)
        if self.images.ndim != 2 or labels.shape != (self.images.shape[0],):
            raise InputValueError(f"{caller}: images (shape={self.images.shape}) must be (N, D) with one label each "
                                  f"(labels shape={labels.shape}).")
        self.classes = np.unique(labels)
        self._members = [np.flatnonzero(labels == c) for c in self.classes]
        m = self.classes.size
        if m < 2 or min(g.size for g in self._members) < 2:
            raise InputValueError(f"{caller}: {m} class(es), the smallest with {min(g.size for g in self._members)} "
                                  "image(s); at least 2 classes of at least 2 images each are required.")
        if not (isinstance(beta, (int, float)) and 0.0 <= beta <= (m - 1) / m):
            raise InputValueError(f"{caller}: beta is {beta!r}; a probability in [0, {(m - 1) / m:.3g}] is required.")
        self.beta = float(beta)
        self.dim_x = self.dim_y = self.images.shape[1]

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        m = self.classes.size
        c1 = rng.integers(0, m, size=n)
        c2 = np.where(rng.random(n) < self.beta, (c1 + rng.integers(1, m, size=n)) % m, c1)
        sizes = np.array([g.size for g in self._members])
        first = (rng.random(n) * sizes[c1]).astype(np.int64)
        # The second image is another member of its class: drawn from the others when the classes agree.
        second = (rng.random(n) * (sizes[c2] - (c1 == c2))).astype(np.int64)
        second += (c1 == c2) & (second >= first)
        ix = np.array([self._members[c][i] for c, i in zip(c1, first)])
        iy = np.array([self._members[c][i] for c, i in zip(c2, second)])
        return self.images[ix].astype(np.float64), self.images[iy].astype(np.float64)

    def mutual_information(self) -> float:
        m = self.classes.size
        return math.log(m) - binary_entropy(self.beta) - self.beta * math.log(m - 1)

    def pointwise_mutual_information(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise InputValueError("ImageClassPair.pointwise_mutual_information: the pointwise MI of an image pair is "
                              "that of its classes, which the pixels do not carry; use mutual_information().")


def image_class_tasks(source, betas: tuple[float, ...] = (0.0, 0.2, 0.5), *, label: str | None = None) -> list[Task]:
    """One task per β from an image dataset: an IDX folder, or a `probe.data.ImageDataset` (train and
    test images together). Task names are "image-<label>-<β>", the label defaulting to the
    folder's (or dataset's) name."""
    from probe.data import ImageDataset, load_dataset

    dataset = source if isinstance(source, ImageDataset) else load_dataset(data_dir=source)
    images = np.concatenate([dataset.train.images, dataset.test.images]).reshape(
        len(dataset.train) + len(dataset.test), -1)
    labels = np.concatenate([dataset.train.labels, dataset.test.labels])
    if label is None:
        label = dataset.name.split(":")[-1] if isinstance(source, ImageDataset) else Path(source).resolve().name
    return [make_task(f"image-{label}-{beta}", "image",
                      f"{label} image pairs, classes agree w.p. {1 - beta:g} ({images.shape[1]} pixels each)",
                      ImageClassPair(images, labels, beta)) for beta in betas]
