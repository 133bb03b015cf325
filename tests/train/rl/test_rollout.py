"""Two-stage rollouts on token ids (docs/training.md §3.1, §3.5) with the real SmolLM2 chat template."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from cerm.prompts import evaluation_messages
from cerm.train.pairs import PreferencePair
from cerm.train.rl.engine_hf import cut_at_stop
from cerm.train.rl.logprobs import left_pad
from cerm.train.rl.rollout import ChatLayout, Completion, rollout_pairs
from cerm.types import ParseStatus, SamplingParams

pytest.importorskip("transformers")

CRIT = "[Start of Criteria]\n1. Correctness: right.\n[End of Criteria]"


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_tokenizer)


@pytest.fixture(scope="module")
def layout(tok):
    return ChatLayout(tok, {tok.convert_tokens_to_ids("<|im_end|>")})


class ScriptedEngine:
    """Answers criteria prompts with CRIT and judgment prompts with scripted texts, recording each call."""

    def __init__(self, tok, judgments: Sequence[str], truncate_every: int = 0):
        self.tok, self.judgments, self.calls = tok, list(judgments), []
        self.end = tok.convert_tokens_to_ids("<|im_end|>")
        self.truncate_every = truncate_every

    def sync_weights(self) -> None: ...

    def generate(self, prompt_ids, params: SamplingParams) -> list[Completion]:
        self.calls.append((list(map(tuple, prompt_ids)), params))
        if len(self.calls) == 1:
            ids = self.tok(CRIT, add_special_tokens=False)["input_ids"] + [self.end]
            return [Completion(tuple(ids), "stop") for _ in prompt_ids]
        out = []
        for i in range(len(prompt_ids)):
            text = self.judgments[i % len(self.judgments)]
            ids = self.tok(text, add_special_tokens=False)["input_ids"]
            if self.truncate_every and i % self.truncate_every == self.truncate_every - 1:
                out.append(Completion(tuple(ids), "length"))
            else:
                out.append(Completion(tuple(ids + [self.end]), "stop"))
        return out


def pairs(n: int) -> list[PreferencePair]:
    return [PreferencePair(f"p{i}", f"What is {i} + {i}?", str(2 * i), str(2 * i + 1)) for i in range(n)]


def test_judgment_prompt_holds_the_sampled_criteria_ids_verbatim(layout, tok):
    q = "What is 2 + 2?"
    crit_prompt = layout.criteria_prompt_ids(q)
    # a non-canonical tokenisation (one token per character) must survive untouched: never re-tokenised
    crit_ids = [i for ch in "Be right." for i in tok(ch, add_special_tokens=False)["input_ids"]]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    ids, (start, stop) = layout.judgment_prompt_ids(q, crit_prompt, [*crit_ids, end], "4")
    assert ids[:len(crit_prompt)] == crit_prompt
    assert ids[start:stop] == crit_ids  # the stop token is replaced by the template's own turn end
    rendered = tok.apply_chat_template(evaluation_messages(q, "Be right.", "4"), add_generation_prompt=True,
                                       tokenize=False)
    assert tok.decode(ids) == rendered


def test_twenty_trajectories_per_pair_in_two_engine_calls(layout, tok):
    engine = ScriptedEngine(tok, ["Overall: \\boxed{7}", "\\boxed{3}", "no score here"])
    crit_p, eval_p = SamplingParams(1.0, 1.0, 32), SamplingParams(1.0, 1.0, 16)
    rollouts = rollout_pairs(pairs(3), engine, layout, 4, 2, crit_p, eval_p)
    assert len(engine.calls) == 2 and engine.calls[0][1] is crit_p and engine.calls[1][1] is eval_p
    assert len(engine.calls[0][0]) == 3 * 4 and len(engine.calls[1][0]) == 3 * 16
    for i, r in enumerate(rollouts):
        assert len(r.trajectories()) == 20
        assert (len(r.criteria), len(r.chosen), len(r.rejected)) == (4, 8, 8)
        assert [t.criteria_index for t in r.chosen] == [0, 0, 1, 1, 2, 2, 3, 3]
        assert all(t.pair_index == i for t in r.trajectories())
        for t in (*r.chosen, *r.rejected):
            crit = r.criteria[t.criteria_index]
            start, stop = t.criteria_span
            assert t.prompt_ids[:start] == crit.prompt_ids  # same criteria prompt
            assert t.prompt_ids[start:stop] == crit.completion_ids[:-1]  # the sampled criteria, as context
            assert crit.completion_ids[-1] == engine.end
    # the 2J judgments of one criteria sample are adjacent, so a prefix cache reuses criteria prompt + criteria
    second = engine.calls[1][0]
    assert second[0][:40] == second[3][:40]
    scores = [t.score for t in rollouts[0].chosen]
    statuses = {t.status for r in rollouts for t in (*r.chosen, *r.rejected)}
    assert 7.0 in scores and 3.0 in scores and ParseStatus.NO_BOX in statuses


def test_truncated_judgment_has_no_score(layout, tok):
    engine = ScriptedEngine(tok, ["\\boxed{7}"], truncate_every=2)
    r = rollout_pairs(pairs(1), engine, layout, 1, 2, SamplingParams(1.0), SamplingParams(1.0))[0]
    assert [t.score for t in r.chosen] == [7.0, None]
    assert r.chosen[1].status == ParseStatus.TRUNCATED and r.chosen[1].finish_reason == "length"


def test_cut_at_stop_and_left_pad():
    assert cut_at_stop([5, 6, 2, 9, 9], frozenset({2}), 8) == Completion((5, 6, 2), "stop")
    assert cut_at_stop([5, 6, 7], frozenset({2}), 3) == Completion((5, 6, 7), "length")
    assert cut_at_stop([5, 6], frozenset({2}), 3).finish_reason == "stop"
    # log-probs are cut with their tokens (the padding after a stop goes too) and must be one per token
    assert cut_at_stop([5, 2, 0, 0], frozenset({2}), 4, [-1.0, -2.0, -9.0, -9.0]).logprobs == (-1.0, -2.0)
    assert cut_at_stop([5, 6, 7, 8], frozenset({2}), 3, [-1.0, -2.0, -3.0, -4.0]).logprobs == (-1.0, -2.0, -3.0)
    with pytest.raises(ValueError, match="3 log-probs for 4 tokens"):
        cut_at_stop([5, 6, 7, 8], frozenset({2}), 4, [-1.0, -2.0, -3.0])
    with pytest.raises(ValueError, match="one per sampled token"):
        Completion((5, 6), "stop", (-1.0,))
    ids, mask = left_pad([[1, 2, 3], [4]], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_vllm_engine_maps_sampling_params_and_cuts_at_stop(monkeypatch):
    """The vLLM path cannot run here; its mapping onto TRL's VLLMGeneration is checked with a stand-in."""
    pytest.importorskip("trl")
    from cerm.train.rl.engine_vllm import VLLMEngine

    class StandIn:
        def __init__(self):
            self.calls, self.synced = [], 0
            self.mode, self.enable_sleep_mode = "server", False  # TRL's own sync (colocate reloads in vLLM)

        def sync_weights(self):
            self.synced += 1

        def generate(self, prompts, images, num_generations):
            self.calls.append((prompts, self.temperature, self.top_p, self.top_k, self.min_p,
                               self.max_completion_length, num_generations, self.logprobs))
            ids = [[5, 9, 2, 7], [5, 5, 5]]
            if self.logprobs is None:
                return prompts, ids, None, None
            # TRL's layout with logprobs=0: per token one [value] and one [token id]; NaN comes back as None
            values = [[[-0.5], [-1.5], [-0.1], [-3.0]], [[-0.2], [None], [-0.3]]]
            return prompts, ids, values, [[[t] for t in row] for row in ids]

    engine = object.__new__(VLLMEngine)  # skip __init__: it needs vLLM on a GPU host
    engine.stop_ids, engine.generation, engine.logprobs = frozenset({2}), StandIn(), False
    out = engine.generate([(1, 2), (3,)], SamplingParams(0.7, 0.9, 3))
    assert out == [Completion((5, 9, 2), "stop"), Completion((5, 5, 5), "length")]
    assert engine.generation.calls == [([[1, 2], [3]], 0.7, 0.9, 0, 0.0, 3, 1, None)]
    engine.logprobs = True
    engine.generate([(1, 2), (3,)], SamplingParams(0.7, 0.9, 3))
    assert engine.generation.calls[-1][-1] is None  # under top-p vLLM's log-probs are not the loss's
    out = engine.generate([(1, 2), (3,)], SamplingParams(0.7, 1.0, 3))
    assert engine.generation.calls[-1][-1] == 0  # the sampled token's log-prob only
    assert out == [Completion((5, 9, 2), "stop", (-0.5, -1.5, -0.1)), Completion((5, 5, 5), "length")]
    engine.sync_weights()
    assert engine.generation.synced == 1
    import importlib

    monkeypatch.setattr(importlib.import_module("trl.import_utils"), "is_vllm_available", lambda: False)
    with pytest.raises(ImportError, match="vLLM"):
        VLLMEngine(None, None, None, {2}, mode="colocate", server_base_url=None, tensor_parallel_size=1,
                   gpu_memory_utilization=0.3, max_model_length=None, enable_sleep_mode=False)


def test_vllm_server_without_processed_logprobs_is_refused():
    pytest.importorskip("trl")
    from accelerate import PartialState

    from cerm.train.rl.engine_vllm import check_server_logprobs_mode

    class Client:
        def __init__(self, mode):
            self.mode = mode

        def get_server_info(self):
            return {"model_config": {"logprobs_mode": self.mode}}

    class Gen:
        def __init__(self, mode):
            self.vllm_client = Client(mode)

    state = PartialState(cpu=True)
    check_server_logprobs_mode(Gen("processed_logprobs"), state)
    with pytest.raises(ValueError, match="--logprobs-mode raw_logprobs.*old_logprobs=recompute"):
        check_server_logprobs_mode(Gen("raw_logprobs"), state)
