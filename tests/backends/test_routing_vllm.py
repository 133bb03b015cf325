"""Two real vLLM-CPU servers behind the ``openai`` pool (the tiny Qwen3): under prefix-affine routing each
query's requests land on the server rendezvous hashing names for it (counted by the servers' own /metrics),
and the judgments equal the offline vLLM backend's, under either routing. perf/pool_routing.py is the long
version, with the prompt tokens each routing computes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, load_bench_script
from test_vllm import MODEL_CACHE, VLLM_PYTHON, needs_vllm_venv, tiny_qwen3_vllm_dir

from cerm.backends.routing import affinity_key, rendezvous
from cerm.prompts import criteria_messages

BUDGETS = (24, 24)
MAX_LEN = 4096


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@needs_vllm_venv
@pytest.mark.vllm
def test_two_vllm_servers_keep_each_query_on_its_server_and_equal_the_offline_backend(tmp_path: Path) -> None:
    routing = load_bench_script("pool_routing")
    model = tiny_qwen3_vllm_dir()
    rows = routing.workload(5, 3)
    rows_file = tmp_path / "rows.jsonl"
    rows_file.write_text("".join(json.dumps({"query": q, "responses": r}) + "\n" for q, r in rows))
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", CERM_CACHE_DIR=str(MODEL_CACHE))
    offline = subprocess.Popen(  # the in-process engine, started while the servers start
        [VLLM_PYTHON, "-c", sys.modules["vllm_pool"].OFFLINE, str(model), str(rows_file), str(tmp_path / "off.json"),
         str(tmp_path / "off.sqlite"), str(MAX_LEN), *map(str, BUDGETS)], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "offline.log").open("wb"))
    servers = []
    try:
        servers = routing.start_servers(VLLM_PYTHON, model, free_ports(2), tmp_path, MAX_LEN, 600)
        # no spill: every request of a query goes to its own server, so the servers' counts are predictable
        affine = routing.judge_once(servers, rows, "affine", BUDGETS, 16, spill_above=1000)
        spread = routing.judge_once(servers, rows, "least-loaded", BUDGETS, 16)
    finally:
        for s in servers:
            s.kill()
    urls = [f"{s.url}/v1" for s in servers]
    expected = [0, 0]
    for query, responses in rows:
        expected[urls.index(rendezvous(affinity_key(criteria_messages(query)), urls))] += 1 + len(responses)
    assert affine["requests"] == expected and affine["spilled"] == 0
    assert sum(spread["requests"]) == sum(expected) and min(spread["requests"]) > 0
    assert offline.wait(timeout=600) == 0, (tmp_path / "offline.log").read_text()[-3000:]
    reference = json.loads((tmp_path / "off.json").read_text())
    assert affine["results"] == reference and spread["results"] == reference
