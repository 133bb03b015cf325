"""World-size invariance of an RL step's data and rollouts: rank shards and per-prompt seeds (fast)."""

from __future__ import annotations

import pytest

from cerm.train.pairs import PreferencePair
from cerm.train.rl.data import PairStream
from cerm.train.rl.engine_hf import prompt_seeds


def stream(n: int = 10) -> PairStream:
    return PairStream([PreferencePair(f"p{i}", f"q{i}", "a", "b") for i in range(n)], seed=3)


@pytest.mark.parametrize("world", [1, 2, 4])
def test_every_update_holds_the_same_pairs_at_any_world_size(world: int) -> None:
    s, updates, per_step = stream(20), 2, 8
    per_update = per_step // updates // world
    shards = [s.take_shard(5, updates, per_update, rank, world) for rank in range(world)]
    one = s.take(5, per_step)
    for u in range(updates):
        # update u of every rank together = update u of a single process; no pair appears twice in a step
        together = [p.id for shard in shards for p in shard[u * per_update:(u + 1) * per_update]]
        assert sorted(together) == sorted(p.id for p in one[u * per_step // updates:(u + 1) * per_step // updates])
    ids = [p.id for shard in shards for p in shard]
    assert len(ids) == len(set(ids)) == per_step


def test_prompt_seeds_follow_the_copy_not_the_position() -> None:
    a, b = [1, 2, 3], [4, 5]
    seeds = prompt_seeds(7, [a, a, b, a])
    assert len(set(seeds)) == 4  # the copies of a prompt sample differently
    # the same copy of a prompt gets the same seed in another batch or process
    assert prompt_seeds(7, [b, a, a])[1:] == seeds[:2] and prompt_seeds(7, [b])[0] == seeds[2]
    assert prompt_seeds(8, [a])[0] != seeds[0]  # and a new step seed gives new samples


def test_seeded_hf_rollouts_do_not_depend_on_the_batch(tiny_model_dir) -> None:
    torch = pytest.importorskip("torch")
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from cerm.train.rl.engine_hf import HFEngine
    from cerm.types import SamplingParams

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    engine = HFEngine(model, Accelerator(cpu=True), stop_ids=[0], pad_id=0, batch_size=8)
    a, b = [11, 12, 13, 14], [21, 22]
    params = SamplingParams(1.0, 1.0, 6, seed=5)
    together = engine.generate([a, a, b], params)
    assert engine.generate([b], params)[0] == together[2]
    assert engine.generate([a, a], params) == together[:2]
    assert together[0] != together[1]  # two copies, two samples
    state = torch.random.get_rng_state()
    engine.generate([a], params)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
