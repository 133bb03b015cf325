"""Shared fixtures: offline mode, the embedded SmolLM2, and a tiny random Qwen3 with a real tokenizer.

The builders live in ``support.py`` (importable from any test directory).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings
from redis_server import RedisServer, redis_required
from support import DATA, MODEL_CACHE, smollm2_tokenizer_dir, tiny_qwen3_dir

# Tests and the perf scripts they start (subprocesses inherit the environment) never touch the user's
# ~/.cache/cerm: the default judge cache points at a per-session temporary file, conversions at the test cache.
REAL_CACHE_DIR = Path.home() / ".cache" / "cerm"
_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="cerm-test-cache-"))
os.environ["CERM_CACHE"] = str(_SESSION_CACHE / "cache.sqlite")
os.environ.setdefault("CERM_CACHE_DIR", str(MODEL_CACHE))

# Hypothesis's default 200 ms deadline per example is a timing bound a busy CI machine crosses by chance
# ("Unreliable test timings"); each example takes microseconds, and the parser's linear time has its own tests.
settings.register_profile("cerm", deadline=None)
settings.load_profile("cerm")


def _real_cache_state() -> dict[str, float]:
    if not REAL_CACHE_DIR.is_dir():
        return {}
    return {str(p): p.stat().st_mtime for p in REAL_CACHE_DIR.rglob("*") if p.is_file()}


_REAL_CACHE_BEFORE = _real_cache_state()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if anything wrote to the user's default cache (a `fake:perf` entry once appeared there)."""
    after = _real_cache_state()
    touched = sorted(p for p, mtime in after.items() if _REAL_CACHE_BEFORE.get(p) != mtime)
    if touched:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        print(f"\nerror: the test session wrote to the user's cache {REAL_CACHE_DIR}: {touched[:5]}")


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


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server for the session (skipped without the binary unless CERM_REDIS_REQUIRED=1)."""
    try:
        server = RedisServer()
    except FileNotFoundError as e:
        if redis_required():
            pytest.fail(f"{e}; CERM_REDIS_REQUIRED=1 (scripts/test.sh installs it)")
        pytest.skip(f"{e}; scripts/test.sh installs it")
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    """The session's Redis, emptied for this test."""
    redis_server.flush()
    return redis_server.url
