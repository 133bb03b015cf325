"""Curves of an RL run (``metrics.jsonl``) as PNGs, one figure per theme, one panel per metric."""

from __future__ import annotations

from pathlib import Path

from cerm.train.rl.metrics import read_metrics

PANELS: dict[str, list[str]] = {
    "accuracy": ["rollout/pairwise_accuracy", "eval/pairwise_accuracy", "rollout/tie_rate", "eval/tie_rate",
                 "rollout/parse_failure_rate", "eval/parse_failure_rate"],
    "rewards": ["reward/criteria/mean", "reward/chosen/mean", "reward/rejected/mean"],
    "advantages": ["advantage/criteria/std", "advantage/chosen/std", "advantage/rejected/std",
                   "advantage/criteria/max", "advantage/chosen/max", "advantage/rejected/max"],
    "optimisation": ["loss/policy", "loss/kl", "loss/clip_fraction", "loss/ratio_mean", "grad_norm/mean", "lr"],
    "lengths": ["length/criteria/mean", "length/judgment/mean", "length/judgment_prompt/mean",
                "rollout/criteria_truncation_rate"],
    "throughput": ["throughput/rollout_tokens_per_s", "throughput/train_tokens_per_s", "time/rollout_s",
                   "time/update_s"],
}


def plot_run(run: str | Path, out: str | Path | None = None) -> list[Path]:
    """Write ``<theme>.png`` for every theme with data; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    run = Path(run)
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; give the output_dir of a `cerm train rl` run.")
    records = read_metrics(path)
    out_dir = Path(out) if out is not None else run / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for theme, keys in PANELS.items():
        series = {k: [(r["step"], r[k]) for r in records if r.get(k) is not None] for k in keys}
        series = {k: v for k, v in series.items() if v}
        if not series:
            continue
        cols = min(3, len(series))
        rows = -(-len(series) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
        for ax, (key, points) in zip(axes.flat, series.items(), strict=False):
            steps, values = zip(*points, strict=False)
            # evaluations are sparse: markers make single points visible
            ax.plot(steps, values, marker="o" if key.startswith("eval/") or len(points) < 20 else None, ms=3)
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("step", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(series):]:
            ax.set_visible(False)
        fig.suptitle(f"{run.name}: {theme}", fontsize=10)
        fig.tight_layout()
        target = out_dir / f"{theme}.png"
        fig.savefig(target, dpi=110)
        plt.close(fig)
        written.append(target)
    if not written:
        raise ValueError(f"{path} holds no known metrics to plot.")
    return written
