"""Which members make the SLU results' teacher (results_slu.yaml): every candidate member of
results_slu_teachers.yaml alone, and the equal-weight logit average (``distill.multiteacher.evaluate_mixture``,
what a multi-teacher run distils from) of the first two and, where more are given, of all of them, on the dev split.

    python experiments/results/check_slu_ensemble.py [--runs runs/results-slu-teachers] [--data-dir ../shared/data]
        [--members RUN_ID ...]

The default members are the two micro models results_slu_teachers.yaml trains on the whole training split.  The
earlier candidates, trained on the students' 6,000 utterances (``tinydistill sweep
experiments/configs/results_slu_teachers.yaml --set task.max_train_examples=6000 --cells 0-2 ...``), are
``--members micro-finetune-s11-f2f58fa1 micro-finetune-s12-7b3131f5 bilstm-finetune-s11-a430940e``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

MEMBERS = ("micro-finetune-s11-1b0301cc", "micro-finetune-s12-a6da3036")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/results-slu-teachers")
    ap.add_argument("--data-dir", default="../shared/data")
    ap.add_argument("--members", nargs="+", default=list(MEMBERS),
                    help="run ids under --runs; the first two are averaged, and all of them where more are given")
    args = ap.parse_args()
    from tinydistill.distill.config import MixingConfig
    from tinydistill.distill.modeldir import load_model_dir
    from tinydistill.distill.multiteacher import evaluate_mixture
    from tinydistill.tasks import build_task

    task = build_task("nlpcc2018_slu", data_dir=args.data_dir, max_seq_length=16, dev_ratio=0.2, split_seed=42)
    dev = task.load("dev")
    models = []
    for name in args.members:
        model, tok, _ = load_model_dir(Path(args.runs) / name / "student" / "best")
        model.eval()
        models.append((model, tok))
    fixed = MixingConfig(mode="fixed")
    for name, m in zip(args.members, models):
        print(f"{name}: {evaluate_mixture([m], task, dev, fixed)['sentence_accuracy']:.2f}")
    pairs = [(f"{args.members[0]} + {args.members[1]}", [0, 1])] if len(models) > 1 else []
    for label, idx in pairs + ([("all of them", list(range(len(models))))] if len(models) > 2 else []):
        acc = evaluate_mixture([models[i] for i in idx], task, dev, fixed)["sentence_accuracy"]
        print(f"logit average, {label}: {acc:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
