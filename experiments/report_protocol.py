"""The protocol parts of ``tinydistill report``: what each number isolates.

* **Teacher vs student.**  Every KD row gets ``teacher - no-KD student (pp)``: the teacher's main dev metric
  minus that of the matching no-KD student (``report.baseline_for``), paired by seed.  KD can only pass on
  what the teacher knows; a teacher that is not better than the student trained without it is named in a
  warning under the table.
* **Training budget.**  Steps and epochs each student actually ran (and whether early stopping ended it).
* **Hold-out and overlap.**  Dev next to the task's test file and their gap; with ``dedup_eval`` the rows
  whose text does not occur in train (``*_dedup``), with their counts.
* **Compression.**  Per model variant: dev metric, ``Δ vs input`` (this variant minus the one it was made
  from) and ``Δ compression``: for a step that trains (width-pruning recovery, QAT), the step minus its
  equal-budget control (``controls: true``; the uncompressed input trained the same way); for a step that does
  not train, ``Δ vs input`` itself.  A training step without a control has no ``Δ compression``: its
  ``Δ vs input`` mixes compression with extra training.
"""
from __future__ import annotations

from typing import Any

from tinydistill.experiments.report import Gain, Row, baseline_for, mean_std, paired_diff


def _fmt_diff(g: Gain) -> str:
    if g.mean is None:
        return "-"
    sd = f" ± {g.std:.2f}" if g.std is not None else ""
    return f"{round(g.mean, 2) + 0.0:+.2f}{sd} (n={g.n})"  # + 0.0: no "-0.00"


def _mean(row: Row, key: str) -> float | None:
    return mean_std(list(row.per_seed(key).values()))[0]


def _cell(row: Row, key: str) -> str:
    m, s = mean_std(list(row.per_seed(key).values()))
    if m is None:
        return "-"
    return f"{m:.2f}" if s is None else f"{m:.2f} ± {s:.2f}"


# -- teacher vs student -------------------------------------------------------------------------------
def teacher_key(row: Row, metric: str) -> str:
    """The teacher a row's student distils from: the teachers' mixture in multi-teacher runs, else the teacher."""
    mixed = f"teachers_mixed.dev.{metric}"
    return mixed if row.per_seed(mixed) else f"teacher.dev.{metric}"


def teacher_margin(row: Row, rows: list[Row]) -> Gain:
    """Teacher main dev metric minus the matching no-KD student's, paired by seed (KD rows only)."""
    base = baseline_for(row, rows) if row.kd else None
    if base is None:
        return Gain(note="-")
    m = row.main_metric
    return paired_diff(row.per_seed(teacher_key(row, m)), base.per_seed(f"student.dev.{m}"), baseline=base.recipe,
                       test=False)


def teacher_warnings(rows: list[Row]) -> list[str]:
    """One sentence per KD row whose teacher is not better than the no-KD student it distils into."""
    out = []
    for row in rows:
        g = teacher_margin(row, rows)
        if g.mean is None or g.mean > 0:
            continue
        m = row.main_metric
        base = baseline_for(row, rows)
        out.append(f"**Warning:** in `{row.recipe}` the teacher `{row.teacher}` (dev {m} "
                   f"{_mean(row, teacher_key(row, m)):.2f} %) is not better than the `{row.student}` trained "
                   f"without KD (`{base.recipe}`, {_mean(base, f'student.dev.{m}'):.2f} %): "
                   f"{g.mean:+.2f} pp over {g.n} seed(s). KD from it can only pull the student towards a weaker "
                   "model; its KD gain says nothing about distillation from a good teacher.")
    return out


# -- training budget ----------------------------------------------------------------------------------
def budget_notes(rows: list[Row]) -> list[str]:
    """One sentence per row whose student (or teacher) ended at its step budget rather than at a dev plateau."""
    out = []
    for row in rows:
        for who in ("student", "teacher"):
            early = row.per_seed(f"{who}.stopped_early")
            capped = [s for s, v in early.items() if not v]
            if early and capped:
                out.append(f"**Note:** in `{row.recipe}` the {who} ended at its step budget (epochs / max_steps), "
                           f"not at a dev plateau, in {len(capped)} of {len(early)} seed(s) (seeds "
                           f"{', '.join(map(str, capped))}); more training may change its numbers.")
    return out


def training_cell(row: Row, variant: str = "student") -> str:
    """``steps (epochs ep[, early stop k/n])`` averaged over seeds; ``-`` for records without the facts."""
    steps = list(row.per_seed(f"{variant}.train_steps").values())
    if not steps:
        return "-"
    epochs = list(row.per_seed(f"{variant}.train_epochs").values())
    early = list(row.per_seed(f"{variant}.stopped_early").values())
    text = f"{sum(steps) / len(steps):,.0f}"
    if epochs:
        text += f" ({sum(epochs) / len(epochs):.2f} ep"
        if any(early):
            text += f", early stop {int(sum(early))}/{len(early)}"
        text += ")"
    return text


# -- hold-out and overlap -----------------------------------------------------------------------------
def eval_sets(rows: list[Row]) -> list[str]:
    """The evaluation sets besides dev that any record has (test, dev_dedup, test_dedup), in that order."""
    found = set()
    for row in rows:
        for r in row.records:
            found.update(s for s in r.get("eval_sets", []) if s != "dev")
    return [s for s in ("test", "dev_dedup", "test_dedup") if s in found] + sorted(
        found - {"test", "dev_dedup", "test_dedup"})


def eval_table(rows: list[Row]) -> tuple[list[str], list[list[str]], list[list[Any]]] | None:
    """The student and the final model of every row on every evaluation set, the gaps (dev - test, and each
    set minus its unseen-in-train rows) and the set sizes; None when no run evaluated anything besides dev."""
    sets = eval_sets(rows)
    if not sets:
        return None
    metric = rows[0].main_metric
    pairs = ([("dev", "test")] if "test" in sets else []) + [(s[:-6], s) for s in sets if s.endswith("_dedup")]
    header = (["task", "teacher", "student", "recipe", "model"] + [f"{s} {metric} (%)" for s in ["dev"] + sets]
              + [f"{a} - {b} (pp)" for a, b in pairs] + ["examples (" + " / ".join(["dev"] + sets) + ")"])
    raw_header = (["task", "teacher", "student", "recipe", "model"] + [f"{s}_mean" for s in ["dev"] + sets]
                  + [f"{a}_minus_{b}_mean" for a, b in pairs] + [f"{s}_examples" for s in ["dev"] + sets])
    cells, raw = [], []
    for row in rows:
        m = row.main_metric
        sizes = [_mean(row, f"data.{s}.examples") for s in ["dev"] + sets]
        for variant in dict.fromkeys(("student", row.final_variant())):
            ident = [row.task, row.teacher, row.student, row.recipe, variant]
            gaps = [paired_diff(row.per_seed(f"{variant}.{a}.{m}"), row.per_seed(f"{variant}.{b}.{m}"), test=False)
                    for a, b in pairs]
            cells.append(ident + [_cell(row, f"{variant}.{s}.{m}") for s in ["dev"] + sets]
                         + [_fmt_diff(g) for g in gaps]
                         + [" / ".join(f"{n:,.0f}" if n is not None else "-" for n in sizes)])
            raw.append(ident + [_mean(row, f"{variant}.{s}.{m}") for s in ["dev"] + sets]
                       + [g.mean for g in gaps] + sizes)
    return header, cells, [raw_header] + raw


# -- compression --------------------------------------------------------------------------------------
def _trains(record: dict, label: str) -> bool | None:
    """Whether compression step ``label`` of a record trains (None: unknown, e.g. not a step)."""
    from tinydistill.compress.pipeline import step_labels

    steps = (record.get("config") or {}).get("compress") or []
    for item, step_label in zip(steps, step_labels([item.get("step") for item in steps])):
        if step_label == label:
            from tinydistill.compress.controls import trains

            try:
                return trains(item["step"], {k: v for k, v in item.items() if k != "step"})
            except Exception:  # noqa: BLE001 - an old record whose params no longer validate
                return None
    return None


def compression_table(rows: list[Row]) -> tuple[list[str], list[list[str]], list[list[Any]]] | None:
    """One line per (row, model variant after the student); None when no row compresses or exports."""
    metric = rows[0].main_metric if rows else "accuracy"
    header = ["task", "teacher", "student", "recipe", "model", "from", f"dev {metric} (%)", "Δ vs input (pp)",
              f"control dev {metric} (%)", "control steps (epochs)", "Δ compression (pp)"]
    raw_header = ["task", "teacher", "student", "recipe", "model", "from", "dev_mean", "delta_input_mean",
                  "control_dev_mean", "control_steps", "delta_compression_mean", "delta_compression_std",
                  "delta_compression_n", "delta_compression_basis"]
    cells, raw = [], []
    for row in rows:
        variants = row.variants()
        m = row.main_metric
        for k, variant in enumerate(variants[1:], 1):
            prev = variants[k - 1]
            kind, _, label = variant.partition(".")
            step = row.per_seed(f"{variant}.dev.{m}")
            d_in = paired_diff(step, row.per_seed(f"{prev}.dev.{m}"), test=False)
            control = row.per_seed(f"control.{label}.dev.{m}") if kind == "compressed" else {}
            trains = _trains(row.records[0], label) if kind == "compressed" else False
            applied = list(row.per_seed(f"{variant}.applied").values())
            if applied and not any(applied):
                d_comp, basis = Gain(), "not applied"
                comp = "not applied (model carried through unchanged)"
            elif control:
                d_comp, basis = paired_diff(step, control, test=True), "step - control"
                comp = _fmt_diff(d_comp) + (f", p={d_comp.p_value:.3f}" if d_comp.p_value is not None else "")
            elif trains:
                d_comp, basis = Gain(), "trains, no control"
                comp = "n/a: the step trains and has no control (controls: true)"
            else:
                d_comp, basis = d_in, "step - input (no training)"
                comp = _fmt_diff(d_in) + " (no training)"
            ident = [row.task, row.teacher, row.student, row.recipe, variant, prev]
            cells.append(ident + [_cell(row, f"{variant}.dev.{m}"), _fmt_diff(d_in),
                                  _cell(row, f"control.{label}.dev.{m}") if control else "-",
                                  training_cell(row, f"control.{label}") if control else "-", comp])
            raw.append(ident + [_mean(row, f"{variant}.dev.{m}"), d_in.mean,
                                _mean(row, f"control.{label}.dev.{m}") if control else None,
                                _mean(row, f"control.{label}.train_steps") if control else None, d_comp.mean,
                                d_comp.std, d_comp.n, basis])
    if not cells:
        return None
    return header, cells, [raw_header] + raw
