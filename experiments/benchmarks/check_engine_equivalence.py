"""Same seed, same data, 1 thread: does the engine give the previous loop's result?

    python experiments/benchmarks/check_engine_equivalence.py [--previous-commit 8e9ef8f] [--steps 24]

Trains a small ERNIE student on 480 ChnSentiCorp reviews, fine-tuning (hard labels) and with KD from a small
teacher (teacher_cache off: the previous loop ran that teacher every step), evaluating every 8 steps, in fresh
processes:
  previous          the loop at ``--previous-commit`` (git worktree)
  new-compat        this tree with the previous loop's order and batch size: ``length_bucketing: false``,
                    ``eval_batch_size: 64``, ``threads: 1``
  new-default       this tree with its defaults (length bucketing, eval batch 256), ``threads: 1``
each with MKL's default dispatch (``MKL_DEBUG_CPU_TYPE`` empty) and, on AMD, again with MKL's AVX2 path.
Prints every evaluation's dev accuracy and a hash of the final weights, and says where they differ.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WORKER = r"""
import sys, json, hashlib, tempfile
sys.path.insert(0, sys.argv[1])
import paddle
from pathlib import Path
from tinydistill.distill.config import DistillConfig
from tinydistill.distill.trainer import train
from tinydistill.tasks import build_task
from tinydistill.tasks.tokenization import ErnieWordPieceTokenizer
from tinydistill.teachers.base import build_model
data = Path(sys.argv[2]); extra = json.loads(sys.argv[4])
task = build_task("chnsenticorp", data_dir=str(data), max_seq_length=48)
tok = ErnieWordPieceTokenizer(data / "vocab" / "ernie-3.0" / "vocab.txt")
paddle.seed(1)
small = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128)
teacher = build_model("teacher", "ernie-3.0-tiny-nano-v2-zh", task.heads(), vocab_size=tok.vocab_size, **small)
student = build_model("student", "ernie-3.0-tiny-pico-v2-zh", task.heads(), vocab_size=tok.vocab_size,
                      num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64)
cfg = DistillConfig.from_dict({"epochs": 100, "max_steps": int(sys.argv[3]), "lr": 1e-3, "batch_size": 16,
                               "eval_every": 8, "progress": False, "teacher_cache": "off",
                               "losses": [{"type": "hard_ce"}] + ([{"type": "soft_ce", "temperature": 2.0}]
                                                                  if sys.argv[5] == "kd" else []), **extra})
with tempfile.TemporaryDirectory() as tmp:
    res = train(student, tok, task, task.load("train")[:480], task.load("dev")[:200], cfg, tmp,
                teachers=[(teacher, tok)] if sys.argv[5] == "kd" else [])
h = hashlib.sha1(b"".join(v.numpy().tobytes() for _, v in sorted(student.state_dict().items()))).hexdigest()[:16]
print("RESULT " + json.dumps({"evals": [round(e["accuracy"], 4) for e in res.history], "weights": h}))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("TINYDISTILL_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--previous-commit", default="8e9ef8f")
    ap.add_argument("--steps", type=int, default=24)
    args = ap.parse_args()
    tree = Path(tempfile.gettempdir()) / f"tinydistill-prev-{args.previous_commit}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.previous_commit],
                       check=True, capture_output=True)
    script = Path(tempfile.gettempdir()) / "tinydistill_equivalence_worker.py"
    script.write_text(WORKER)
    sides = {"previous": (tree, {}),
             "new-compat": (ROOT, {"length_bucketing": False, "eval_batch_size": 64, "threads": 1}),
             "new-default": (ROOT, {"threads": 1})}
    mkl = [("MKL default dispatch", "")]
    if "AuthenticAMD" in Path("/proc/cpuinfo").read_text():
        mkl.append(("MKL AVX2 path (MKL_DEBUG_CPU_TYPE=5)", "5"))
    results = {}
    for label, value in mkl:
      for mode in ("ft", "kd"):
        for name, (root, extra) in sides.items():
            env = dict(os.environ, MKL_DEBUG_CPU_TYPE=value, OMP_NUM_THREADS="1")
            proc = subprocess.run([sys.executable, str(script), str(root), args.data_dir, str(args.steps),
                                   json.dumps(extra), mode], capture_output=True, text=True, env=env,
                                  cwd=tempfile.gettempdir())
            line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
            if proc.returncode or not line:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{name} ({label}) failed")
            r = results[(label, mode, name)] = json.loads(line[-1][7:])
            print(f"{label:<38} {mode} {name:<12} dev accuracy per eval {r['evals']}  weights {r['weights']}",
                  flush=True)
    for label, _ in mkl:
        for mode in ("ft", "kd"):
            prev, compat = results[(label, mode, "previous")], results[(label, mode, "new-compat")]
            verdict = ("identical metrics and weights" if prev == compat else
                       "identical metrics, weights differ" if prev["evals"] == compat["evals"] else "metrics differ")
            print(f"{label}, {mode}: new-compat vs previous: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
