"""How parse time grows with the size of a degenerate judgment: the parser must stay linear.

RL rollouts produce degenerate judgments (a box opened and never closed, the same line repeated until the
token limit). The parser once rescanned to the end of the text for every unclosed ``\\boxed{``: 64 KB took
140 s and blocked the reward server's batching thread. This script builds the worst inputs we could
construct, doubles their size up to ``--max-kb``, and prints the time of ``parse_judgment`` and the
ratio t(2n)/t(n) per doubling (about 2 is linear, about 4 quadratic), and per case the growth exponent
between a quarter of the largest size and the largest (log t ratio / log size ratio: 1 linear, 2 quadratic). The old rescanning ``find_boxes``
is timed beside it on the small sizes only (it is quadratic), so the two are measured in one run.

Target: every case slower than 50 ms keeps its exponent below 1.5, and 1 MB of unclosed boxes parses in
under 0.1 s times ``--slack`` (the machine is shared; the default slack of 5 allows for that). The exit
code is 1 if a target fails.

    .venv/bin/python perf/parser_speed.py                 # up to 1 MB
    .venv/bin/python perf/parser_speed.py --max-kb 4096
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable

from cerm.parsing import parse_criteria, parse_judgment

BOX = "\\boxed{"
CASES: dict[str, Callable[[int], str]] = {
    # the reported case: nothing but unclosed boxes
    "unclosed boxes": lambda n: BOX * (n // len(BOX)),
    "unclosed box then text": lambda n: BOX + "x" * n,
    "unclosed box then open braces": lambda n: BOX + "{" * n,
    "unclosed box then {} pairs": lambda n: BOX + "{}" * (n // 2),
    "unclosed boxes with nested braces": lambda n: (BOX + "{7}") * (n // 10),
    "repeated verdict line": lambda n: "Overall \\boxed{7}. " * (n // 19),
    "empty closed boxes": lambda n: "\\boxed{}" * (n // 8),
    "long box content": lambda n: BOX + " " * n + "}",
    "stray closers": lambda n: BOX + "}" * n,
    "criteria item of blanks": lambda n: "[Start of Criteria]\n- " + " " * n + "x\n[End of Criteria]",
}


def old_find_boxes(text: str) -> list[tuple[int, str | None]]:
    """The quadratic scanner this benchmark replaced, kept here for the side-by-side figure only."""
    boxes: list[tuple[int, str | None]] = []
    pos = text.find(BOX)
    while pos != -1:
        depth, i = 1, pos + len(BOX)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        boxes.append((pos, text[pos + len(BOX) : i - 1] if depth == 0 else None))
        pos = text.find(BOX, i if depth == 0 else pos + len(BOX))
    return boxes


def best_of(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def parse(text: str) -> None:
    if text.startswith("[Start of Criteria]"):
        parse_criteria(text)
    else:
        parse_judgment(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-kb", type=int, default=1024)
    ap.add_argument("--min-kb", type=int, default=16)
    ap.add_argument("--old-max-kb", type=int, default=8, help="largest size the old parser is timed on")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--slack", type=float, default=5.0, help="factor on the 0.1 s target (shared machine)")
    args = ap.parse_args(argv)
    sizes = []
    kb = args.min_kb
    while kb <= args.max_kb:
        sizes.append(kb * 1024)
        kb *= 2
    failed = []
    if len(sizes) < 3:
        ap.error("give --min-kb and --max-kb at least two doublings apart")
    print(f"{'case':36s} {'size':>9s} {'seconds':>9s} {'t(2n)/t(n)':>10s}")
    for name, build in CASES.items():
        prev, times = None, {}
        for n in sizes:
            text = build(n)
            t = best_of(lambda text=text: parse(text), args.repeats)
            ratio = "" if prev is None else f"{t / max(prev, 1e-6):.2f}"
            print(f"{name:36s} {len(text):9d} {t:9.4f} {ratio:>10s}")
            times[n] = t
            if name == "unclosed boxes" and n == 1024 * 1024 and t > 0.1 * args.slack:
                failed.append(f"{name}: 1 MB took {t:.3f} s (target 0.1 s x slack {args.slack})")
            prev = t
        lo, hi = sizes[-3], sizes[-1]
        exponent = math.log(max(times[hi], 1e-6) / max(times[lo], 1e-6)) / math.log(hi / lo)
        print(f"{name:36s} growth exponent {exponent:.2f} ({lo // 1024} KB -> {hi // 1024} KB)")
        if times[hi] > 0.05 and exponent > 1.5:  # below 50 ms, page faults of one big copy dominate
            failed.append(f"{name}: growth exponent {exponent:.2f} (not linear)")
    print("\nold rescanning find_boxes, same machine, same run (quadratic):")
    kb, prev = 1, None
    while kb <= args.old_max_kb:
        text = CASES["unclosed boxes"](kb * 1024)
        t = best_of(lambda text=text: old_find_boxes(text), 1)
        new = best_of(lambda text=text: parse_judgment(text), args.repeats)
        ratio = "" if prev is None else f"{t / max(prev, 1e-6):.2f}"
        print(f"{'unclosed boxes (old)':36s} {len(text):9d} {t:9.4f} {ratio:>10s}   new {new:.4f} s, "
              f"old/new {t / max(new, 1e-9):.0f}x")
        prev = t
        kb *= 2
    for f in failed:
        print(f"FAIL {f}")
    print("PASS" if not failed else f"{len(failed)} target(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
