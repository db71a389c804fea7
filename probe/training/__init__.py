"""Training: the settings of a run, its random streams, the loop, evaluation and checkpoints.

- `config`: `TrainConfig`, built from a study's settings in one call (`TrainConfig.from_settings`);
- `streams`: one random generator per (seed, purpose), recorded with each cell;
- `noise`: minibatch order and view noise;
- `loop`: `train_pair`, one grid cell's training run;
- `evaluation`: what is measured at each evaluation step;
- `checkpoint`: mid-cell checkpoints that resume with the same numbers.
"""
from probe.data import PairData
from probe.results import CellResult
from probe.training.config import TrainConfig
from probe.training.evaluation import (
                                       ENCODE_CHUNK,
                                       Evaluator,
                                       batched_bound,
                                       encode,
                                       number_of_eval_batches,
                                       pixel_probe_accuracy,
)
from probe.training.loop import train_pair
from probe.training.noise import BatchSampler, add_view_noise, noisy_numpy
from probe.training.streams import _stream_seed, note_seed, recording_streams, seeded_generator, seeded_init, stream_rng

__all__ = [
    "ENCODE_CHUNK", "BatchSampler", "CellResult", "Evaluator", "PairData", "TrainConfig", "add_view_noise",
    "batched_bound", "encode", "noisy_numpy", "note_seed", "number_of_eval_batches", "pixel_probe_accuracy",
    "recording_streams", "seeded_init", "seeded_generator", "stream_rng", "train_pair", "_stream_seed",
]
