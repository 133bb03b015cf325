"""embedded_warning: the one test that decides whether an output carries the plumbing-model warning."""

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
