"""The NLPCC 2018 SLU compression table (shape of the ERNIE 3.0 Tiny table) from a finished
``tinydistill sweep experiments/configs/results_slu.yaml`` output directory.

    python experiments/results/make_slu_table.py runs/results-slu [--data-dir DIR] [--runs 200] [--rounds 2]
        [--out experiments/results/slu_compression] [--protocol-from JSON | --compression-from JSON]

``--protocol-from`` keeps the teacher and students section of an earlier output (it may be the file being
rewritten) and measures the compression section from this store; ``--compression-from`` is the converse.

Every row is a model directory the sweep wrote, measured on the same runtime as the INT8 programs: FP32
dygraph directories (students, vocabulary- and width-pruned models) are first exported to Paddle Inference
(``compress.export.export``, verified against the source); the width-pruned model also goes to ONNX Runtime
dynamic INT8 (MatMul + embedding Gather), with the no-KD nano's FP32 ONNX as that runtime's baseline, and
the vocabulary-pruned model (no width pruning) to onnxruntime-c INT8 / INT4 storage: the trade-off rows.
Latency, peak RSS and size come from ``compress.bench.bench_dirs`` (one fresh process per directory, end to
end = tokenise + run + decode); the directories are measured ``--rounds`` times in alternating order: a row's
figure is the median of its per-round p50s, a speed-up the median of the per-round ratios (each round's two
directories measured minutes apart), with their range over rounds as the spread.  Accuracy is the dev ``sentence_accuracy`` of each directory, evaluated here.
Ratios are against the first row, the fine-tuned (no KD) nano FP32 on Paddle Inference.  ``Δ compression`` is
what each compression step alone changes (``tinydistill report``'s compression table over every seed of the
sweep): a training step (width-pruning recovery, QAT) minus its equal-budget control (``controls: true``), a
step that does not train minus its input; the accuracy target is checked on the chain's summed Δ compression,
not on the final model minus the first row (which also holds the KD gain and the steps' extra training).
Writes ``<out>.md`` and ``<out>.json``.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tinydistill import distill  # noqa: E402,F401  (legacy program format before paddle is imported)

# issue #12: beyond the ERNIE 3.0 Tiny reference (7.8 % of FP32 size, -62 % memory, 2.13x, -0.13 points)
TARGETS = {"size_pct": 5.0, "e2e_speedup": 3.0, "rss_reduction_pct": 70.0, "accuracy_drop": 0.1}
# issue #11: the evaluation protocol's targets for the SLU results
PROTOCOL_TARGETS = {"teacher_above_no_kd_pp": 3.0, "kd_gain_pp": 0.0, "kd_gain_p": 0.05,
                    "compression_step_vs_control_pp": 0.5, "compression_step_goal_pp": 0.1}
SETS = (("dev", "dev (4,223)"), ("dev_dedup", "dev unseen in train"))


# the table's rows, in order (the row indices below depend on it); {} = the pruned vocabulary's size
ROW_LABELS = (
    'nano FP32, fine-tuned (no KD)',
    'nano FP32, distilled (logits KD)',
    '+ vocabulary pruning ({} tokens)',
    '+ width pruning ({width}, KD recovery)',
    '+ INT8 matmul (QAT)',
    '+ INT8 embedding',
    'nano FP32, no KD (ONNX Runtime)',
    'width-pruned -> ONNX Runtime dynamic INT8 (+ INT8 Gather)',
    'width-pruned -> INT4 storage, INT8 kernels (onnx-int4)',
    'nano FP32, no KD (onnxruntime-c)',
    'width-pruned -> INT8 (+ INT8 Gather) (onnxruntime-c)',
    'width-pruned -> INT4 storage, INT8 kernels (onnxruntime-c)',
    # the trade-off without width pruning: the vocabulary-pruned model exported directly
    'vocabulary-pruned, full width -> INT8 (+ INT8 Gather) (onnxruntime-c)',
    'vocabulary-pruned, full width -> INT4 storage, INT8 kernels (onnxruntime-c)',
)


def curve(history_file: Path, metric: str) -> list[list[float]]:
    """[[epoch, dev metric], ...] of one training run (its history.json), the learning curve to commit."""
    from tinydistill.distill.fsutil import read_json

    if not history_file.is_file():
        return []
    h = read_json(history_file)
    return [[round(float(e.get("epoch", 0)) + 1, 2), round(float(e[metric]), 2)]
            for e in h.get("evals", []) if metric in e]


def protocol_summary(exp: Path, teachers_exp: Path | None, prev: dict | None = None) -> tuple[list[str], dict]:
    """Issue #11's part of the table: teacher (ensemble and members) vs the no-KD student, every recipe over its
    seeds on dev and on dev unseen in train, paired KD gains, plateaus and learning curves."""
    from tinydistill.experiments.report import find_records, group, mean_std, paired_diff, to_markdown

    rows = {r.recipe: r for r in group(find_records(exp))}
    metric = next(iter(rows.values())).main_metric
    base = rows.get("no_kd")
    any_kd = next((r for r in rows.values() if r.kd), None)

    def first(row, key):
        vals = row.per_seed(key) if row is not None else {}
        return next(iter(vals.values()), None)

    teacher = {s: first(any_kd, f"teachers_mixed.{s}.{metric}") for s, _ in SETS}
    members = []
    # the first KD run whose directory is still here (records outlive run directories: a later session that
    # adds seeds has the committed records of the earlier ones, not their directories)
    kd_dirs = [Path(r["run_dir"]) for r in (any_kd.records if any_kd is not None else [])
               if (Path(r["run_dir"]) / ".stages").is_dir()]
    if kd_dirs:
        stages = kd_dirs[0] / ".stages"
        for k, marker in enumerate(sorted(stages.glob("teacher*.json"))):
            from tinydistill.distill.fsutil import read_json

            mt = read_json(marker).get("metrics", {})
            prefix = marker.stem
            members.append({"stage": prefix, "dev": mt.get(f"{prefix}.dev.{metric}", {}).get("value"),
                            "dev_dedup": mt.get(f"{prefix}.dev_dedup.{metric}", {}).get("value")})
    if not members and prev is not None:
        members = prev.get("teacher_members") or []
    member_runs = find_records(teachers_exp) if teachers_exp is not None and teachers_exp.is_dir() else []
    old_curves = (prev or {}).get("learning_curves") or {}

    def curve_of(name: str, run_dir: str) -> list:
        return curve(Path(run_dir) / "student" / "history.json", metric) or old_curves.get(name, [])
    member_rows, curves = [], {}
    config = (any_kd.records[0].get("config") or {}) if any_kd is not None else {}
    inits = [str((t or {}).get("init", "")) for t in [config.get("teacher")] + list(config.get("teachers") or [])]
    for rec in member_runs:
        mt = rec["metrics"]
        name = f"{rec.get('student', '?')} s{rec.get('seed')}"
        used = any(f"/{rec.get('run_id')}/" in init for init in inits)
        cap = ((rec.get("config") or {}).get("task") or {}).get("max_train_examples")
        member_rows.append([name, "yes" if used else "no (trained, left out)",
                            "whole split" if cap is None else f"{cap:,}", f"{mt.get(f'student.dev.{metric}', {}).get('value', float('nan')):.2f}",
                            f"{mt.get(f'student.dev_dedup.{metric}', {}).get('value', float('nan')):.2f}",
                            f"{int(mt.get('student.train_steps', {}).get('value', 0))} "
                            f"({mt.get('student.train_epochs', {}).get('value', 0):.1f})",
                            f"{int(mt.get('student.best_step', {}).get('value', 0))}"])
        label = f"teacher member {name} ({rec.get('run_id')})"
        curves[label] = curve_of(label, rec["run_dir"])

    summary, gains = {}, {}
    table = [["recipe", "seeds"] + [f"{title} {metric} (%)" for _, title in SETS]
             + [f"Δ vs no KD, {title} (pp, p)" for _, title in SETS] + ["steps run (epochs), best step, per seed"]]
    for name, row in rows.items():
        cells, gcells = [name, ", ".join(map(str, row.seeds))], []
        summary[name] = {}
        for s, _ in SETS:
            vals = row.per_seed(f"student.{s}.{metric}")
            m, sd = mean_std(list(vals.values()))
            summary[name][s] = {"mean": m, "std": sd, "per_seed": vals}
            cells.append("-" if m is None else (f"{m:.2f} ± {sd:.2f}" if sd is not None else f"{m:.2f}"))
            if base is not None and name != "no_kd":
                g = paired_diff(vals, base.per_seed(f"student.{s}.{metric}"), baseline="no_kd")
                gains.setdefault(name, {})[s] = {"pp": g.mean, "std": g.std, "p": g.p_value, "n": g.n}
                gcells.append("-" if g.mean is None else
                              f"{g.mean:+.2f} (p={g.p_value:.3f})" if g.p_value is not None else f"{g.mean:+.2f}")
            else:
                gcells.append("-")
        steps = []
        for rec in row.records:
            mt = rec["metrics"]
            steps.append(f"s{rec['seed']}: {int(mt.get('student.train_steps', {}).get('value', 0))} "
                         f"({mt.get('student.train_epochs', {}).get('value', 0):.1f}), best "
                         f"{int(mt.get('student.best_step', {}).get('value', 0))}")
            curves[f"nano {name} s{rec['seed']}"] = curve_of(f"nano {name} s{rec['seed']}", rec["run_dir"])
        table.append(cells + gcells + ["; ".join(steps)])

    no_kd = summary.get("no_kd", {}).get("dev", {}).get("mean")
    kd_recipes = [n for n in rows if n != "no_kd" and gains.get(n, {}).get("dev", {}).get("pp") is not None]
    # the best KD recipe among those with the most seeds (a one-seed recipe cannot carry the paired test)
    most = max((len(rows[n].seeds) for n in kd_recipes), default=0)
    best = max((n for n in kd_recipes if len(rows[n].seeds) == most), key=lambda n: summary[n]["dev"]["mean"],
               default=None)
    kd_gain = {"recipe": best, **{k: gains[best]["dev"][k] for k in ("pp", "p", "n")}} if best else None
    margin = teacher["dev"] - no_kd if teacher["dev"] is not None and no_kd is not None else None
    facts = {"teacher_sentence_accuracy": teacher["dev"], "teacher_sentence_accuracy_dedup": teacher["dev_dedup"],
             "teacher_members": members, "no_kd_sentence_accuracy": no_kd, "teacher_above_no_kd_pp": margin,
             "kd_gain": kd_gain, "recipes": summary, "gains": gains, "learning_curves": curves}
    lines = ["## Teacher and students (evaluation protocol)", "",
             (f"Teacher: the equal-weight logit average of {len(members)} models (multi-teacher), dev "
              f"{metric} {teacher['dev']:.2f} %, dev unseen in train {teacher['dev_dedup']:.2f} %; "
              f"teacher - no-KD student: {margin:+.2f} pp (target >= "
              f"+{PROTOCOL_TARGETS['teacher_above_no_kd_pp']:g})."
              if teacher["dev"] is not None and margin is not None else "Teacher metrics missing."), ""]
    if member_rows:
        lines += ["The candidate members, each trained alone (early stopping on dev; its training utterances: "
                  "the students' own are in their config, task.max_train_examples):", "",
                  to_markdown(["member", "in the ensemble", "training utterances", f"dev {metric} (%)", f"dev unseen {metric} (%)", "steps run (epochs)",
                               "best step"], member_rows), ""]
    lines += ["Nano students (scratch ERNIE 3.0 Tiny nano), each to its plateau:", "", to_markdown(table[0], table[1:]),
              ""]
    names = list(rows)
    for i, a in enumerate(names):  # a recipe whose students are another's (the chain recipe trains logits_kd first)
        for b in names[:i]:
            if summary[a]["dev"]["per_seed"] and summary[a]["dev"]["per_seed"] == summary[b]["dev"]["per_seed"]:
                lines.append(f"{a}'s students are {b}'s: the same losses, seeds and dev results, from runs of their "
                             f"own ({a} then goes on to its compression chain).")
    if margin is not None and margin < PROTOCOL_TARGETS["teacher_above_no_kd_pp"]:
        lines.append(f"The teacher's margin over the no-KD student, {margin:+.2f} pp, misses the "
                     f"+{PROTOCOL_TARGETS['teacher_above_no_kd_pp']:g} pp target by "
                     f"{PROTOCOL_TARGETS['teacher_above_no_kd_pp'] - margin:.2f} pp.")
    if kd_gain:
        lines.append(f"Best KD recipe with {most} seeds: {best}, {kd_gain['pp']:+.2f} pp over no KD on dev (paired t-test p = "
                     + (f"{kd_gain['p']:.3f}" if kd_gain["p"] is not None else "n/a") + f", {kd_gain['n']} seeds).")
    if margin is not None and margin <= 0:
        lines.append(f"WARNING: the teacher is not better than the no-KD student ({margin:+.2f} pp).")
    lines += ["", "Learning curves (epoch, dev sentence accuracy %; every evaluation, in the JSON):", ""]
    for name, pts in curves.items():
        if pts:
            peak = max(pts, key=lambda p: p[1])
            lines.append(f"- {name}: plateau {peak[1]:.2f} at epoch {peak[0]:g} of {pts[-1][0]:g}: "
                         + ", ".join(f"{v:.1f}" for _, v in pts))
    return lines, facts


def compression_deltas(exp: Path, recipe: str = "logits_kd_chain") -> dict[str, dict]:
    """Per compression step of ``recipe``'s runs: ``{"mean", "std", "n", "basis"}`` of Δ compression, paired by
    seed (``tinydistill report``'s compression table)."""
    from tinydistill.experiments.report import find_records, group
    from tinydistill.experiments.report_protocol import compression_table

    found = compression_table([r for r in group(find_records(exp)) if r.recipe == recipe])
    if found is None:
        return {}
    header, *body = found[2]
    return {rec["model"].partition(".")[2]: {"mean": rec["delta_compression_mean"], "std": rec["delta_compression_std"],
                                             "n": rec["delta_compression_n"], "basis": rec["delta_compression_basis"]}
            for rec in (dict(zip(header, line)) for line in body)}


#: the JSON keys of the teacher and students section (``protocol_summary``'s facts)
PROTOCOL_KEYS = ("teacher_sentence_accuracy", "teacher_sentence_accuracy_dedup", "teacher_members",
                 "no_kd_sentence_accuracy", "teacher_above_no_kd_pp", "kd_gain", "recipes", "gains",
                 "learning_curves")
PROTOCOL_HEADING = "## Teacher and students (evaluation protocol)"


def kept_protocol_section(json_file: Path) -> tuple[list[str], dict, dict]:
    """(markdown lines, facts, provenance) of the teacher and students section of an earlier run of this script:
    the lines from its .md (heading to the protocol targets line), the facts from its JSON."""
    md_file = json_file.with_suffix(".md")
    for f in (json_file, md_file):
        if not f.is_file():
            raise SystemExit(f"{f}: not found (--protocol-from needs an earlier run's JSON and the .md beside it)")
    earlier = json.loads(json_file.read_text())
    missing = [k for k in PROTOCOL_KEYS if k not in earlier]
    if missing:
        raise SystemExit(f"{json_file}: no {missing[0]!r} key; not a JSON of this script's teacher and students section")
    md = md_file.read_text().splitlines()
    try:
        start = md.index(PROTOCOL_HEADING)
    except ValueError:
        raise SystemExit(f"{md_file}: no {PROTOCOL_HEADING!r} heading") from None
    end = next((i for i in range(start, len(md)) if md[i].startswith("Protocol targets (issue #11)")), len(md))
    lines = md[start:end]
    while lines and not lines[-1].strip():
        lines.pop()
    env = earlier.get("env") or {}
    provenance = {"file": str(json_file), "date": (env.get("protocol_from") or env).get("date"),
                  "command": (env.get("protocol_from") or env).get("command")}
    return lines, {k: earlier[k] for k in PROTOCOL_KEYS}, provenance


def chain_store_note(exp: Path, recipe: str) -> str:
    """What the chain's own store holds: its teacher's dev accuracy, its KD students and its no-KD baseline."""
    from tinydistill.experiments.report import find_records, group, mean_std

    rows = {r.recipe: r for r in group(find_records(exp))}
    chain = rows.get(recipe)
    if chain is None:
        raise SystemExit(f"{exp}: no finished run of recipe {recipe!r} in its store")
    metric = chain.main_metric
    teacher = [v for v in chain.per_seed(f"teachers_mixed.dev.{metric}").values() if v is not None]
    students = list(chain.per_seed(f"student.dev.{metric}").values())
    m, sd = mean_std(students)
    parts = [f"teacher (the retrained members' ensemble) {teacher[0]:.2f} % dev {metric}" if teacher else
             "teacher accuracy not recorded",
             f"its KD students ({recipe}, seeds {', '.join(map(str, chain.seeds))}) {m:.2f}"
             + (f" ± {sd:.2f}" if sd is not None else "") + " %"]
    base = rows.get("no_kd")
    if base is not None:
        vals = base.per_seed(f"student.dev.{metric}")
        parts.append("the no-KD nano of the first row (rerun) "
                     + ", ".join(f"s{k} {v:.2f} %" for k, v in vals.items()))
    return "; ".join(parts) + "."


def run_dir(exp: Path, recipe: str) -> Path:
    found = sorted(d for d in exp.glob(f"*-{recipe}-s*") if (d / "metrics.json").is_file())
    if not found:
        raise SystemExit(f"{exp}: no finished run of recipe {recipe!r} (metrics.json missing)")
    return found[0]


def width_label(info: dict) -> str:
    """'0.75' or 'FFN 0.5, every head' from the width-pruned manifest's ``extra.width_prune``."""
    heads, ffn = info.get("heads_width", info.get("width")), info.get("ffn_width", info.get("width"))
    if heads is None:
        return "?"
    if heads == ffn:
        return f"{heads:g}"
    return f"FFN {ffn:g}, every head" if heads == 1.0 else f"heads {heads:g}, FFN {ffn:g}"


def training_note(exp: Path) -> str:
    """Steps and epochs each training stage actually ran, teacher vs no-KD student (the report's words)."""
    from tinydistill.experiments.report import find_records, group
    from tinydistill.experiments.report_protocol import teacher_margin, teacher_warnings, training_cell

    rows = group(find_records(exp))
    parts = [f"{r.recipe}: student {training_cell(r)}" for r in rows]
    parts += [f"{r.recipe}: teacher {training_cell(r, 'teacher')}" for r in [r for r in rows if r.kd][:1]]
    margins = [f"{r.recipe} {teacher_margin(r, rows).mean:+.2f} pp" for r in rows
               if teacher_margin(r, rows).mean is not None]
    text = "Trained steps (epochs): " + "; ".join(parts) + "."
    if margins:
        text += " Teacher - no-KD student (dev sentence accuracy): " + ", ".join(margins) + "."
    return " ".join([text] + teacher_warnings(rows))


def latency_worker(model_dir: str, runs: int, warmup: int, backend: str | None = None) -> int:
    """Per-call end-to-end latency of one directory in this (fresh) process, as wall time and as process
    CPU time (``time.process_time``): CPU time leaves out the waits for a core on a loaded machine."""

    from tinydistill.compress.bench import texts_of_length
    from tinydistill.compress.predictors import open_predictor

    p = open_predictor(model_dir, runtime=backend, threads=1)
    texts = texts_of_length(p, 16, 8)
    for i in range(warmup):
        p.predict([texts[i % 8]], batch_size=1)
    wall, cpu = [], []
    for i in range(runs):
        w, c = time.perf_counter(), time.process_time()
        p.predict([texts[i % 8]], batch_size=1)
        cpu.append((time.process_time() - c) * 1000.0)
        wall.append((time.perf_counter() - w) * 1000.0)
    wall.sort()
    cpu.sort()
    print("LATENCY " + json.dumps({"wall_p50": wall[len(wall) // 2], "cpu_p50": cpu[len(cpu) // 2],
                                   "cpu_mean": sum(cpu) / len(cpu), "runs": runs}))
    return 0


def cpu_latencies(dirs: list[Path], runs: int, warmup: int, rounds: int,
                  backends: list[str | None] | None = None) -> list[list[dict]]:
    """``latency_worker`` for every directory in a fresh process, ``rounds`` times in alternating order."""
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out: list[list[dict]] = [[] for _ in dirs]
    for r in range(rounds):
        order = list(range(len(dirs))) if r % 2 == 0 else list(reversed(range(len(dirs))))
        for i in order:
            backend = (backends or [None] * len(dirs))[i]
            proc = subprocess.run([sys.executable, __file__, "--latency-worker", str(dirs[i]), "--runs", str(runs),
                                   "--warmup", str(warmup), "--backend", backend or ""],
                                  capture_output=True, text=True, env=env)
            line = [l for l in proc.stdout.splitlines() if l.startswith("LATENCY ")]
            if proc.returncode != 0 or not line:
                raise RuntimeError(f"latency of {dirs[i]} failed: {proc.stderr[-1500:]}")
            out[i].append(json.loads(line[-1][len("LATENCY "):]))
            print(f"cpu latency {dirs[i]}: {out[i][-1]}", flush=True)
    return out


def main() -> int:
    if "--latency-worker" in sys.argv:
        ap = argparse.ArgumentParser()
        ap.add_argument("--latency-worker")
        ap.add_argument("--runs", type=int, default=200)
        ap.add_argument("--warmup", type=int, default=20)
        ap.add_argument("--backend", default="")
        a = ap.parse_args()
        return latency_worker(a.latency_worker, a.runs, a.warmup, a.backend or None)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("exp_dir", help="the sweep's experiment directory, e.g. runs/results-slu")
    ap.add_argument("--data-dir", default=os.environ.get("TINYDISTILL_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "slu_compression"))
    ap.add_argument("--reuse-measurements", action="store_true",
                    help="take the first seed's accuracy, latency, memory and size from the previous <out>.json and "
                         "recompute only the seed statistics (after more seeds finished)")
    ap.add_argument("--chain-recipe", default="logits_kd_chain",
                    help="the recipe whose runs carry the compression chain and its controls (results_slu.yaml)")
    ap.add_argument("--compression-from", metavar="JSON",
                    help="keep the compression rows, Δ compression and measurements of an earlier run of this script "
                         "(its JSON, e.g. the committed slu_compression.json) and recompute only the teacher and "
                         "students section from EXP_DIR: for a store whose chain has not run yet")
    ap.add_argument("--protocol-from", metavar="JSON",
                    help="keep the teacher and students section of an earlier run of this script (its JSON, and the .md "
                         "beside it) and compute the compression section from EXP_DIR: for a store that reran the "
                         "teacher's members and the chain only (run directories do not outlive a session, records do)")
    ap.add_argument("--teachers-run", default="runs/results-slu-teachers",
                    help="the experiment directory of the teacher's members (results_slu_teachers.yaml)")
    args = ap.parse_args()
    t_start = time.time()
    exp = Path(args.exp_dir)
    if sum(map(bool, (args.compression_from, args.reuse_measurements, args.protocol_from))) > 1:
        raise SystemExit("--compression-from, --protocol-from and --reuse-measurements: give one")
    kept = Path(args.compression_from) if args.compression_from else Path(args.out).with_suffix(".json")
    if (args.reuse_measurements or args.compression_from) and not kept.is_file():
        raise SystemExit(f"{kept}: no earlier JSON of this script to keep the measurements of")
    prev = json.loads(kept.read_text()) if args.reuse_measurements or args.compression_from else None
    # --compression-from: the earlier file's protocol part (members, curves) is another store's; do not fall back on it
    kept_protocol = None
    if args.protocol_from:
        protocol_lines, protocol, kept_protocol = kept_protocol_section(Path(args.protocol_from))
    else:
        protocol_lines, protocol = protocol_summary(exp, Path(args.teachers_run), None if args.compression_from else prev)
    args.reuse_measurements = args.reuse_measurements or bool(args.compression_from)
    print("\n".join(protocol_lines), flush=True)

    from tinydistill.compress.bench import bench_dirs
    from tinydistill.compress.export import export
    from tinydistill.compress.predictor import Predictor
    from tinydistill.distill.fsutil import read_json
    from tinydistill.experiments.store import cpu_model

    if args.reuse_measurements:  # the rows' labels and directories are the previous run's (they may be gone)
        # row 0 is <no-KD run>/export/paddle-inference, row 4 <KD run>/compressed/qat
        base, kd = (Path(prev["rows"][i]["dir"]).parents[1] for i in (0, 4))
    else:
        base, kd = run_dir(exp, "no_kd"), run_dir(exp, args.chain_recipe)
    side = exp / "_table_exports"

    def exported(src: Path, backend: str, name: str) -> Path:
        out = side / name
        if not (out / "manifest.json").is_file():
            print(f"export {src} -> {backend} {out}", flush=True)
            export(src, backend, out, check=True, data_dir=args.data_dir)
        return out

    if args.reuse_measurements:
        rows = [(r["model"], Path(r["dir"]), None) for r in prev["rows"]]
    else:
        comp = kd / "compressed"
        vocab = (read_json(comp / "vocab_prune" / "manifest.json").get("extra") or {}).get("vocab_prune") or {}
        nokd_onnx = exported(base / "student" / "best", "onnx", "nokd-fp32-onnx")
        int8_onnx = exported(comp / "width_prune", "onnx-int8", "width-onnx-int8")
        int4_onnx = exported(comp / "width_prune", "onnx-int4", "width-onnx-int4")
        dirs_backends = [  # (directory, backend: None = the directory's own runtime), in ROW_LABELS' order
            (base / "export" / "paddle-inference", None),
            (exported(kd / "student" / "best", "paddle-inference", "kd-fp32-pi"), None),
            (exported(comp / "vocab_prune", "paddle-inference", "vocab-pi"), None),
            (exported(comp / "width_prune", "paddle-inference", "width-pi"), None),
            (comp / "qat", None),
            (comp / "embedding_int8", None),
            (nokd_onnx, None),
            (int8_onnx, None),
            (int4_onnx, None),
            (nokd_onnx, "onnxruntime-c"),
            (int8_onnx, "onnxruntime-c"),
            (int4_onnx, "onnxruntime-c"),
            (exported(comp / "vocab_prune", "onnx-int8", "vocab-onnx-int8"), "onnxruntime-c"),
            (exported(comp / "vocab_prune", "onnx-int4", "vocab-onnx-int4"), "onnxruntime-c"),
        ]
        width = (read_json(comp / "width_prune" / "manifest.json").get("extra") or {}).get("width_prune") or {}
        rows = [(label.format(vocab.get("vocab_after", "?"), width=width_label(width)), d, b)
                for label, (d, b) in zip(ROW_LABELS, dirs_backends)]
    dirs = [d for _, d, _ in rows]
    backends = [b for _, _, b in rows]

    measured_at = None
    if args.reuse_measurements:
        # the first seed's directories are fixed once their runs finished: their dev accuracy, latency, memory
        # and size come from the previous run of this script; only what more seeds change is recomputed
        if not (len(prev["rows"]) == len(ROW_LABELS) and all(
                re.fullmatch(re.sub(r"\\\{[a-z]*\\\}", ".+", re.escape(label)), r["model"])
                for label, r in zip(ROW_LABELS, prev["rows"]))):
            raise SystemExit(f"{args.out}.json: its rows are not this table's; run without --reuse-measurements")
        keep = ("model", "dir", "runtime", "precision", "sentence_accuracy", "intent_accuracy", "slot_f1",
                "cpu_e2e_p50_ms", "cpu_e2e_p50_ms_per_round", "e2e_p50_ms", "model_p50_ms", "peak_rss_mib",
                "size_mb", "e2e_p50_ms_per_round")
        table = [{k: r[k] for k in keep if k in r} for r in prev["rows"]]
        rounds, measured_at = prev["rounds"], prev["env"]
    else:
        # accuracy of every directory on the same dev split (a directory's outputs do not depend on the runtime
        # that runs it: the onnxruntime-c predictor equals the Python one, tested)
        accuracy = {}
        for label, d, _ in rows:
            if str(d) in accuracy:
                continue
            p = Predictor.from_dir(d, threads=1, data_dir=args.data_dir)
            m = p.evaluate(p.task.load("dev"))
            accuracy[str(d)] = {k: float(v) for k, v in m.items()}
            print(f"dev {label}: {m.get('sentence_accuracy'):.2f}", flush=True)

        rounds = []
        for r in range(args.rounds):
            order = list(range(len(dirs))) if r % 2 == 0 else list(reversed(range(len(dirs))))
            load = os.getloadavg()[0]
            by = {}
            for i in order:  # every directory on the runtime its row names, in a fresh process
                by[i] = bench_dirs([dirs[i]], runtime=backends[i], batch_size=1, seq_len=16, threads=1, runs=args.runs,
                                   warmup=args.warmup, throughput_batches=(), log=lambda m: print(m, flush=True))[0]
            rounds.append({"order": order, "load1_before": load, "load1_after": os.getloadavg()[0],
                           "results": [by[i] for i in range(len(dirs))]})

        cpu = cpu_latencies(dirs, args.runs, args.warmup, args.rounds, backends)

        def med(i, key, sub=None):  # the median over rounds (the statistic; robust to one noisy round)
            return statistics.median(rd["results"][i][key][sub] if sub else rd["results"][i][key] for rd in rounds)

        table = []
        for i, (label, d, _) in enumerate(rows):
            r0 = rounds[0]["results"][i]
            table.append({"model": label, "dir": str(d), "runtime": r0["runtime"], "precision": r0["precision"],
                          "sentence_accuracy": accuracy[str(d)]["sentence_accuracy"],
                          "intent_accuracy": accuracy[str(d)].get("intent_accuracy"),
                          "slot_f1": accuracy[str(d)].get("slot_f1"),
                          "cpu_e2e_p50_ms": statistics.median(c["cpu_p50"] for c in cpu[i]),
                          "cpu_e2e_p50_ms_per_round": [c["cpu_p50"] for c in cpu[i]],
                          "e2e_p50_ms": med(i, "e2e_ms", "p50"), "model_p50_ms": med(i, "model_ms", "p50"),
                          "peak_rss_mib": med(i, "peak_rss_mib"), "size_mb": r0["size_bytes"] / 1e6,
                          "e2e_p50_ms_per_round": [rd["results"][i]["e2e_ms"]["p50"] for rd in rounds]})

    def per_round(a, b, key):  # speed-up in each round: the two directories measured minutes apart, paired
        pairs = list(zip(a.get(key + "_per_round") or [], b.get(key + "_per_round") or []))
        return [x / y for x, y in pairs] if pairs else None

    def vs(a, b):
        cpu_r, wall_r = per_round(a, b, "cpu_e2e_p50_ms"), per_round(a, b, "e2e_p50_ms")
        return {"size_pct": 100.0 * b["size_mb"] / a["size_mb"],
                # the median over rounds of each round's ratio, and those ratios' range (the spread)
                "e2e_speedup": statistics.median(cpu_r) if cpu_r else a["cpu_e2e_p50_ms"] / b["cpu_e2e_p50_ms"],
                "e2e_speedup_per_round": cpu_r,
                "wall_e2e_speedup": statistics.median(wall_r) if wall_r else a["e2e_p50_ms"] / b["e2e_p50_ms"],
                "wall_e2e_speedup_per_round": wall_r,
                "model_speedup": a["model_p50_ms"] / b["model_p50_ms"],
                "rss_reduction_pct": 100.0 * (1 - b["peak_rss_mib"] / a["peak_rss_mib"]),
                "accuracy_delta": b["sentence_accuracy"] - a["sentence_accuracy"]}

    fp32, ort_fp32 = table[0], table[6]
    for row in table:
        row["vs_fp32_nano"] = vs(fp32, row)
    ort_row = table[7]
    ort_row["vs_fp32_nano_same_runtime"] = vs(ort_fp32, ort_row)
    # same runtime as their FP32 row: Python ONNX Runtime (row 6) for rows 7-8, onnxruntime-c (row 9) for 10-11
    for i, ref in ((8, 6), (10, 9), (11, 9), (12, 9), (13, 9)):
        table[i]["vs_fp32_nano_same_runtime"] = vs(table[ref], table[i])

    if args.compression_from:  # the earlier run's Δ compression, over the seeds of its store
        deltas = {label: prev["rows"][i].get("delta_compression")
                  for i, label in ((2, "vocab_prune"), (3, "width_prune"), (4, "qat"), (5, "embedding_int8"))}
    else:
        deltas = compression_deltas(exp, args.chain_recipe)
    for i, label in ((2, "vocab_prune"), (3, "width_prune"), (4, "qat"), (5, "embedding_int8")):
        table[i]["delta_compression"] = deltas.get(label)
    # the ONNX Runtime dynamic INT8 export does not train: its effect is its accuracy minus its input's
    table[7]["delta_compression"] = {"mean": table[7]["sentence_accuracy"] - table[3]["sentence_accuracy"],
                                     "std": None, "n": 1, "basis": "step - input (no training)"}
    # INT4 storage does not train either: its effect is its accuracy minus the INT8 export's
    # the full-width exports: the INT8 export minus the vocabulary-pruned FP32 model it comes from
    table[12]["delta_compression"] = {"mean": table[12]["sentence_accuracy"] - table[2]["sentence_accuracy"],
                                      "std": None, "n": 1, "basis": "step - input (no training)"}
    for i, ref in ((8, 7), (11, 10), (13, 12)):
        table[i]["delta_compression"] = {"mean": table[i]["sentence_accuracy"] - table[ref]["sentence_accuracy"],
                                         "std": None, "n": 1, "basis": "step - input (no training)"}

    def chain(indices):
        parts = [table[i].get("delta_compression") for i in indices]
        return None if any(p is None or p["mean"] is None for p in parts) else sum(p["mean"] for p in parts)

    chain_pi, chain_ort, chain_int4 = chain([2, 3, 4, 5]), chain([2, 3, 7]), chain([2, 3, 7, 8])
    chain_full8, chain_full4 = chain([2, 12]), chain([2, 12, 13])
    steps_vs_control = {k: v["mean"] for k, v in deltas.items() if v and v.get("mean") is not None}
    protocol_met = {
        "teacher_above_no_kd_pp": protocol["teacher_above_no_kd_pp"] is not None
        and protocol["teacher_above_no_kd_pp"] >= PROTOCOL_TARGETS["teacher_above_no_kd_pp"],
        "kd_gain": bool(protocol["kd_gain"]) and protocol["kd_gain"]["pp"] > PROTOCOL_TARGETS["kd_gain_pp"]
        and protocol["kd_gain"]["p"] is not None and protocol["kd_gain"]["p"] < PROTOCOL_TARGETS["kd_gain_p"],
        "compression_step_vs_control_pp": bool(steps_vs_control) and all(
            abs(v) <= PROTOCOL_TARGETS["compression_step_vs_control_pp"] for v in steps_vs_control.values()),
        "compression_step_goal_pp": bool(steps_vs_control) and all(
            abs(v) <= PROTOCOL_TARGETS["compression_step_goal_pp"] for v in steps_vs_control.values())}
    stage_s = dict(prev.get("stage_seconds") or {}) if args.reuse_measurements and not args.compression_from else {}
    timed = (("no KD", base), ("KD", kd)) if not args.reuse_measurements else ()
    if args.compression_from:  # this store's runs (the compression section's are the earlier file's)
        timed = (("no KD", run_dir(exp, "no_kd")), ("KD", run_dir(exp, "logits_kd")))
    for label, run in timed:
        for marker in sorted((run / ".stages").glob("*.json"), key=lambda m: read_json(m).get("finished_at", 0)):
            stage = marker.stem
            if stage != "teacher" and stage != "report":
                stage_s[f"{stage} ({label})"] = read_json(marker)["seconds"]
    teacher_done = sorted((exp / "_teachers").glob("*/.done.json"))
    if teacher_done and not args.reuse_measurements:
        stage_s = {"teacher": read_json(teacher_done[0])["seconds"], **stage_s}
    cmd = "python experiments/results/make_slu_table.py " + " ".join(sys.argv[1:])
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), {cpu_model()}",
           "run_seconds": round(time.time() - t_start, 1), "command": cmd,
           "load1": [(rd["load1_before"], rd["load1_after"]) for rd in rounds]}
    if args.compression_from:  # the compression section is the earlier file's, the rest this run's
        env = {**env, "compression_from": {"file": str(kept), **measured_at}}
    elif measured_at is not None:  # the latency/memory/size figures are those of the earlier run
        env = {**measured_at, "seed_statistics_updated": env["date"], "update_command": cmd}
    if kept_protocol is not None:  # the teacher and students section is the earlier file's, the rest this run's
        env = {**env, "protocol_from": kept_protocol}
    this_store = chain_store_note(exp, args.chain_recipe) if kept_protocol is not None else None

    def fmt_ratio(row, key):
        v = row["vs_fp32_nano"]
        return {"size": f"{v['size_pct']:.1f} %", "lat": f"{v['e2e_speedup']:.2f}x", "wlat": f"{v['wall_e2e_speedup']:.2f}x",
                "rss": f"{-v['rss_reduction_pct']:+.0f} %", "acc": f"{v['accuracy_delta']:+.2f}"}[key]

    lines = ["# NLPCC 2018 SLU: ensemble teacher -> ERNIE 3.0 Tiny nano, KD and compression (no pretrained weights)", "",
             "Every student is trained from random initialisation (no pretrained weights on this machine) on the same "
             "fixed 6,000 of the 17,129 training utterances (task.max_train_examples, to fit the 2-core budget; the "
             "teacher's members' training utterances are in their table) and "
             "evaluated on the full dev split; at most 15 epochs, the learning rate decaying linearly to 0, early "
             "stopping on dev sentence accuracy with patience 5 epochs (a run that ends at epoch 15 ran the whole "
             "schedule; its curve below shows whether it had levelled off). For "
             "reference, the ERNIE 3.0 Tiny example's pretrained nano reports 82.34 %.", "",
             *protocol_lines, "",
             "Protocol targets (issue #11): teacher >= +3 pp over the no-KD student; KD gain > 0 with paired "
             "p < 0.05; every compression step within 0.5 pp of its control (goal 0.1). Met: "
             + json.dumps(protocol_met) + ". Δ compression per step (mean over seeds): "
             + ", ".join(f"{k} {v:+.2f} pp" for k, v in steps_vs_control.items()) + ".", "",
             "## Compression (first seed's directories)", "",
             *([f"Kept from `{kept}` (`--compression-from`): this section's rows, Δ compression and measurements are "
                f"those of `{env['compression_from'].get('command')}` at {env['compression_from'].get('date')}, on "
                f"the students of that file's store, not on the students above (whose chain, recipe "
                f"`{args.chain_recipe}`, has not run). Its teacher: "
                + (f"{prev['teacher_sentence_accuracy']:.2f} % dev sentence accuracy"
                   if prev.get("teacher_sentence_accuracy") is not None else "not recorded")
                + f", its no-KD nano {prev.get('no_kd_sentence_accuracy') or float('nan'):.2f} %.", ""]
               if args.compression_from else []),
             *([f"The teacher and students section above is kept from `{kept_protocol['file']}` (`--protocol-from`: "
                f"`{kept_protocol.get('command')}`, {kept_protocol.get('date')}). This section's chain ran in a later "
                f"session on students distilled from the teacher's members retrained there (run directories do not "
                f"outlive a session; the same configs and seeds, on another CPU, do not give bit-identical models): "
                + this_store, ""] if kept_protocol is not None else []),
             "| model | runtime | dev sentence acc (%) | Δ acc vs first row (pp) | Δ compression (pp) | "
             "latency p50, CPU ms (speed-up) | latency p50, wall ms (speed-up) | peak RSS MiB (change) | "
             "size MB (% of FP32) |",
             "|---|---|---|---|---|---|---|---|---|"]

    def fmt_delta(d):
        if d is None:
            return "-"
        if d["mean"] is None:
            return "n/a (trains; no control)"
        sd = f" ± {d['std']:.2f}" if d.get("std") is not None else ""
        return f"{d['mean']:+.2f}{sd} ({'vs control' if d['basis'] == 'step - control' else 'vs input'}, n={d['n']})"

    for row in table:
        lines.append(f"| {row['model']} | {row['runtime']} {row['precision']} | {row['sentence_accuracy']:.2f} | "
                     f"{fmt_ratio(row, 'acc')} | {fmt_delta(row.get('delta_compression'))} | "
                     f"{row['cpu_e2e_p50_ms']:.3f} ({fmt_ratio(row, 'lat')}) | "
                     f"{row['e2e_p50_ms']:.3f} ({fmt_ratio(row, 'wlat')}) | "
                     f"{row['peak_rss_mib']:.1f} ({fmt_ratio(row, 'rss')}) | "
                     f"{row['size_mb']:.2f} ({fmt_ratio(row, 'size')}) |")
    final = table[5]["vs_fp32_nano"]
    ort = ort_row["vs_fp32_nano_same_runtime"]

    def verdict(v, compression):
        acc = compression if compression is not None else v["accuracy_delta"]
        ok = {"size": v["size_pct"] <= TARGETS["size_pct"], "speed": v["e2e_speedup"] >= TARGETS["e2e_speedup"],
              "rss": v["rss_reduction_pct"] >= TARGETS["rss_reduction_pct"],
              "acc": acc >= -TARGETS["accuracy_drop"]}
        acc_text = (f"accuracy change from compression {compression:+.2f} pp (summed Δ compression; final model vs the "
                    f"first row {v['accuracy_delta']:+.2f} pp, KD and extra training included)"
                    if compression is not None else
                    f"accuracy {v['accuracy_delta']:+.2f} pp vs the first row (no controls: KD and the steps' extra "
                    "training included)")
        mark = {True: "met", False: "missed"}
        t = TARGETS

        def spread(key):
            r = v.get(key + "_per_round")
            return f", per round {min(r):.2f}-{max(r):.2f}x" if r and len(r) > 1 else ""

        return (f"size {v['size_pct']:.1f} % of FP32 (target <= {t['size_pct']:g} %: {mark[ok['size']]}), end-to-end "
                f"speed-up {v['e2e_speedup']:.2f}x in CPU time (median over rounds{spread('e2e_speedup')}; target >= "
                f"{t['e2e_speedup']:g}x: {mark[ok['speed']]}; wall clock {v['wall_e2e_speedup']:.2f}x"
                f"{spread('wall_e2e_speedup')}), "
                f"peak memory {v['rss_reduction_pct']:.0f} % lower (target >= {t['rss_reduction_pct']:g} %: "
                f"{mark[ok['rss']]}), {acc_text} (target >= -{t['accuracy_drop']:g}: {mark[ok['acc']]})"), ok

    text_final, ok_final = verdict(final, chain_pi)
    text_ort, ok_ort = verdict(ort, chain_ort)
    text_ort4, ok_ort4 = verdict(table[8]["vs_fp32_nano_same_runtime"], chain_int4)
    text_c8, _ = verdict(table[10]["vs_fp32_nano_same_runtime"], chain_ort)
    text_c4, ok_c4 = verdict(table[11]["vs_fp32_nano_same_runtime"], chain_int4)
    text_f8, ok_f8 = verdict(table[12]["vs_fp32_nano_same_runtime"], chain_full8)
    text_f4, ok_f4 = verdict(table[13]["vs_fp32_nano_same_runtime"], chain_full4)
    lines += ["", f"Targets (issue #12, beyond the ERNIE 3.0 Tiny reference): size <= {TARGETS['size_pct']:g} % of FP32, "
              f"end-to-end speed-up >= {TARGETS['e2e_speedup']:g}x, peak RSS >= {TARGETS['rss_reduction_pct']:g} % "
              f"lower, <= {TARGETS['accuracy_drop']:g} points lost to compression; every ratio against the FP32 "
              "model on the same runtime.", "",
              f"- Paddle Inference, FP32 nano -> + INT8 embedding: {text_final}.",
              f"- ONNX Runtime, FP32 nano ONNX -> width-pruned dynamic INT8: {text_ort}.",
              f"- ONNX Runtime, FP32 nano ONNX -> width-pruned INT4 storage (INT8 kernels): {text_ort4}.",
              f"- onnxruntime-c, FP32 nano ONNX -> width-pruned dynamic INT8: {text_c8}.",
              f"- onnxruntime-c, FP32 nano ONNX -> width-pruned INT4 storage (INT8 kernels): {text_c4}.",
              "",
              "Without width pruning, the vocabulary-pruned model exported directly (what width pruning buys in size, speed and memory):",
              "",
              f"- onnxruntime-c, FP32 nano ONNX -> full-width dynamic INT8: {text_f8}.",
              f"- onnxruntime-c, FP32 nano ONNX -> full-width INT4 storage (INT8 kernels): {text_f4}.", "",
              "Latency: batch 1, 16 tokens, 1 thread, end to end (tokenise + run + decode), p50 over "
              f"{args.runs} calls after {args.warmup} warm-up calls, median of {len(rounds)} rounds in alternating "
              "order, every directory in a fresh process (a speed-up is the median of the rounds' ratios, each round's two "
              "directories measured minutes apart; its range over rounds is the spread). *CPU ms* is the process CPU time per call "
              "(`time.process_time`), the figure to compare on this shared machine; *wall ms* "
              "(`tinydistill bench`, `compress.bench`) also counts the time the process waited for a core, which "
              "on a loaded machine varies several-fold between rounds (per-round values in the JSON). Peak RSS: `ru_maxrss` of a "
              "fresh process that loaded and ran only that model (the Paddle Inference rows include the ~300 MiB "
              "the paddle library itself takes; the ONNX Runtime rows do not import paddle). Size: files a "
              "deployment needs. Ratios vs the first row.", "",
              "Δ compression: width-pruning recovery and QAT train (distilling from their FP32 input), so their "
              "accuracy minus their input's credits compression with extra training; each is compared with its "
              "equal-budget control instead, the same input trained with the same data, losses, teacher and steps "
              "but not compressed (`controls: true`). Steps that do not train are compared with their input. "
              "Per seed, paired, from the sweep's result store; the other columns are the first seed's "
              f"directories ({kd.name}, {base.name}).",
              training_note(exp),
              "Load average (1 min) before/after each round: "
              + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in env["load1"]) + ".", "",
              f"Command: `{env['command']}` (after `bash experiments/results/run_slu.sh`, which runs the sweeps)  ",
              *([f"Compression section: `{env['compression_from'].get('command')}` "
                 f"({env['compression_from'].get('date')}), kept with `--compression-from`.  "]
                if args.compression_from else []),
              *([f"Teacher and students section: `{kept_protocol.get('command')}` ({kept_protocol.get('date')}), "
                 "kept with `--protocol-from`.  "] if kept_protocol is not None else []),
              f"Date: {env['date']}; run time {env['run_seconds']} s (exports, evaluation, benchmarks); machine: "
              f"{env['machine']}."
              + (f" Seed statistics updated {env['seed_statistics_updated']} with `{env['update_command']}` "
                 "(the first seed's measurements above kept)." if "seed_statistics_updated" in env else ""), "",
              "Sweep run time by stage (several runs in parallel on the 2 shared cores): "
              + ", ".join(f"{k} {v:.0f} s" for k, v in stage_s.items()) + "."]
    md = "\n".join(lines) + "\n"
    print(md)
    out = Path(args.out)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps({"env": env, "stage_seconds": stage_s, "rows": table, "rounds": rounds,
                                                    "targets": {**TARGETS, **PROTOCOL_TARGETS}, "met": {**protocol_met, **{
                                                        runtime: {"size_pct": ok["size"], "e2e_speedup": ok["speed"],
                                                                  "rss_reduction_pct": ok["rss"],
                                                                  "accuracy_drop": ok["acc"]}
                                                        for runtime, ok in (("paddle-inference", ok_final),
                                                                            ("onnxruntime", ok_ort4),
                                                                            ("onnxruntime-c", ok_c4))}},
                                                    # the trade-off rows (not the shipped chain): no width pruning
                                                    "met_without_width_pruning": {
                                                        name: {"size_pct": ok["size"], "e2e_speedup": ok["speed"],
                                                               "rss_reduction_pct": ok["rss"],
                                                               "accuracy_drop": ok["acc"]}
                                                        for name, ok in (("onnxruntime-c int8", ok_f8),
                                                                         ("onnxruntime-c int4", ok_f4))},
                                                    "compression_step_vs_control_pp": steps_vs_control,
                                                    **protocol}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
