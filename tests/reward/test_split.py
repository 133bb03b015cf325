"""Recovering (query, response) from OpenRLHF payloads, with SmolLM2's real chat template."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from cerm.reward.split import ChatTemplateParser, PromptSplitter, SplitError


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return AutoTokenizer.from_pretrained(smollm2_tokenizer)


def rendered(tok, messages) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def openrlhf_query(tok, prompt: str, response: str, left_pad: int = 2) -> str:
    """What OpenRLHF sends as query[i]: left padding + prompt + response + EOS, special tokens kept."""
    return tok.pad_token * left_pad + prompt + response + tok.eos_token


SINGLE = [{"role": "user", "content": "Why is the sky blue?"}]
MULTI = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Name a prime."}]


@pytest.mark.parametrize("with_prompts", [True, False])
def test_single_turn_with_and_without_prompts(tok, with_prompts):
    prompt = rendered(tok, SINGLE)
    assert "You are a helpful AI assistant named SmolLM" in prompt  # the template's default system prompt
    full = openrlhf_query(tok, prompt, "<think>short</think>Rayleigh scattering.")
    s = PromptSplitter(tok).split(full, prompt if with_prompts else None)
    assert s.query == "Why is the sky blue?"
    assert s.response == "Rayleigh scattering."


def test_multi_turn_drops_system_and_keeps_history(tok):
    prompt = rendered(tok, MULTI)
    s = PromptSplitter(tok).split(openrlhf_query(tok, prompt, "7" + tok.eos_token * 3, left_pad=0))
    assert s.query == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
                       {"role": "user", "content": "Name a prime."}]
    assert s.response == "7"


def test_raw_extractor_takes_prompt_text_and_common_stop_strings():
    s = PromptSplitter().split("Q: 2+2?\nA: 4<|im_end|><|endoftext|><|endoftext|>", "Q: 2+2?\nA:")
    assert s.query == "Q: 2+2?\nA:" and s.response == "4"
    kept = PromptSplitter(strip_think=False).split("P<think>x</think>y</s>", "P")
    assert kept.response == "<think>x</think>y"


def test_parser_roundtrip_every_turn_count(tok):
    parser = ChatTemplateParser(tok)
    for n in (1, 3, 5, 7, 9):
        messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}\nline"} for i in range(n)]
        assert parser.parse_prompt(rendered(tok, messages)) == [
            {"role": "system", "content": "You are a helpful AI assistant named SmolLM, trained by Hugging Face"},
            *messages]


def test_errors_are_explicit(tok):
    with pytest.raises(SplitError, match="not contained in query"):
        PromptSplitter(tok).split("completely different text", "the prompt")
    with pytest.raises(SplitError, match="start the server with --tokenizer"):
        PromptSplitter().split("prompt and response")
    with pytest.raises(SplitError, match="does not start with a prompt in the configured chat template"):
        PromptSplitter(tok).split("plain text without any template")
    with pytest.raises(ValueError, match="needs the policy's tokenizer"):
        PromptSplitter(extractor="template")
    with pytest.raises(ValueError, match="extractor 'x'"):
        PromptSplitter(extractor="x")  # type: ignore[arg-type]


def test_tokenizer_without_template_is_refused(tok):
    class NoTemplate:
        chat_template = None

    with pytest.raises(ValueError, match="no chat_template"):
        ChatTemplateParser(NoTemplate())
