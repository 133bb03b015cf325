r"""A verl dataset that sends each prompt to a ``cerm serve`` replica as verl loads it: criteria ahead of rollouts.

verl (0.9) gives a custom reward function no hook before the rollouts, but it loads each step's prompts
through its dataset class, and ``data.custom_cls`` replaces that class. ``CriteriaPrefetchDataset`` is verl's
own ``RLHFDataset`` that also posts every prompt it hands out to the judge's ``POST /v1/criteria``; the
DataLoader loads a step's batch before the rollouts are generated, so the judge writes the criteria while
the policy generates and the reward's critical path is the evaluations. Enable it with::

    data.custom_cls.path=pkg://cerm.reward.verl_data data.custom_cls.name=CriteriaPrefetchDataset \\
    +data.cerm_url=http://judge:8000        # or $CERM_URL; +data.cerm_token / $CERM_SERVER_TOKEN

It needs a judge server (the reward's ``cerm_url`` mode): verl loads data in the driver, the reward runs in
other workers, and the server is what they share. Posts are batched on a background thread and never block
data loading; a failed post is logged once and ignored (the reward then generates the criteria itself).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from typing import Any

from verl.utils.dataset.rl_dataset import RLHFDataset

logger = logging.getLogger(__name__)

# prompts per POST, and how long the sender waits for more before posting what it has
BATCH = 64
FLUSH_S = 0.05


class CriteriaPrefetchDataset(RLHFDataset):
    """verl's ``RLHFDataset``; each row's ``extra_info[data.cerm_query_key]`` (default "question", the key
    the cerm reward reads) is sent ahead to the judge as the row is loaded.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        url = self.config.get("cerm_url") or os.environ.get("CERM_URL")
        if not url:
            raise ValueError("CriteriaPrefetchDataset needs the judge server: +data.cerm_url=http://HOST:PORT "
                             "(or $CERM_URL), the same server as reward_kwargs.cerm_url.")
        self.cerm_url = str(url)
        self.cerm_token = self.config.get("cerm_token") or os.environ.get("CERM_SERVER_TOKEN")
        self.cerm_query_key = self.config.get("cerm_query_key", "question")
        self._sender: _Sender | None = None

    def __getitem__(self, item: Any) -> dict:
        row = super().__getitem__(item)
        query = (row.get("extra_info") or {}).get(self.cerm_query_key)
        if query is not None:
            self._send(query)
        return row

    def _send(self, query: Any) -> None:
        # one sender per process: DataLoader workers are forked copies, and a fork copies no thread
        if self._sender is None or self._sender.pid != os.getpid():
            self._sender = _Sender(self.cerm_url, self.cerm_token)
        self._sender.put(_as_query(query))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_sender"] = None  # DataLoader workers under spawn pickle the dataset
        return state


def _as_query(query: Any) -> Any:
    """A prompt as the reward sends it: text, or the messages without system turns (parquet gives arrays)."""
    if isinstance(query, str):
        return query
    messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in query if m["role"] != "system"]
    return messages[0]["content"] if len(messages) == 1 else messages


class _Sender:
    """A daemon thread that posts queued prompts to ``/v1/criteria`` in batches."""

    def __init__(self, url: str, token: str | None) -> None:
        from cerm.reward.client import CermClient

        self.pid = os.getpid()
        self.client = CermClient(url, token=token, timeout_s=30.0, retries=2)
        self.queue: queue.Queue = queue.Queue()
        self.sent = 0
        self._warned = False
        threading.Thread(target=self._run, name="cerm-prefetch", daemon=True).start()

    def put(self, query: Any) -> None:
        self.queue.put(query)

    def _run(self) -> None:
        while True:
            batch = [self.queue.get()]
            try:
                while len(batch) < BATCH:
                    batch.append(self.queue.get(timeout=FLUSH_S))
            except queue.Empty:
                pass
            try:
                self.client.prefetch(batch)
                self.sent += len(batch)
            except Exception as e:  # noqa: BLE001 - an optimisation only: the reward generates them itself
                if not self._warned:
                    logger.warning("cerm: criteria prefetch to %s failed (%s: %s); the reward generates them "
                                   "itself", self.client.url, type(e).__name__, e)
                    self._warned = True
