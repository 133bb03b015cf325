"""Fixtures for the bench tests (helpers live in helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cerm import Judge

from .helpers import FIXTURES, make_judge


@pytest.fixture
def judge() -> Judge:
    return make_judge()


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
