"""probe.training.critic_members: critics trained together step as torch.optim.Adam steps each
alone; a member whose estimate turns non-finite is frozen while the others go on; a group
checkpoint resumes to the same numbers; members that share a stream share its draws."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probe.critics import make_critic
from probe.estimators import get_estimator
from probe.training import critic_members, recording_streams, seeded_init, stream_rng
from probe.training.checkpoint import checkpointing
from probe.training.critic_members import CriticMembers, MemberStreams, saved_floats

STEPS, K, D = 12, 16, 3


def _critics(name, seeds, **kwargs):
    out = []
    for seed in seeds:
        with seeded_init(seed):
            out.append(make_critic(name, D, D, **kwargs))
    return out


def _batches(n_members, steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((steps, n_members, K, D)).astype(np.float32)
    y = 0.8 * z + 0.6 * rng.standard_normal(z.shape).astype(np.float32)
    return torch.from_numpy(z), torch.from_numpy(y)


def _alone(critic, estimator, lr, xs, ys, score_dtype=None):
    """The cell alone, as the studies trained it before: torch.optim.Adam on -estimate."""
    fn, optimizer, values = get_estimator(estimator), torch.optim.Adam(critic.parameters(), lr=lr), []
    for x, y in zip(xs, ys):
        scores = critic(x, y)
        value = fn(scores if score_dtype is None else scores.to(score_dtype))
        if not torch.isfinite(value):
            break
        values.append(float(value.detach()))
        optimizer.zero_grad(set_to_none=True)
        (-value).backward()
        optimizer.step()
    return np.asarray(values)


@pytest.mark.parametrize("name, kwargs", [("concat", {"hidden": (8, 8)}), ("separable", {"hidden": (8,), "out": 4}),
                                          ("bilinear", {})])
@pytest.mark.parametrize("score_dtype", [None, torch.float64])
def test_each_member_steps_as_adam_alone(name, kwargs, score_dtype):
    estimators, lrs, seeds = ["infonce", "nwj", "js"], [1e-2, 3e-3, 1e-2], [0, 1, 2]
    xs, ys = _batches(3)
    members = CriticMembers(_critics(name, seeds, **kwargs), estimators, lrs, STEPS, score_dtype=score_dtype)
    for x, y in zip(xs, ys):
        members.step(x, y)
    together = members.estimates()
    assert together.shape == (3, STEPS) and members.stopped_at() == ([-1] * 3, ["ok"] * 3)
    for m, critic in enumerate(_critics(name, seeds, **kwargs)):
        alone = _alone(critic, estimators[m], lrs[m], xs[:, m], ys[:, m], score_dtype)
        np.testing.assert_allclose(together[m], alone, rtol=1e-4, atol=1e-5, err_msg=f"member {m}")


def test_a_non_finite_member_is_frozen_and_the_others_go_on():
    xs, ys = _batches(3)
    xs[5, 1, 0, 0] = math.inf  # member 1's batch at step 5: its estimate is not finite there
    members = CriticMembers(_critics("separable", [0, 1, 2], hidden=(8,), out=4), ["infonce"] * 3, [1e-2] * 3, STEPS)
    for x, y in zip(xs, ys):
        members.step(x, y)
    stopped, statuses = members.stopped_at()
    assert stopped == [-1, 5, -1] and statuses == ["ok", "non-finite estimate at step 5", "ok"]
    values = members.estimates()
    assert np.isfinite(values[1, :5]).all() and np.isnan(values[1, 5:]).all()
    clean = CriticMembers(_critics("separable", [0, 2], hidden=(8,), out=4), ["infonce"] * 2, [1e-2] * 2, STEPS)
    for x, y in zip(xs[:, [0, 2]], ys[:, [0, 2]]):
        clean.step(x, y)
    np.testing.assert_allclose(values[[0, 2]], clean.estimates(), rtol=1e-5, atol=1e-6)
    assert not members.all_frozen(STEPS)


def test_an_overflowing_gradient_is_applied_as_adam_would():
    # Step 0's batch gives a finite estimate whose float32 gradient norm overflows: Adam applies
    # it and the cell goes on (EnsembleTrainer would freeze the member there).
    xs, ys = _batches(1)
    xs[0] *= 1e20
    probe, = _critics("bilinear", [0])
    (-get_estimator("infonce")(probe(xs[0, 0], ys[0, 0]))).backward()
    assert torch.isinf(torch.linalg.vector_norm(probe.weight.grad))
    members = CriticMembers(_critics("bilinear", [0]), ["infonce"], [1e-2], STEPS)
    for x, y in zip(xs, ys):
        members.step(x, y)
    assert members.stopped_at() == ([-1], ["ok"])
    alone = _alone(_critics("bilinear", [0])[0], "infonce", 1e-2, xs[:, 0], ys[:, 0])
    assert alone.size == STEPS
    np.testing.assert_allclose(members.estimates()[0], alone, rtol=1e-5)


def test_members_with_large_activations_go_into_several_models(monkeypatch):
    critics = _critics("concat", [0, 1, 2], hidden=(8,))
    example = torch.zeros(K, D), torch.zeros(K, D)
    monkeypatch.setattr(critic_members, "CPU_SAVED_FLOATS", 2 * saved_floats(critics[0], *example))
    xs, ys = _batches(3)
    xs[5, 2, 0, 0] = math.inf
    split = CriticMembers(critics, ["infonce", "nwj", "infonce"], [1e-2] * 3, STEPS, example=example)
    whole = CriticMembers(_critics("concat", [0, 1, 2], hidden=(8,)), ["infonce", "nwj", "infonce"], [1e-2] * 3, STEPS)
    assert [len(m.alive) for m in split.models] == [2, 1] and len(whole.models) == 1
    for x, y in zip(xs, ys):
        split.step(x, y), whole.step(x, y)
    np.testing.assert_allclose(split.estimates(), whole.estimates(), rtol=1e-5, atol=1e-6)
    assert split.stopped_at() == whole.stopped_at() == ([-1, -1, 5], ["ok", "ok", "non-finite estimate at step 5"])
    torch.testing.assert_close(split.evaluate(xs[0], ys[0]), whole.evaluate(xs[0], ys[0]))
    assert split.last_estimate(1) == pytest.approx(whole.last_estimate(1))


@pytest.mark.parametrize("split", [False, True])
def test_checkpoint_resumes_to_the_same_numbers(split, tmp_path, monkeypatch):
    xs, ys = _batches(2)
    example = torch.zeros(K, D), torch.zeros(K, D)
    if split:  # one member a model
        monkeypatch.setattr(critic_members, "CPU_SAVED_FLOATS", 1)

    def run(stop_at=None):
        members = CriticMembers(_critics("concat", [0, 1], hidden=(8,)), ["infonce", "nwj"], [1e-2] * 2, STEPS,
                                example=example)
        assert len(members.models) == (2 if split else 1)
        streams = [np.random.default_rng(7)]
        first, saved = members.resume("identity", streams, default_every=4)
        records = saved or {"drawn": np.zeros(STEPS)}
        for step in range(first, STEPS):
            records["drawn"][step] = streams[0].standard_normal()
            members.step(xs[step], ys[step])
            if members.due(step + 1, STEPS):
                members.save(step + 1, streams, records)
            if step + 1 == stop_at:
                raise KeyboardInterrupt  # stands in for a kill: nothing after the checkpoint is kept
        return members.estimates(), members.state_dict(), records["drawn"]

    whole = run()
    path = tmp_path / "group.ckpt.pt"
    with pytest.raises(KeyboardInterrupt), checkpointing(path, "run/group"):
        run(stop_at=10)
    assert torch.load(path, weights_only=True)["step"] == 8
    with checkpointing(path, "run/group") as plan:
        resumed = run()
    assert plan.resumed_from == 8
    np.testing.assert_array_equal(resumed[0], whole[0])
    torch.testing.assert_close(resumed[1], whole[1], rtol=0, atol=0)  # parameters and Adam states
    np.testing.assert_array_equal(resumed[2], np.random.default_rng(7).standard_normal(STEPS))


def test_members_of_one_stream_share_its_draws_and_each_records_it():
    streams, recorded = MemberStreams(), [{}, {}, {}]
    for m, (seed, tag) in enumerate([(0, "a"), (1, "a"), (0, "a")]):
        with recording_streams(recorded[m]):
            streams.add(seed, f"batches-{tag}", tag)
    assert streams.of_member == [0, 1, 0] and len(streams.rngs) == 2
    assert recorded[0] == recorded[2] and recorded[0] != recorded[1] and list(recorded[1]) == ["batches-a"]
    drawn = streams.draw(lambda rng, tag: rng.standard_normal(3))
    np.testing.assert_array_equal(drawn[0], stream_rng(0, "batches-a").standard_normal(3))
    np.testing.assert_array_equal(drawn[1], stream_rng(1, "batches-a").standard_normal(3))
    np.testing.assert_array_equal(drawn[2], drawn[0])
