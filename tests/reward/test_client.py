"""CermClient against a real ``cerm serve`` app: 5xx is retried (sync and async alike), then raised."""

from __future__ import annotations

import asyncio

import pytest

from cerm import Judge
from cerm.backends.fake import CANNED_CRITERIA, FakeBackend, canned_evaluation
from cerm.reward.client import CermClient, RemoteError
from cerm.reward.server import create_app


@pytest.mark.slow  # starts a uvicorn server
def test_client_retries_a_failed_judge_then_scores(serve_app):
    failures = {"left": 0}

    def script(messages, params):
        if len(messages) == 1:
            return CANNED_CRITERIA
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("judge crashed")
        return canned_evaluation(7)

    with serve_app(create_app(Judge(FakeBackend(script=script)))) as srv:
        client = CermClient(srv.url, retries=2, backoff_s=0.01)
        failures["left"] = 2  # two 502s, then a score: three tries in all
        assert client.score("q", ["a"]).scores == [7.0]
        failures["left"] = 2
        assert asyncio.run(client.ascore("q", ["b"])).scores == [7.0]
        failures["left"] = 3
        with pytest.raises(RemoteError, match="failed after 3 tries: HTTP 502"):
            client.score("q", ["c"])
        client.close()
