"""The ``report`` stage of a run: ``metrics.json``, ``report.md``, a TensorBoard summary (``tb/``) and the run's
record in the result store, from the metrics every stage wrote into its marker."""
from __future__ import annotations

from tinydistill.distill.fsutil import atomic_write_text, write_json
from tinydistill.experiments.config import uses_teacher
from tinydistill.experiments.config_yaml import dump_yaml
from tinydistill.experiments.store import provenance


def report_stage(r) -> dict:
    """Write the run's report files and store its record (``r``: an ``experiments.runner.Runner``)."""
    metrics, durations = r.collected()
    write_json(r.run_dir / "metrics.json", {"run_id": r.run_id, "metrics": metrics, "durations_s": durations})
    variants = [v for v in r.variants() if r.variant_dir(v).exists()]
    atomic_write_text(r.run_dir / "report.md", report_md(r, metrics, durations, variants))
    write_tb(r, metrics, variants)
    cfg = r.cfg
    record = {
        "run_id": r.run_id, "name": cfg.name, "recipe": cfg.recipe, "task": cfg.task.name,
        "main_metric": r.task_main_metric, "teacher": cfg.teacher.name if cfg.teacher else None,
        "student": cfg.student.name, "seed": r.seed, "kd": uses_teacher(cfg), "config_hash": r.hash,
        "group_hash": r.group_hash, "config": r.raw, "data_fingerprint": r.data_fingerprint,
        **provenance(), "metrics": metrics, "durations": durations, "variants": variants,
        "final": variants[-1], "run_dir": str(r.run_dir.resolve()),
        "controls": r.controls(), "eval_sets": list(r.eval_sets.sets),
    }
    r.store.put(record)
    return {}


def report_md(r, metrics: dict, durations: dict, variants: list[str]) -> str:
    main, extra = r.task_main_metric, r.eval_sets.extra

    def val(key: str, fmt: str = "{:.2f}") -> str:
        m = metrics.get(key)
        return fmt.format(m["value"]) if m else "-"

    lines = [f"# Run {r.run_id}", "",
             f"Config `{r.cfg.source or '-'}` (resolved: `config.yaml`), recipe `{r.cfg.recipe}`, "
             f"seed {r.seed}, task `{r.cfg.task.name}`, student `{r.cfg.student.name}`"
             + (f", teacher `{r.cfg.teacher.name}`" if r.cfg.teacher else "") + ".", "",
             f"| model | dev {main} (%) | " + "".join(f"{s} {main} (%) | " for s in extra)
             + "trained steps (epochs) | size (MB) | parameters | latency p50 (ms) | latency p90 (ms) |",
             "|---|---|" + "---|" * len(extra) + "---|---|---|---|---|"]
    rows = r.teachers.labels() + r.chain.labels() + variants + [f"control.{label}" for label in r.controls()]
    for v in rows:
        steps = val(f"{v}.train_steps", "{:,.0f}")
        if f"{v}.train_epochs" in metrics:
            steps += f" ({val(f'{v}.train_epochs')}{', early stop' if val(f'{v}.stopped_early') == '1.00' else ''})"
        lines.append(f"| {v} | {val(f'{v}.dev.{main}')} | "
                     + "".join(f"{val(f'{v}.{s}.{main}')} | " for s in extra)
                     + f"{steps} | {val(f'{v}.size_mb')} | "
                     f"{val(f'{v}.num_parameters', '{:,.0f}')} | {val(f'{v}.latency_p50_ms', '{:.3f}')} | "
                     f"{val(f'{v}.latency_p90_ms', '{:.3f}')} |")
    for label in r.controls():
        step, control = metrics.get(f"compressed.{label}.dev.{main}"), metrics.get(f"control.{label}.dev.{main}")
        if step and control:
            lines.append(f"\nΔ compression of {label} (step - its equal-budget control, dev {main}): "
                         f"{step['value'] - control['value']:+.2f} pp")
    lines += ["", "| stage | seconds |", "|---|---|"]
    lines += [f"| {s} | {d:.1f} |" for s, d in durations.items() if d is not None]
    lines += ["", "All metrics with units: `metrics.json`."]
    return "\n".join(lines) + "\n"


def write_tb(r, metrics: dict, variants: list[str]) -> None:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboardX is a dependency
        return
    main = r.task_main_metric
    with SummaryWriter(str(r.run_dir / "tb")) as w:
        for step, v in enumerate(variants):
            for key, tag in ((f"{v}.dev.{main}", f"pipeline/dev_{main}"), (f"{v}.size_mb", "pipeline/size_mb"),
                             (f"{v}.latency_p50_ms", "pipeline/latency_p50_ms")):
                if key in metrics:
                    w.add_scalar(tag, metrics[key]["value"], step)
        w.add_text("config", "```\n" + dump_yaml(r.raw) + "\n```")
