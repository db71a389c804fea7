"""Random streams: one generator per (seed, purpose), recorded with each cell.

Init, batch order, training noise and evaluation noise draw from separate streams derived from
the run's seed with `np.random.SeedSequence`, so changing one (say, the batch order) never
shifts another. While the study runner records them (`recording_streams`), every stream's seed
is collected and stored in the cell's attrs as `seed_<stream>`.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterator

import numpy as np
import torch


def seeded_generator(seed: int, stream: str) -> torch.Generator:
    """A torch generator per (seed, purpose), so init, batches and noise draw from separate streams."""
    g = torch.Generator()
    g.manual_seed(_stream_seed(seed, stream))
    return g


# The streams one cell drew from, {stream: seed}, while the study runner records them.
_STREAMS: ContextVar[dict[str, int] | None] = ContextVar("probe_stream_seeds", default=None)


@contextlib.contextmanager
def recording_streams(into: dict[str, int] | None = None) -> Iterator[dict[str, int]]:
    """Collect the seed of every stream drawn inside this block (`seeded_generator`, `stream_rng`,
    `note_seed`) into `into` (a new dict by default); the study runner stores them in each cell's
    attrs as `seed_<stream>`. A group of cells trained together records each member into its own."""
    streams: dict[str, int] = {} if into is None else into
    token = _STREAMS.set(streams)
    try:
        yield streams
    finally:
        _STREAMS.reset(token)


def note_seed(stream: str, seed: int) -> int:
    """Record a fixed seed (e.g. an analyzer's) with the cell's streams; returns `seed`."""
    streams = _STREAMS.get()
    if streams is not None:
        streams[stream] = int(seed)
    return seed


def _stream_seed(seed: int, stream: str) -> int:
    return note_seed(stream, int(np.random.SeedSequence([seed, *stream.encode()]).generate_state(1)[0]))


def stream_rng(seed: int, stream: str) -> np.random.Generator:
    return np.random.default_rng(_stream_seed(seed, stream))


@contextlib.contextmanager
def seeded_init(seed: int) -> Iterator[torch.Generator]:
    """Build a cell's models inside this block.

    torch's initialisers (trunc_normal_, Glorot, the default ones) draw from the global
    generator: inside the block it is seeded from the cell's "init" stream, and restored
    afterwards. The block gets the `init` generator itself for the draws that take one
    (the flows' permutations).
    """
    init = seeded_generator(seed, "init")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=init)))
        yield init
