"""Shared fixtures: offline mode, the embedded SmolLM2, and a tiny random Qwen3 with a real tokenizer.

The builders live in ``support.py`` (importable from any test directory).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import DATA, smollm2_tokenizer_dir, tiny_qwen3_dir


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    return tiny_qwen3_dir()


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Path:
    return smollm2_tokenizer_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA
