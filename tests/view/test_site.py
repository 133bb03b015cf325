"""`cerm view` end to end on real runs of the fake backend: a JudgeBench run, an RM-Bench run (3x3
candidates), an RMB Best-of-N run, a probe folder, `score -o` and `bon -o` files, a compare of two runs;
the written site's data files, its escaping, and `--serve`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cerm.cli import app
from cerm.view import build_site, load

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bench"
runner = CliRunner()


def cli(*args: str) -> str:
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


def js_payloads(path: Path, call: str) -> list:
    """The JSON arguments of ``CERM.<call>(...)`` in a data file (what the page executes)."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith(f"CERM.{call}(") and text.rstrip().endswith(");")
    body, out, dec, at = text[len(call) + 6:].rstrip()[:-2], [], json.JSONDecoder(), 0
    while at < len(body):
        value, at = dec.raw_decode(body, at)
        out.append(value)
        at += body[at:at + 1] == ","
    return out


def site_items(site: Path) -> tuple[dict, list[dict], list[dict], dict | None]:
    meta, index, comparison = js_payloads(site / "data" / "index.js", "init")
    items = []
    for chunk in sorted((site / "data" / "a").glob("items-*.js")):
        run, k, chunk_items = js_payloads(chunk, "chunk")
        assert run == "a" and chunk.name == f"items-{k:05d}.js"
        items += chunk_items
    return meta, index, items, comparison


def bench_run(tmp_path: Path, benchmark: str, *extra: str) -> Path:
    out = tmp_path / benchmark
    cli("bench", "run", "-b", benchmark, "--data-root", FIXTURES, "--backend", "fake", "--model", "fake",
        "--out", out, "--bootstrap", "20", *extra)
    return out


@pytest.mark.parametrize("benchmark, n_candidates", [("judgebench", {2}), ("rm-bench", {6}), ("rmb", None)])
def test_view_of_a_bench_run(tmp_path, benchmark, n_candidates):
    extra = ("--subset", "BoN_set") if benchmark == "rmb" else ()
    run = bench_run(tmp_path, benchmark, *extra)
    out = cli("view", run)
    site = run / "view"
    assert f"-> {site / 'index.html'}" in " ".join(out.split())
    meta, index, items, comparison = site_items(site)
    records = [json.loads(x) for x in (run / "items.jsonl").read_text().splitlines()]
    summary = json.loads((run / "summary.json").read_text())
    assert [r["id"] for r in index] == [i["id"] for i in items] == summary["item_ids"]
    assert meta["n_items"] == len(records) and comparison is None
    if n_candidates:
        assert {len(i["candidates"]) for i in items} == n_candidates
    else:  # RMB Best-of-N: one best answer against several others
        assert all(len(i["correct"]) == 1 and len(i["candidates"]) >= 2 for i in items)
    for it in items:  # what the item page needs is all there
        assert it["query"] and it["criteria"][0]["text"] and it["criteria"][0]["items"]
        assert all(c["response"] is not None and c["spans"] for c in it["candidates"] if c["status"] == "ok")
    html = (site / "index.html").read_text()
    assert summary["headline"]["key"] in html and (site / "plots" / "scores.png").exists()
    assert "Scripted fake backend" in html and "the official metrics are above" in html
    assert {Path(p).name for p in re.findall(r'src="(plots/[^"]+)"', html)} == {
        p.name for p in (run / "plots").glob("*.png")}


def test_view_of_score_and_bon_files(tmp_path):
    rows = tmp_path / "in.jsonl"
    rows.write_text(json.dumps({"id": "q1", "query": "Name a prime.", "responses": ["2", "4", "9"]}) + "\n"
                    + json.dumps({"id": "q2", "query": "Say hi </script><b>", "responses": ["hi", "hello"]}) + "\n")
    for cmd in ("score", "bon"):
        out = tmp_path / f"{cmd}.jsonl"
        cli(cmd, "--backend", "fake", "--model", "fake", "--cache", tmp_path / "c.sqlite", "-i", rows, "-o", out)
        cli("view", out)
        meta, index, items, _ = site_items(tmp_path / f"{cmd}.view")
        assert meta["kind"] == cmd and [i["id"] for i in items] == ["q1", "q2"]
        assert [c["response"] for c in items[0]["candidates"]] == ["2", "4", "9"]
        assert items[1]["query"] == "Say hi </script><b>"
        if cmd == "bon":
            assert {i["verdict"] for i in items} <= {"chosen", "tie"}
        html = (tmp_path / f"{cmd}.view" / "index.html").read_text()
        assert "Scripted fake backend" in html  # the fake backend's canned texts are labelled on the page
        assert "official metrics are above" not in html and "no metric" in html  # a score file has none
    # the raw "</script>" never reaches the page source: it is escaped in the data file
    assert "</script><b>" not in (tmp_path / "bon.view" / "data" / "a" / "items-00000.js").read_text()
    assert "</script><b>" not in (tmp_path / "bon.view" / "data" / "index.js").read_text()


def test_view_of_a_probe_folder(tmp_path):
    out = tmp_path / "probes"
    cli("probe", "--backend", "fake", "--model", "fake", "--data-root", FIXTURES, "--limit", "4",
        "--probe", "length", "--probe", "self-praise", "--out", out, "--bootstrap", "20")
    cli("view", out)
    meta, index, items, _ = site_items(out / "view")
    assert meta["kind"] == "probe" and set(meta["subsets"]) == {"length", "self-praise"}
    pair = items[0]
    assert [c["role"] for c in pair["candidates"]] == ["original", "variant"]
    assert pair["candidates"][1]["response"].startswith(pair["candidates"][0]["response"])
    assert pair["criteria"][0]["items"] and pair["candidates"][0]["evaluation"]
    assert "length" in (out / "view" / "index.html").read_text()


def test_compare_lists_the_items_whose_verdict_changed(tmp_path):
    a = bench_run(tmp_path, "judgebench")
    b = tmp_path / "length"
    cli("bench", "run", "-b", "judgebench", "--data-root", FIXTURES, "--scorer", "length", "--out", b,
        "--bootstrap", "0")
    cli("view", a, "--compare", b, "-o", tmp_path / "site")
    meta, index, items, comparison = site_items(tmp_path / "site")
    verdict_b = {i["id"]: i["verdict"] for i in load(b).items}
    changed = [i["id"] for i in items if i["verdict"] != verdict_b[i["id"]]]
    assert changed and [r["id"] for r in comparison["rows"]] == changed
    assert comparison["shared"] == len(items) and (tmp_path / "site" / "data" / "b" / "items-00000.js").exists()
    r = runner.invoke(app, ["view", str(a), "--compare", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and "no such file or folder" in " ".join(r.output.split())


def test_view_errors_name_the_path(tmp_path):
    r = runner.invoke(app, ["view", str(tmp_path)])
    assert r.exit_code == 2 and "no items.jsonl" in " ".join(r.output.split())
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"id": 1, "judgments": []}\n{"id": 2}\n')
    r = runner.invoke(app, ["view", str(bad)])
    assert r.exit_code == 2 and "s.jsonl:2: field 'judgments': missing" in " ".join(r.output.split())


def test_rebuild_drops_stale_chunks(tmp_path):
    run = bench_run(tmp_path, "judgebench")
    view = load(run)
    build_site(view, tmp_path / "site", chunk_size=1)
    assert len(list((tmp_path / "site" / "data" / "a").glob("*.js"))) == len(view.items)
    stats = build_site(view, tmp_path / "site", chunk_size=100)
    assert stats.n_chunks == 1 and len(list((tmp_path / "site" / "data" / "a").glob("*.js"))) == 1


@pytest.mark.slow
def test_serve_prints_the_url_and_serves_the_site(tmp_path):
    run = bench_run(tmp_path, "judgebench")
    proc = subprocess.Popen([sys.executable, "-c", "from cerm.cli import main; main()", "view", str(run), "--serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = None
        deadline = time.time() + 60
        while url is None and time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"serving (http://127\.0\.0\.1:\d+/)", line)
            url = m.group(1) if m else None
        assert url, "no URL printed"
        assert "CERM.init(" in httpx.get(url + "data/index.js").text
        page = httpx.get(url)
        assert page.status_code == 200 and "assets/view.js" in page.text
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_older_run_without_texts_and_an_unfinished_run_still_open(tmp_path):
    run = bench_run(tmp_path, "judgebench")
    lines = [json.loads(x) for x in (run / "items.jsonl").read_text().splitlines()]
    for rec in lines:  # what a run written before the texts were kept looks like
        rec.pop("prompt")
        for c in rec["criteria"]:
            c.pop("text"), c.pop("items")
        for c in rec["candidates"]:
            c.pop("response"), c.pop("text")
    (run / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    view = load(run)
    assert any("predates judgment texts" in n for n in view.notes)
    build_site(view, tmp_path / "old")
    _, index, items, _ = site_items(tmp_path / "old")
    assert len(items) == len(lines) and all(i["query"] is None for i in items)
    (run / "summary.json").unlink()  # a run still going: items so far, no metrics
    build_site(load(run), tmp_path / "unfinished")
    html = (tmp_path / "unfinished" / "index.html").read_text()
    assert "summary.json is missing" in html and 'id="headline-value"' not in html
