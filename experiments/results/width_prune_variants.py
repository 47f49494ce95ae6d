"""Width pruning against its equal-budget control, for several widths and recovery schedules, on finished
students: does a longer recovery or a milder width bring the step within the 0.1-point goal (issue #12)?

    python experiments/results/width_prune_variants.py 'runs/results-slu/nano-logits_kd-s*/student/best' \
        --variant w75-e2:0.75:2:2e-4 --variant w75-e5:0.75:5:2e-4 --variant ffn50-e2:1.0/0.5:2:2e-4 \
        [--data-dir ../shared/data] [--work /tmp/width-variants] [--out experiments/results/slu_compression/width_prune_variants]

Per student (its seed is read from the directory name, ``-s<N>-``): the vocabulary is pruned as in the chain
(``vocab_prune``, defaults), then every variant ``NAME:WIDTH:EPOCHS:LR`` (WIDTH: one fraction for heads and FFN neurons, or HEADS/FFN) runs ``width_prune`` with the recovery of
``results_slu.yaml``'s chain (soft CE T = 1 to the unpruned input + 0.5 x gold + hidden-state MSE, batch 64) at
that width, epochs and learning rate, and its control (``compress.controls.run_control``: the same vocabulary-pruned
input trained uncompressed with the same steps, data, losses and teacher).  Δ = step - control, per seed, and
their mean.  Each finished (student, variant) is appended to ``<out>.jsonl`` at once and skipped when the script
runs again (resumable); ``<out>.md`` is rewritten from all of them.  One thread, the student's seed: a rerun on the
same CPU model repeats the figures.
"""
from __future__ import annotations

import argparse
import glob
import json
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

RECOVERY_LOSSES = [{"type": "soft_ce", "temperature": 1.0}, {"type": "hard_ce", "weight": 0.5},
                   {"type": "hidden_mse", "weight": 1.0}]


def parse_variant(text: str) -> dict:
    parts = text.split(":")
    if len(parts) != 4:
        raise SystemExit(f"--variant {text!r}: expected NAME:WIDTH:EPOCHS:LR, e.g. w75-e2:0.75:2:2e-4")
    try:
        heads, _, ffn = parts[1].partition("/")
        return {"name": parts[0], "heads_width": float(heads), "ffn_width": float(ffn or heads),
                "epochs": int(parts[2]), "lr": float(parts[3])}
    except ValueError as exc:
        raise SystemExit(f"--variant {text!r}: {exc} (expected NAME:WIDTH:EPOCHS:LR)") from None


def seed_of(student: Path) -> int:
    m = re.search(r"-s(\d+)-", str(student))
    if not m:
        raise SystemExit(f"{student}: no '-s<seed>-' in the path (a sweep run directory's student, e.g. "
                         "runs/results-slu/nano-logits_kd-s1-be1c92ad/student/best)")
    return int(m.group(1))


def run_one(student: Path, seed: int, v: dict, work: Path, data_dir: str) -> dict:
    from tinydistill.compress.controls import run_control
    from tinydistill.compress.steps import StepContext, step_params, vocab_prune, width_prune

    ctx = StepContext(data_dir=data_dir, seed=seed, threads=1, log=lambda m: print(m, flush=True))
    root = work / f"s{seed}"
    vocab = root / "vocab"
    if not (vocab / "report.json").is_file():
        vocab_prune(student, vocab, {}, ctx)
    params = {"heads_width": v["heads_width"], "ffn_width": v["ffn_width"],
              "recover": {"epochs": v["epochs"], "lr": v["lr"], "batch_size": 64, "losses": RECOVERY_LOSSES}}
    t0 = time.time()
    rep = width_prune(vocab, root / v["name"], params, ctx)
    t1 = time.time()
    steps = rep["recovery"]["steps"]
    ctl = run_control("width_prune", vocab, root / f"{v['name']}-control", step_params("width_prune", params), ctx,
                      max_steps=steps)
    vocab_acc = json.loads((vocab / "report.json").read_text())["dev"]["sentence_accuracy"]
    return {"student": str(student), "seed": seed, **v, "heads_per_layer": rep["heads_per_layer"],
            "intermediate_per_layer": rep["intermediate_per_layer"], "steps": steps, "best_step": rep["recovery"]["best_step"],
            "input": vocab_acc, "before_recovery": rep["dev_metrics_before_recovery"]["sentence_accuracy"],
            "step": rep["dev"]["sentence_accuracy"], "control": ctl["dev"]["sentence_accuracy"],
            "control_best_step": ctl["best_step"], "seconds_step": round(t1 - t0), "seconds_control": round(time.time() - t1)}


def width_text(r: dict) -> str:
    # what the pruned model kept per layer (its report; the same in every layer here)
    kept = (f" ({'/'.join(map(str, sorted(set(r['heads_per_layer']))))} heads, "
            f"{'/'.join(map(str, sorted(set(r['intermediate_per_layer']))))} neurons)")
    return (f"{r['heads_width']:g}" if r["heads_width"] == r["ffn_width"] else
            f"heads {r['heads_width']:g}, FFN {r['ffn_width']:g}") + kept


def write_md(rows: list[dict], out: Path, command: str) -> str:
    lines = ["# Width pruning vs its equal-budget control: widths and recovery schedules", "",
             "Each row: one student's vocabulary-pruned model (the chain's input to width pruning), pruned to the "
             "width and recovered for the epochs at the learning rate given, and its control (the same input trained "
             "uncompressed with the same steps, data, losses and teacher). Dev sentence accuracy (%) on the whole dev "
             "split; Δ = step - control.", "",
             "| variant | width kept | recovery epochs, lr | seed | input | pruned, before recovery | pruned, recovered "
             "(best step / steps) | control (best step) | Δ vs control (pp) | Δ vs input (pp) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (-r["heads_width"], -r["ffn_width"], r["epochs"], r["lr"], r["name"], r["seed"])):
        lines.append(f"| {r['name']} | {width_text(r)} | {r['epochs']}, {r['lr']:g} | {r['seed']} | {r['input']:.2f} | "
                     f"{r['before_recovery']:.2f} | {r['step']:.2f} ({r['best_step']} / {r['steps']}) | "
                     f"{r['control']:.2f} ({r['control_best_step']}) | {r['step'] - r['control']:+.2f} | "
                     f"{r['step'] - r['input']:+.2f} |")
    lines += ["", "Mean over seeds:", ""]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["name"], []).append(r)
    for name, rs in by.items():
        d = [r["step"] - r["control"] for r in rs]
        sd = f" ± {statistics.stdev(d):.2f}" if len(d) > 1 else ""
        lines.append(f"- {name} (kept: {width_text(rs[0])}; {rs[0]['epochs']} epochs at {rs[0]['lr']:g}): Δ vs control "
                     f"{statistics.mean(d):+.2f}{sd} pp over seeds {sorted(r['seed'] for r in rs)}")
    made_by: dict[str, list[str]] = {}
    for r in rows:
        made_by.setdefault(r.get("command") or "-", []).append(f"{r['name']} s{r['seed']}")
    lines += ["", "Rows produced by:", ""]
    lines += [f"- `{cmd}`: {', '.join(which)}" for cmd, which in made_by.items()]
    lines += ["", f"This file: `{command}`"]
    md = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(md)
    return md


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("students", help="glob of student model directories (quote it)")
    ap.add_argument("--variant", action="append", default=[], type=parse_variant,
                    help="NAME:WIDTH:EPOCHS:LR (repeatable); none: rewrite <out>.md from <out>.jsonl only")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--work", default="/tmp/width-prune-variants", help="model directories go here (large)")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "slu_compression" / "width_prune_variants"))
    args = ap.parse_args()
    students = sorted(Path(p) for p in glob.glob(args.students))
    if not students:
        raise SystemExit(f"{args.students}: no directory matches (a glob of finished students' model directories)")
    out = Path(args.out)
    this_command = "python experiments/results/width_prune_variants.py " + " ".join(
        f"'{a}'" if "*" in a else a for a in sys.argv[1:])
    log = out.with_suffix(".jsonl")
    done = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    seen = {(r["seed"], r["name"]) for r in done}
    for v in args.variant:
        for student in students:
            seed = seed_of(student)
            if (seed, v["name"]) in seen:
                continue
            print(f"== {v['name']} seed {seed}: {student}", flush=True)
            row = {**run_one(student, seed, v, Path(args.work), args.data_dir), "command": this_command}
            with log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done.append(row)
            print(f"   step {row['step']:.2f}, control {row['control']:.2f}: Δ {row['step'] - row['control']:+.2f} pp",
                  flush=True)
    print(write_md(done, out, this_command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
