"""Plots of ``tinydistill report`` (matplotlib, Agg): dev metric vs size and vs latency for every model variant
of every row with the Pareto front marked, and the students' training curves from the trainers'
``history.json``.  ``pareto_front`` and ``save_fig`` serve the search report too (experiments/search_report.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from tinydistill.distill.fsutil import read_json
from tinydistill.experiments.identity import short_name


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated by another (smaller x and larger y are better)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def variant_points(rows: list, xkey: str) -> list[tuple[str, str, float, float]]:
    """(row label, variant, x, y) per row and model variant, averaged over seeds."""
    out = []
    for row in rows:
        for variant in row.variants():
            xs = list(row.per_seed(f"{variant}.{xkey}").values())
            ys = list(row.per_seed(f"{variant}.dev.{row.main_metric}").values())
            if xs and ys:
                out.append((f"{short_name(row.student)}/{row.recipe}", variant, sum(xs) / len(xs), sum(ys) / len(ys)))
    return out


def plot_tradeoff(rows: list, xkey: str, xlabel: str, path: Path) -> Path | None:
    """Dev metric vs ``xkey`` for every variant (one colour per row); the Pareto front is the red line,
    its points are labelled with their variant."""
    pts = variant_points(rows, xkey)
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    labels = list(dict.fromkeys(p[0] for p in pts))
    cmap = plt.get_cmap("tab10")
    for k, label in enumerate(labels):
        mine = [p for p in pts if p[0] == label]
        ax.scatter([p[2] for p in mine], [p[3] for p in mine], s=30, color=cmap(k % 10), label=label)
    xy = [(p[2], p[3]) for p in pts]
    front = pareto_front(xy)
    fx, fy = [xy[i][0] for i in front], [xy[i][1] for i in front]
    ax.step(fx, fy, where="post", color="tab:red", lw=1.2)
    ax.scatter(fx, fy, s=90, facecolors="none", edgecolors="tab:red", label="Pareto front")
    for i in front:
        ax.annotate(pts[i][1].split(".")[-1], xy[i], fontsize=7, xytext=(4, 4), textcoords="offset points")
    metric = rows[0].main_metric
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"dev {metric} (%)")
    if xkey.endswith("size_mb") or xkey.endswith("_ms"):
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"{metric} vs {xlabel.split(' (')[0]}")
    fig.tight_layout()
    save_fig(fig, path)
    plt.close(fig)
    return path


def save_fig(fig, path: Path) -> None:
    from tinydistill.distill.fsutil import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def _history_points(history: Any, metric: str) -> tuple[list[float], list[float]]:
    """(steps, dev metric) from a trainer history.json (a list of eval entries, or {"evals": [...]})."""
    entries = history.get("evals") or history.get("history") or history.get("dev") or [] \
        if isinstance(history, dict) else history
    xs, ys = [], []
    for e in entries if isinstance(entries, list) else []:
        if not isinstance(e, dict):
            continue
        dev = e.get("dev") if isinstance(e.get("dev"), dict) else e.get("metrics") if isinstance(e.get("metrics"), dict) else e
        y = dev.get(metric) if isinstance(dev, dict) else None
        if y is None and isinstance(dev, dict):
            y = dev.get(f"dev_{metric}") or dev.get(f"eval_{metric}")
        x = e.get("step", e.get("global_step", e.get("epoch")))
        if isinstance(y, (int, float)) and isinstance(x, (int, float)):
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def plot_curves(rows: list, path: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    drawn = 0
    for row in rows:
        rec = row.records[0]
        hist = Path(rec.get("run_dir", "")) / "student" / "history.json"
        if not hist.is_file():
            continue
        xs, ys = _history_points(read_json(hist), row.main_metric)
        if xs:
            ax.plot(xs, ys, marker=".", lw=1, label=f"{row.student}/{row.recipe} (seed {rec['seed']})")
            drawn += 1
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training step")
    ax.set_ylabel(f"dev {rows[0].main_metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("student training curves")
    fig.tight_layout()
    save_fig(fig, path)
    plt.close(fig)
    return path
