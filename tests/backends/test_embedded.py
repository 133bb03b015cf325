"""embedded_warning (the one test that decides whether an output carries the plumbing-model warning); the
hf backend's load of the embedded model from its fp32 conversion."""

from __future__ import annotations

import pytest

from cerm.backends.embedded import EMBEDDED_ID, EMBEDDED_WARNING, embedded_warning


@pytest.mark.parametrize("model", [
    "embedded",  # the --model value
    EMBEDDED_ID,  # hf backend's model_id
    f"{EMBEDDED_ID} bf16",  # vllm backend's model_id
    "llamacpp:/x/SmolLM2-135M-Instruct.Q4_1.gguf:98362432",  # llamacpp's model_id
])
def test_every_spelling_of_the_embedded_model_warns(model):
    assert embedded_warning(model) == EMBEDDED_WARNING


@pytest.mark.parametrize("model", [None, "", "PKU-ONELab/CE-RM-4B", "fake:judge", "my-embedded-model"])
def test_other_models_do_not(model):
    assert embedded_warning(model) is None


@pytest.mark.slow
def test_hf_loads_the_gguf_weights_from_their_fp32_conversion():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cerm.backends.embedded import embedded_gguf
    from cerm.backends.hf import HFBackend

    backend = HFBackend("embedded")  # converts once into $CERM_CACHE_DIR/embedded-hf-float32
    gguf = embedded_gguf()
    direct = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).state_dict()
    loaded = backend.model.state_dict()
    assert backend.model.dtype == torch.float32 and sorted(direct) == sorted(loaded)
    assert all(torch.equal(direct[k], loaded[k]) for k in direct)  # bit for bit: the same model id
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    messages = [{"role": "user", "content": "Rate it: $\\boxed{7.5}$ ünïcode"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert backend.render(messages) == text and backend.encode(messages) == tokenizer(text)["input_ids"]
