"""Measure a judge's generation lengths on benchmark items: the sample behind ``cerm.bench.token_priors``.

Run the suite with a generous evaluation budget (the cap) on items the tests do not use (another seed),
then read the lengths out of its folders and print them as a ``TokenPrior`` literal, with the share of
calls that filled each cap. The criteria budget stays the model's default so the evaluations are measured
after the same criteria the default run feeds them.

    .venv/bin/cerm bench suite --backend hf --model embedded -b judgebench -b rm-bench -b rmb --limit 8 \\
        --seed 1 --eval-max-new-tokens 256 --bootstrap 0 --out runs/token-lengths-embedded
    .venv/bin/python perf/token_lengths.py runs/token-lengths-embedded
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cerm.bench.cost import measured_lengths
from cerm.bench.records import read_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="a `cerm bench suite` root")
    args = parser.parse_args()
    suite = json.loads((args.root / "suite.json").read_text(encoding="utf-8"))
    config = suite["judge"]["config"]
    criteria: list[int] = []
    evaluations: list[int] = []
    ids: dict[str, list[str]] = {}
    for name in suite["benchmarks"]:
        path = args.root / name / "items.jsonl"
        if not path.exists():
            continue
        records = read_records(path)
        ids[name] = sorted(records)
        c, e = measured_lengths(records.values())
        criteria += c
        evaluations += e
    caps = (config["criteria_max_new_tokens"], config["eval_max_new_tokens"])
    for kind, lengths, cap in (("criteria", criteria, caps[0]), ("evaluation", evaluations, caps[1])):
        full = sum(x >= cap for x in lengths)
        print(f"# {kind}: {len(lengths)} calls, mean {sum(lengths) / len(lengths):.1f} tokens, "
              f"{full} ({100 * full / len(lengths):.0f}%) filled the cap of {cap}")
    print(f"# items: {json.dumps(ids)}")
    print(f"criteria=LengthSample({tuple(sorted(criteria))}, cap={caps[0]}),")
    print(f"evaluation=LengthSample({tuple(sorted(evaluations))}, cap={caps[1]}),")


if __name__ == "__main__":
    main()
