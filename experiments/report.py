"""``tinydistill report``: ablation tables (Markdown, CSV, LaTeX) and plots from the result store.

Rows are (task, teacher, student, recipe); each cell is mean ± std over the seeds of that row.  A
distilled row's *KD gain* is its student's main dev metric minus that of the matching no-KD baseline
(same task and student, a recipe without KD losses; same teacher preferred), paired by seed and tested
with a paired t-test (``scipy.stats.ttest_rel``); with fewer than two paired seeds the table says
``n<2`` instead of a p-value.  Size and latency columns are those of the row's final model (the last
compression step or export the run produced).

Plots (experiments/report_plots.py): dev metric vs size and vs latency for every model variant of every row
(student, each compression step, each export) with the Pareto front marked, and training curves from
the trainers' ``history.json``.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinydistill.distill.fsutil import atomic_write_text
from tinydistill.experiments.store import STORE_DIRNAME, ResultStore


# ----------------------------------------------------------------------------------------------
# loading and grouping


def find_records(runs_dir: str | Path, damaged: list[str] | None = None) -> list[dict]:
    """Records of every store under ``runs_dir`` (``runs_dir/_store`` and ``runs_dir/*/_store``); damaged
    record files are skipped with a warning and listed in ``damaged``."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"{runs_dir}: runs directory not found")
    stores = [runs_dir / STORE_DIRNAME] + sorted(runs_dir.glob(f"*/{STORE_DIRNAME}"))
    records = [r for s in stores if s.is_dir() for r in ResultStore(s).records(damaged)]
    return records


def value(record: dict, key: str) -> float | None:
    m = record.get("metrics", {}).get(key)
    return float(m["value"]) if m is not None and m.get("value") is not None else None


@dataclass
class Row:
    task: str
    teacher: str
    student: str
    recipe: str
    kd: bool
    main_metric: str
    records: list[dict] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        return (self.task, self.teacher, self.student, self.recipe)

    @property
    def seeds(self) -> list[int]:
        return [r["seed"] for r in self.records]

    def per_seed(self, key: str) -> dict[int, float]:
        return {r["seed"]: v for r in self.records if (v := value(r, key)) is not None}

    def final_variant(self) -> str:
        return self.records[0].get("final", "student")

    def variants(self) -> list[str]:
        return list(self.records[0].get("variants", ["student"]))


def group(records: list[dict]) -> list[Row]:
    """One row per configuration (labels + seedless config hash), its records sorted by seed.  Two
    configurations under the same labels (e.g. a recipe edited between sweeps) get the recipe label
    suffixed with their hash, so no row mixes different configurations; a re-run of the same seed keeps
    the newest record."""
    groups: dict[tuple, dict[int, dict]] = {}
    for r in sorted(records, key=lambda r: r.get("stored_at", 0)):
        labels = (r.get("task", ""), r.get("teacher") or "-", r.get("student", ""), r.get("recipe", "default"))
        groups.setdefault(labels + (r.get("group_hash", ""),), {})[r.get("seed", 0)] = r
    per_label: dict[tuple, int] = {}
    for key in groups:
        per_label[key[:4]] = per_label.get(key[:4], 0) + 1
    rows = []
    for key in sorted(groups, key=lambda k: tuple(str(x) for x in k)):
        task, teacher, student, recipe, ghash = key
        if per_label[key[:4]] > 1:
            recipe = f"{recipe}#{ghash[:6]}"
        recs = [groups[key][s] for s in sorted(groups[key])]
        rows.append(Row(task, teacher, student, recipe, kd=bool(recs[0].get("kd")),
                        main_metric=recs[0].get("main_metric", "accuracy"), records=recs))
    return rows


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


# ----------------------------------------------------------------------------------------------
# KD gain with a paired test


@dataclass
class Gain:
    baseline: str | None = None  # recipe name of the baseline row
    n: int = 0
    mean: float | None = None
    std: float | None = None
    p_value: float | None = None
    note: str = ""


def baseline_for(row: Row, rows: list[Row]) -> Row | None:
    if not row.kd:
        return None
    candidates = [b for b in rows if not b.kd and b.task == row.task and b.student == row.student]
    same_teacher = [b for b in candidates if b.teacher == row.teacher]
    return (same_teacher or candidates or [None])[0]


def kd_gain(row: Row, rows: list[Row]) -> Gain:
    base = baseline_for(row, rows)
    if base is None:
        return Gain(note="no-KD baseline" if not row.kd else "no baseline run")
    key = f"student.dev.{row.main_metric}"
    return paired_diff(row.per_seed(key), base.per_seed(key), baseline=base.recipe)


def paired_diff(mine: dict[int, float], theirs: dict[int, float], baseline: str | None = None,
                test: bool = True) -> Gain:
    """``mine - theirs`` paired by seed: mean ± std of the differences, and (``test``) the paired t-test."""
    seeds = sorted(set(mine) & set(theirs))
    diffs = [mine[s] - theirs[s] for s in seeds]
    g = Gain(baseline=baseline, n=len(seeds))
    g.mean, g.std = mean_std(diffs)
    if len(seeds) < 2 or not test:
        g.note = ("n<2" if seeds else "no common seeds") if len(seeds) < 2 else ""
        return g
    from scipy import stats

    p = stats.ttest_rel([mine[s] for s in seeds], [theirs[s] for s in seeds]).pvalue
    if p is None or math.isnan(p):
        g.note = "no variance"
    else:
        g.p_value = float(p)
    return g


# ----------------------------------------------------------------------------------------------
# tables


def _fmt(ms: tuple[float | None, float | None], digits: int = 2) -> str:
    m, s = ms
    if m is None:
        return "-"
    return f"{m:.{digits}f}" if s is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def _fmt_gain(g: Gain) -> str:
    if g.mean is None:
        return g.note or "-"
    sign = "+" if g.mean >= 0 else ""
    if g.p_value is not None:
        return f"{sign}{g.mean:.2f} (p={g.p_value:.3f}, n={g.n})"
    return f"{sign}{g.mean:.2f} (n={g.n}: {'no test, n<2' if g.n < 2 else g.note})"


def table(rows: list[Row]) -> tuple[list[str], list[list[str]], list[list[Any]]]:
    """Header, formatted cells and raw cells (for CSV) of the ablation table."""
    from tinydistill.experiments.report_protocol import _fmt_diff, teacher_key, teacher_margin, training_cell

    header = ["task", "teacher", "student", "recipe", "seeds"]
    cells, raw = [], []
    metric = rows[0].main_metric if rows else "accuracy"
    for row in rows:
        m = row.main_metric
        final = row.final_variant()
        teacher = mean_std(list(row.per_seed(teacher_key(row, m)).values()))   # several teachers: their mixture
        student = mean_std(list(row.per_seed(f"student.dev.{m}").values()))
        final_acc = mean_std(list(row.per_seed(f"{final}.dev.{m}").values()))
        size = mean_std(list(row.per_seed(f"{final}.size_mb").values()))
        lat = mean_std(list(row.per_seed(f"{final}.latency_p50_ms").values()))
        student_lat = mean_std(list(row.per_seed("student.latency_p50_ms").values()))
        gain = kd_gain(row, rows)
        margin = teacher_margin(row, rows)
        steps = mean_std(list(row.per_seed("student.train_steps").values()))[0]
        epochs = mean_std(list(row.per_seed("student.train_epochs").values()))[0]
        t_steps = mean_std(list(row.per_seed("teacher.train_steps").values()))[0]
        t_epochs = mean_std(list(row.per_seed("teacher.train_epochs").values()))[0]
        ident = [row.task, row.teacher, row.student, row.recipe, str(len(row.records))]
        cells.append(ident + [_fmt(teacher), training_cell(row, "teacher"), _fmt_diff(margin), _fmt(student),
                              training_cell(row), _fmt_gain(gain),
                              final, _fmt(final_acc), _fmt(size), _fmt(student_lat, 3), _fmt(lat, 3)])
        raw.append(ident + [teacher[0], teacher[1], t_steps, t_epochs, margin.mean, student[0], student[1], steps,
                            epochs, gain.mean,
                            gain.p_value, gain.n, final, final_acc[0], final_acc[1], size[0], lat[0],
                            student_lat[0]])
    header_fmt = header + [f"teacher {metric} (%)", "teacher trained steps (epochs)", "teacher - no-KD student (pp)",
                           f"student {metric} (%)",
                           "student trained steps (epochs)", "KD gain (pp, paired t-test)",
                           "final model", f"final {metric} (%)", "final size (MB)",
                           "student latency p50 (ms)", "final latency p50 (ms)"]
    header_raw = header + ["teacher_mean", "teacher_std", "teacher_train_steps", "teacher_train_epochs",
                           "teacher_minus_nokd_mean", "student_mean", "student_std",
                           "student_train_steps", "student_train_epochs", "kd_gain_mean",
                           "kd_gain_p", "kd_gain_n", "final_model", "final_mean", "final_std", "final_size_mb",
                           "final_latency_p50_ms", "student_latency_p50_ms"]
    return header_fmt, cells, [header_raw] + raw


def to_markdown(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def to_csv(raw: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for row in raw:
        w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v) for v in row])
    return buf.getvalue()


_LATEX_ESC = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
              "~": r"\textasciitilde{}", "^": r"\^{}", "\\": r"\textbackslash{}"}


def _tex(s: str) -> str:
    s = "".join(_LATEX_ESC.get(ch, ch) for ch in s)
    return s.replace("±", r"$\pm$").replace("Δ", r"$\Delta$")


def to_latex(header: list[str], cells: list[list[str]]) -> str:
    lines = [r"\begin{tabular}{" + "l" * 5 + "r" * (len(header) - 5) + "}", r"\toprule",
             " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(c) for c in row) + r" \\" for row in cells]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# entry points


def write_report(runs_dir: str | Path, out_dir: str | Path | None = None, formats=("md", "csv", "latex"),
                 plots: bool = True, basename: str = "results") -> dict[str, Path]:
    """Write ``<basename>.{md,csv,tex}`` and PNG plots; returns the written paths by kind."""
    damaged: list[str] = []
    records = find_records(runs_dir, damaged)
    if not records:
        raise FileNotFoundError(f"{runs_dir}: no result records (expected {STORE_DIRNAME}/*.json under it"
                                + (f"; {len(damaged)} damaged: {damaged[0]}" if damaged else "") + ")")
    out_dir = Path(out_dir or runs_dir)
    rows = group(records)
    header, cells, raw = table(rows)
    written: dict[str, Path] = {}
    pngs = []
    if plots:
        from tinydistill.experiments.report_plots import plot_curves, plot_tradeoff

        for name, xkey, xlabel in (("acc_vs_size.png", "size_mb", "model size (MB)"),
                                   ("acc_vs_latency.png", "latency_p50_ms", "latency p50 (ms)")):
            p = plot_tradeoff(rows, xkey, xlabel, out_dir / name)
            if p:
                written[name] = pngs.append(p) or p
        p = plot_curves(rows, out_dir / "training_curves.png")
        if p:
            written["training_curves.png"] = pngs.append(p) or p
    from tinydistill.experiments import report_protocol as protocol
    from tinydistill.experiments.assistants import chain_table
    from tinydistill.experiments.multitask import multitask_table

    extra = [(name, title, note, t) for name, title, note, t in (
        ("eval", "Evaluation sets", "Dev next to the hold-out test file (`task.test` / `--test-file`) and, with "
         "`task.dedup_eval`, the rows whose text does not occur in the training split (`*_dedup`); gaps paired "
         "by seed.", protocol.eval_table(rows)),
        ("compression", "Compression steps", "Δ vs input = model minus the model it was made from. Δ compression "
         "= a training step (width-pruning recovery, QAT) minus its equal-budget control (its uncompressed input "
         "trained with the same data, losses, teacher and steps), paired by seed; for a step that does not "
         "train, Δ vs input.", protocol.compression_table(rows)),
        ("assistants", "Teacher-assistant chains", "Each KD row's chain, teacher first, with every hop's dev "
         "metric (mean ± std over seeds); student - direct = this student minus the student distilled straight "
         "from the same teacher (no assistants), paired by seed, scipy.stats.ttest_rel.", chain_table(rows)),
        ("multitask", "Multi-task teachers", "Each KD row whose teacher was fine-tuned on several tasks (one encoder, "
         "heads per task), with the teacher's dev metric on every task, next to the row distilled from the same "
         "teacher architecture fine-tuned on the task alone; multi - single paired by seed (students: "
         "scipy.stats.ttest_rel).", multitask_table(rows)))
        if t is not None]
    if "md" in formats:
        md = [f"# Results: {Path(runs_dir).resolve().name}", "",
              f"{len(records)} runs"
              + (f" ({len(damaged)} damaged result record(s) skipped: {'; '.join(damaged)})" if damaged else "")
              + f"; metric: dev {rows[0].main_metric}; mean ± std over seeds. KD gain = student "
              "minus the matching no-KD baseline (same task and student), paired by seed, "
              "scipy.stats.ttest_rel. Teacher = the teacher, or with several teachers the mixture of their logits "
              "the student distils from; teacher - no-KD student = its dev metric minus that baseline's (KD rows). Trained steps (epochs) = what the trainer actually ran (mean over seeds).", "",
              to_markdown(header, cells)]
        md += [w + "\n" for w in protocol.teacher_warnings(rows) + protocol.budget_notes(rows)]
        for _, title, note, (h, c, _) in extra:
            md += [f"## {title}", "", note, "", to_markdown(h, c)]
        md += [f"![{p.stem}]({p.name})" for p in pngs]
        md += ["", _provenance(records)]
        written["md"] = _write(out_dir / f"{basename}.md", "\n".join(md) + "\n")
    if "csv" in formats:
        written["csv"] = _write(out_dir / f"{basename}.csv", to_csv(raw))
        for name, _, _, (_, _, r) in extra:
            written[f"{name}_csv"] = _write(out_dir / f"{basename}_{name}.csv", to_csv(r))
    if "latex" in formats:
        tex = [to_latex(header, cells)] + [to_latex(h, c) for _, _, _, (h, c, _) in extra]
        written["latex"] = _write(out_dir / f"{basename}.tex", "\n".join(tex))
    return written


def _provenance(records: list[dict]) -> str:
    commits = sorted({str(r.get("git_commit")) for r in records})
    versions = records[0].get("versions", {})
    pkgs = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    return f"Code: {', '.join(commits)}. Packages: {pkgs}."


def _write(path: Path, text: str) -> Path:
    atomic_write_text(path, text)
    return path


def cli_report(args: argparse.Namespace) -> int:
    """Writes results.md/.csv/.tex (and plots with --plots); prints the --format one."""
    written = write_report(args.runs_dir, args.out, plots=args.plots)
    print(Path(written[args.format]).read_text(encoding="utf-8"))
    for path in written.values():
        print(f"wrote {path}")
    return 0
