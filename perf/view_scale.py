"""How `cerm view` scales: a synthetic RMB-sized run (18K items) through load + site generation, and page
load in headless Chromium, side by side with the same site written as one data file (no lazy loading).

Items mimic RMB: 80% pairwise (2 candidates), 20% Best-of-N (1 best + 3 losers); texts of realistic length
(query, responses and judgment texts of about 400, 1200 and 1500 characters; the canned criteria).
Records come from the real ``item_record`` and the summary from the real ``summarize``, so the files are
what a real `cerm bench run` writes. Targets print PASS/FAIL; the exit code is 1 if any fails.

    .venv/bin/python perf/view_scale.py                  # 18K items, with the browser when installed
    .venv/bin/python perf/view_scale.py --items 2000 --no-browser
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from cerm.backends.fake import CANNED_CRITERIA, canned_evaluation
from cerm.bench import BENCHMARKS
from cerm.bench.common import BenchItem
from cerm.bench.records import item_record, outcome_from_record
from cerm.bench.summary import summarize
from cerm.parsing import parse_criteria
from cerm.types import Criteria, Judgment, ParseStatus, ScoredItem
from cerm.view import build_site, load

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,1000")
WORDS = "the of a model answer query response criteria score judge because however which value user".split()


def text(rng: random.Random, chars: int) -> str:
    out, n = [], 0
    while n < chars:
        w = rng.choice(WORDS)
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def synthetic_run(out: Path, n_items: int, seed: int = 0) -> float:
    """Write items.jsonl and summary.json of an RMB-shaped run; returns the seconds it took."""
    started = time.perf_counter()
    rng = random.Random(seed)
    bench = BENCHMARKS["rmb"]
    crit = Criteria(text=CANNED_CRITERIA, items=parse_criteria(CANNED_CRITERIA).items, key="k" * 64,
                    tokens_in=300, tokens_out=60, seconds=1.0)
    records = []
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "items.jsonl", "w", encoding="utf-8") as f:
        for i in range(n_items):
            bon = i % 5 == 4
            goal = rng.choice(["Helpfulness", "Harmlessness"])
            n_cand = 4 if bon else 2
            roles = ("bon_best", *(f"loser[{k}]" for k in range(3))) if bon else ("chosen", "reject")
            item = BenchItem(id=f"{'bon' if bon else 'pair'}:{i}", benchmark="rmb",
                             subset=f"{'BoN_set' if bon else 'Pairwise_set'}/{goal}/S{i % 11}",
                             prompt=text(rng, 400), candidates=tuple(text(rng, 1200) for _ in range(n_cand)),
                             correct=(0,), roles=roles, mode="bon" if bon else "pairwise")
            judgments = []
            for _ in range(n_cand):
                if rng.random() < 0.03:
                    judgments.append(Judgment(None, ParseStatus.NO_BOX, text=text(rng, 1500)))
                    continue
                s = rng.randrange(21) / 2
                judgments.append(Judgment(s, ParseStatus.OK, (4, 3, 5), text=text(rng, 1400) + canned_evaluation(s),
                                          criteria_key=crit.key, tokens_in=900, tokens_out=400, seconds=2.0))
            rec = item_record(item, ScoredItem((crit,), tuple(judgments)))
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            records.append(rec)
    summary = summarize(bench, [outcome_from_record(r) for r in records], records, n_resamples=0)
    summary["scorer"] = {"kind": "synthetic", "name": "synthetic scores (perf/view_scale.py)"}
    (out / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return time.perf_counter() - started


def page_timings(site: Path, item_n: int) -> dict[str, float]:
    """Seconds until the item list is drawn, and until item ``item_n`` is drawn after a click on its link."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        t0 = time.perf_counter()
        d.get(site.joinpath("index.html").as_uri() + "#items")
        WebDriverWait(d, 120, poll_frequency=0.01).until(
            lambda _: d.find_elements(By.CSS_SELECTOR, "#item-list tbody tr"))
        t_list = time.perf_counter() - t0
        t0 = time.perf_counter()
        d.execute_script(f"location.hash = '#item/{item_n}'")
        WebDriverWait(d, 120, poll_frequency=0.01).until(
            lambda _: d.find_elements(By.CSS_SELECTOR, "#view-item .card"))
        t_item = time.perf_counter() - t0
        return {"list_s": t_list, "item_s": t_item}
    finally:
        d.quit()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=18000)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--reuse", action="store_true", help="keep OUT/run from an earlier call (with --out)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        run = work / "run"
        fig: dict[str, float] = {"items": args.items}
        if args.reuse and (run / "summary.json").exists():
            fig["write_run_s"] = 0.0
            fig["items"] = len((run / "items.jsonl").read_bytes().splitlines())
        else:
            fig["write_run_s"] = synthetic_run(run, args.items)
        fig["items_jsonl_mb"] = (run / "items.jsonl").stat().st_size / 1e6
        t0, c0 = time.perf_counter(), time.process_time()
        view = load(run)
        fig["load_s"] = time.perf_counter() - t0
        lazy = build_site(view, work / "site")
        fig["cpu_s"] = time.process_time() - c0  # load + site: CPU seconds (wall time varies on a busy box)
        build_site(view, work / "site-one-file", chunk_size=max(1, len(view.items)))
        fig.update(build_s=lazy.seconds, index_mb=lazy.bytes_index / 1e6, site_mb=lazy.bytes_total / 1e6,
                   chunks=lazy.n_chunks, largest_chunk_mb=max(p.stat().st_size for p in (work / "site" / "data" / "a")
                                                              .glob("*.js")) / 1e6)
        print(f"{fig['items']} items: run written in {fig['write_run_s']:.1f} s (items.jsonl "
              f"{fig['items_jsonl_mb']:.0f} MB); cerm view: load {fig['load_s']:.1f} s + site {fig['build_s']:.1f} s "
              f"(CPU {fig['cpu_s']:.1f} s); "
              f"index.js {fig['index_mb']:.1f} MB, {lazy.n_chunks} chunks (largest {fig['largest_chunk_mb']:.2f} MB)")
        targets = [("load + site generation < 60 CPU seconds", fig["cpu_s"] < 60)]
        if not args.no_browser and Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
            last = len(view.items) - 1
            t_lazy = page_timings(work / "site", last)
            fig.update({f"lazy_{k}": v for k, v in t_lazy.items()})
            print(f"browser, chunked site:  list drawn in {t_lazy['list_s']:.2f} s, last item opened in "
                  f"{t_lazy['item_s']:.3f} s")
            from selenium.common.exceptions import WebDriverException

            try:
                t_one = page_timings(work / "site-one-file", last)
            except WebDriverException as e:  # a 160 MB script can crash the tab: that is the finding
                print(f"browser, one data file: failed ({str(e).splitlines()[0]})")
            else:
                fig.update({f"one_file_{k}": v for k, v in t_one.items()})
                print(f"browser, one data file: list drawn in {t_one['list_s']:.2f} s, last item opened in "
                      f"{t_one['item_s']:.3f} s  (item open: chunked / one file = "
                      f"{t_lazy['item_s'] / t_one['item_s']:.2f}x)")
            targets += [("item list drawn < 3 s", t_lazy["list_s"] < 3), ("an item opens < 1 s", t_lazy["item_s"] < 1)]
        elif not args.no_browser:
            print("browser figures skipped: needs /usr/bin/chromium and /usr/bin/chromedriver")
        for name, ok in targets:
            print(f"{'PASS' if ok else 'FAIL'}  {name}")
        if args.json:
            args.json.write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")
        return 0 if all(ok for _, ok in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
