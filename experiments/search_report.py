"""The report of ``tinydistill search``: every candidate with what decided its fate, the Pareto front of the
trained ones (dev metric vs latency), the best model within the budget, and the plots with the budget drawn.

Written to ``<out>/<name>/search.{md,csv,json}``, ``search_acc_vs_latency.png`` and ``search_acc_vs_size.png``.
A trained candidate's numbers are those of its final model (the last compression step or export) from its
runs' result records: dev metric mean ± std over seeds, size and latency from the run's ``bench`` stage (a fresh
process per model).  "within budget" is decided on those measurements, without the pruning slack; a pruned
candidate shows the untrained measurement that pruned it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tinydistill.distill.fsutil import atomic_write_text, write_json

AXES = (("latency", "latency_p50_ms", "latency_ms", "latency p50 (ms)"),
        ("size", "size_mb", "size_mb", "size (MB)"))


def _mean(values: list[float]) -> tuple[float | None, float | None]:
    from tinydistill.experiments.report import mean_std

    return mean_std(values)


def candidate_results(c, main_metric: str) -> dict[str, Any]:
    """Means over the candidate's finished runs: dev metric (and std), final size, latency, parameters."""
    records = [rec for r in c.runners if (rec := r.store.get(r.run_id)) is not None]
    out: dict[str, Any] = {"seeds": len(records)}
    if not records:
        return out
    final = records[0].get("final", "student")
    out["final"] = final

    def values(key: str) -> list[float]:
        return [float(m["value"]) for rec in records if (m := rec.get("metrics", {}).get(key)) is not None]

    out["metric"], out["metric_std"] = _mean(values(f"{final}.dev.{main_metric}"))
    for metric in ("size_mb", "latency_p50_ms", "latency_p90_ms", "model_latency_p50_ms", "num_parameters"):
        m, _ = _mean(values(f"{final}.{metric}"))
        if m is not None:
            out[metric] = m
    if "num_parameters" not in out and "num_parameters" in c.probe:
        out["num_parameters"] = c.probe["num_parameters"]  # an export's manifest may not count them
    out["run_dirs"] = [rec.get("run_dir") for rec in records]
    return out


def write_search_report(grid_cfg, candidates: list, budget: dict[str, float], exp_dir: Path,
                        slack: float = 0.0) -> dict[str, Path]:
    from tinydistill.experiments.report_plots import pareto_front
    from tinydistill.experiments.search import BUDGETS, over_budget

    exp_dir = Path(exp_dir)
    main = candidates[0].runners[0].task_main_metric
    for c in candidates:
        c.result = candidate_results(c, main) if c.status == "trained" else {}
        if c.result.get("metric") is None:
            c.within, c.over_after = None, []
            continue
        # a budget whose metric the runs did not measure is not met
        c.over_after = over_budget(c.result, budget) + [f"{n} not measured" for n in budget
                                                        if BUDGETS[n] not in c.result]
        c.within = not c.over_after
    trained = [c for c in candidates if c.result.get("metric") is not None and "latency_p50_ms" in c.result]
    front = {trained[i].index for i in pareto_front([(c.result["latency_p50_ms"], c.result["metric"])
                                                     for c in trained])}
    fitting = [c for c in candidates if c.within]
    best = max(fitting, key=lambda c: c.result["metric"]) if fitting else None
    header = ["candidate", "student", "width", "vocab", "quantize", "untrained size (MB)",
              "untrained latency p50 (ms)", "status", f"dev {main} (%)", "size (MB)", "latency p50 (ms)",
              "Pareto", "within budget"]
    rows = []
    for c in candidates:
        status = {"pruned": f"pruned before training ({c.reason.split(': ', 1)[-1]})",
                  "trained": f"trained ({c.result.get('seeds', 0)} seed(s))",
                  "failed": f"failed ({c.reason or 'see the sweep log'})", "todo": "not trained (--probe-only)"}[c.status]
        r = c.result
        rows.append([c.name, c.student["name"], f"{c.width:g}", str(c.vocab or "all"), c.quantize,
                     _num(c.probe.get("size_mb"), 3), _num(c.probe.get("latency_p50_ms"), 3), status,
                     "-" if r.get("metric") is None else _num(r["metric"], 2) + (
                         f" ± {r['metric_std']:.2f}" if r.get("metric_std") is not None else ""),
                     _num(r.get("size_mb"), 3), _num(r.get("latency_p50_ms"), 3),
                     "yes" if c.index in front else "",
                     "-" if c.within is None else ("yes" if c.within else "no: " + ", ".join(c.over_after))])
    from tinydistill.experiments.report import to_csv, to_markdown

    budget_text = ", ".join(f"`{k}` <= {v:g}" for k, v in budget.items())
    bench = candidates[0].runners[0].cfg.bench
    n_pruned = sum(c.status == "pruned" for c in candidates)
    lines = [f"# Search: {grid_cfg.name}", "",
             f"Budget: {budget_text} (latency: end to end p50 at batch {bench.batch_size} x {bench.seq_len} tokens, "
             f"{bench.threads} thread(s); size: what a deployment needs on disk). {len(candidates)} candidates, "
             f"{n_pruned} pruned before training on their untrained size or latency"
             + (f" (slack {slack:g})" if slack else "") + f", {len(trained)} trained and measured, "
             f"{len(fitting)} within the budget after training.", ""]
    if best is not None:
        lines += [f"**Best within budget: {best.name}** ({best.student['name']}): dev {main} "
                  f"{best.result['metric']:.2f} %, {best.result.get('size_mb', float('nan')):.3g} MB, "
                  f"latency p50 {best.result.get('latency_p50_ms', float('nan')):.3g} ms; final model "
                  f"`{best.result.get('final')}` in {best.result['run_dirs'][0]}.", ""]
    elif trained:
        lines += ["**No trained candidate is within the budget.**", ""]
    else:
        lines += ["**No candidate was trained** (each was pruned, or `--probe-only`).", ""]
    pareto_names = [c.name for c in sorted((c for c in trained if c.index in front),
                                           key=lambda c: c.result["latency_p50_ms"])]
    lines += [f"Pareto front (dev {main} vs latency, trained candidates): " + (", ".join(pareto_names) or "-"), "",
              to_markdown(header, rows)]
    written: dict[str, Path] = {}
    for axis, key, budget_name, label in AXES:
        p = plot_search(candidates, trained, front, best, key, label, budget.get(budget_name), main,
                        exp_dir / f"search_acc_vs_{axis}.png")
        if p is not None:
            written[p.name] = p
            lines.append(f"![{p.stem}]({p.name})")
    written["md"] = exp_dir / "search.md"
    atomic_write_text(written["md"], "\n".join(lines) + "\n")
    written["csv"] = exp_dir / "search.csv"
    atomic_write_text(written["csv"], to_csv([header] + rows))
    written["json"] = exp_dir / "search.json"
    write_json(written["json"], {
        "name": grid_cfg.name, "budget": budget, "slack": slack, "main_metric": main,
        "best": best.name if best else None, "pareto_front": pareto_names,
        "candidates": [{"name": c.name, "student": c.student, "width": c.width, "vocab": c.vocab,
                        "quantize": c.quantize, "recipe": c.recipe, "status": c.status, "reason": c.reason,
                        "probe": c.probe, "result": c.result, "within_budget": c.within,
                        "pareto": c.index in front, "run_ids": [r.run_id for r in c.runners]}
                       for c in candidates]})
    return written


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def plot_search(candidates, trained, front, best, key, xlabel, limit, metric, path: Path) -> Path | None:
    """Dev metric vs ``key`` of the trained candidates (Pareto front as a step line, the best within budget
    starred), the pruned ones as crosses at their untrained measurement on the bottom edge, the budget as a
    vertical line."""
    pts = [(c, c.result[key], c.result["metric"]) for c in trained if key in c.result]
    pruned = [(c, c.probe[key]) for c in candidates if c.status == "pruned" and key in c.probe]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinydistill.experiments.report_plots import save_fig

    fig, ax = plt.subplots(figsize=(8, 5.5))
    students = list(dict.fromkeys(c.student_label for c, _, _ in pts))
    cmap = plt.get_cmap("tab10")
    for k, s in enumerate(students):
        mine = [(x, y) for c, x, y in pts if c.student_label == s]
        ax.scatter([x for x, _ in mine], [y for _, y in mine], s=32, color=cmap(k % 10), label=s)
    for c, x, y in pts:
        ax.annotate(c.recipe, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    on_front = sorted(((x, y) for c, x, y in pts if c.index in front))
    if on_front and key == "latency_p50_ms":
        ax.step([x for x, _ in on_front], [y for _, y in on_front], where="post", color="tab:red", lw=1.2)
        ax.scatter([x for x, _ in on_front], [y for _, y in on_front], s=90, facecolors="none",
                   edgecolors="tab:red", label="Pareto front")
    if best is not None and key in best.result:
        ax.scatter([best.result[key]], [best.result["metric"]], marker="*", s=260, color="gold",
                   edgecolors="black", zorder=5, label=f"best within budget: {best.name}")
    ys = [y for _, _, y in pts]
    bottom = min(ys) - max(1.0, 0.08 * (max(ys) - min(ys) + 1e-9))
    if pruned:
        ax.scatter([x for _, x in pruned], [bottom] * len(pruned), marker="x", color="grey",
                   label="pruned before training (untrained measurement)")
    if limit is not None:
        ax.axvline(limit, color="tab:red", ls="--", lw=1.2, label=f"budget {limit:g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"dev {metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"search: {metric} vs {xlabel.split(' (')[0]}")
    fig.tight_layout()
    save_fig(fig, path)
    plt.close(fig)
    return path
