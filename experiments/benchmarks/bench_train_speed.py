"""Training speed: TinyDistill's loop (``distill.trainer.train``, plain fine-tuning, hard_ce only) vs
paddlenlp's ``Trainer`` fine-tuning the same student on the same data, in one run, interleaved; every
measurement in a fresh process (a paddlenlp ``Trainer.train()`` leaves process state behind that breaks a
later ``distill.trainer.train`` in the same process, see the results notes).

    python experiments/benchmarks/bench_train_speed.py [--data-dir DIR] [--student ernie-3.0-tiny-nano-v2-zh]
        [--n-train 2048] [--max-len 64] [--batch-size 32] [--steps 40] [--rounds 2] [--json PATH] [--md PATH]

Sides (each a fixed number of optimisation steps from the same initial weights, AdamW, linear decay with
10 % warm-up, weight decay 0.01, global-norm clip 1.0, batches padded to their longest example):

  tinydistill             distill.trainer.train with losses [hard_ce], no teacher
  paddlenlp-trainer       paddlenlp.trainer.Trainer(criterion=CrossEntropyLoss) on the *same model object
                          class and initial weights* (TinyDistill's ERNIE wrapped to return the logits)
  paddlenlp-trainer-hf    Trainer on paddlenlp's own ErnieForSequenceClassification with the same config
                          (the ERNIE 3.0 Tiny example's model; its own random init)

Examples/s = steps x batch / loop seconds (TinyDistill: ``TrainResult.train_seconds``, optimisation steps
only; Trainer: its ``train_runtime``, the training loop).  "wall" is the whole ``train()`` call (TinyDistill:
+ encoding the data, one dev evaluation and the checkpoint write; Trainer: + set-up).  "CPU" is the process CPU time (``time.process_time()``) of the whole call: on a loaded
machine it leaves out the time the process waited for a core, which wall-clock figures include.  Sides
alternate in ``--rounds`` rounds (order reversed every other round) so background load hits them alike; the
load average is recorded per measurement.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("TINYDISTILL_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--student", default="ernie-3.0-tiny-nano-v2-zh")
    ap.add_argument("--n-train", type=int, default=2048)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--md", metavar="PATH", help="also write a markdown table (with command, machine, date)")
    ap.add_argument("--side", help=argparse.SUPPRESS)  # worker: run one side, print its figures as JSON
    args = ap.parse_args()
    if args.side is None:
        return orchestrate(args)

    import numpy as np
    import paddle
    from paddlenlp.trainer import Trainer, TrainingArguments
    from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification

    from distill.config import DistillConfig
    from distill.trainer import train
    from tasks import build_task
    from tasks.tokenization import ErnieWordPieceTokenizer
    from teachers.base import build_model

    data = Path(args.data_dir)
    task = build_task("chnsenticorp", data_dir=str(data), max_seq_length=args.max_len)
    tok = ErnieWordPieceTokenizer(data / "vocab" / "ernie-3.0" / "vocab.txt")
    train_ex = task.load("train")[:args.n_train]
    dev_ex = task.load("dev")[:32]
    paddle.seed(0)
    student0 = build_model("student", args.student, task.heads(), vocab_size=tok.vocab_size)
    init_state = {k: v.clone() for k, v in student0.state_dict().items()}

    # the Trainer's data: the same encodings TinyDistill computes (same tokenizer, same truncation)
    encoded = [task.encode(ex, tok) for ex in train_ex]

    class DS(paddle.io.Dataset):
        def __len__(self):
            return len(encoded)

        def __getitem__(self, i):
            e = encoded[i]
            return {"input_ids": e.input_ids, "token_type_ids": e.token_type_ids, "labels": e.labels["label"]}

    def pad_collate(rows):
        length = max(len(r["input_ids"]) for r in rows)
        ids = np.full((len(rows), length), tok.pad_token_id, dtype="int64")
        tt = np.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, :len(r["input_ids"])] = r["input_ids"]
            tt[i, :len(r["token_type_ids"])] = r["token_type_ids"]
        return {"input_ids": paddle.to_tensor(ids), "token_type_ids": paddle.to_tensor(tt),
                "attention_mask": paddle.to_tensor((ids != tok.pad_token_id).astype("int64")),
                "labels": paddle.to_tensor(np.array([r["labels"] for r in rows], dtype="int64"))}

    class Wrapped(paddle.nn.Layer):
        """TinyDistill's model with the paddlenlp calling convention (logits of the one head)."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, token_type_ids=None, attention_mask=None):
            return self.inner(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)["logits"]["label"]

    def fresh_student():
        m = copy.deepcopy(student0)
        m.set_state_dict(init_state)
        return m

    def run_tinydistill(tmp):
        cfg = DistillConfig.from_dict({"epochs": 1000, "max_steps": args.steps, "batch_size": args.batch_size,
                                       "lr": args.lr, "warmup_ratio": 0.1, "weight_decay": 0.01,
                                       "max_grad_norm": 1.0, "losses": [{"type": "hard_ce"}], "progress": False,
                                       "eval_every": args.steps, "seed": 1})
        t0, c0 = time.perf_counter(), time.process_time()
        res = train(fresh_student(), tok, task, train_ex, dev_ex, cfg, f"{tmp}/td")
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert res.global_step == args.steps, res.global_step
        return res.train_seconds, wall, cpu

    def run_trainer(tmp, model):
        targs = TrainingArguments(output_dir=f"{tmp}/tr", per_device_train_batch_size=args.batch_size,
                                  max_steps=args.steps, learning_rate=args.lr, warmup_ratio=0.1,
                                  weight_decay=0.01, max_grad_norm=1.0, lr_scheduler_type="linear",
                                  logging_steps=10 ** 6, save_strategy="no", evaluation_strategy="no",
                                  disable_tqdm=True, report_to=[], seed=1, dataloader_num_workers=0,
                                  remove_unused_columns=False)
        trainer = Trainer(model=model, args=targs, train_dataset=DS(), data_collator=pad_collate,
                          criterion=paddle.nn.CrossEntropyLoss())
        t0, c0 = time.perf_counter(), time.process_time()
        out = trainer.train()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert out.global_step == args.steps, out.global_step
        return float(out.metrics["train_runtime"]), wall, cpu

    def hf_model():
        cfg = ErnieConfig.from_pretrained(args.student)
        cfg.vocab_size = tok.vocab_size
        cfg.num_classes = 2
        paddle.seed(0)
        return ErnieForSequenceClassification(cfg)

    sides = {
        "tinydistill": lambda tmp: run_tinydistill(tmp),
        "paddlenlp-trainer": lambda tmp: run_trainer(tmp, Wrapped(fresh_student())),
        "paddlenlp-trainer-hf": lambda tmp: run_trainer(tmp, hf_model()),
    }
    with tempfile.TemporaryDirectory() as tmp:
        loop_s, wall_s, cpu_s = sides[args.side](tmp)
    print("SIDE_RESULT " + json.dumps({"loop_s": loop_s, "wall_s": wall_s, "cpu_s": cpu_s}), flush=True)
    return 0


SIDES = ("tinydistill", "paddlenlp-trainer", "paddlenlp-trainer-hf")


def orchestrate(args) -> int:
    """Every measurement in its own fresh process (no state left by another loop), sides interleaved."""
    import subprocess

    t_start = time.time()
    sides = SIDES
    meas = {k: [] for k in sides}
    argv = list(sys.argv[1:])
    for flag in ("--json", "--md"):
        if flag in argv:
            i = argv.index(flag)
            del argv[i:i + 2]
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            load_before = os.getloadavg()[0]
            proc = subprocess.run([sys.executable, __file__, *argv, "--side", name], capture_output=True, text=True)
            lines = [l for l in proc.stdout.splitlines() if l.startswith("SIDE_RESULT ")]
            if proc.returncode != 0 or not lines:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"side {name} failed (exit {proc.returncode})")
            got = json.loads(lines[-1][len("SIDE_RESULT "):])
            loop_s, wall_s, cpu_s = got["loop_s"], got["wall_s"], got["cpu_s"]
            ex = args.steps * args.batch_size
            meas[name].append({"round": r, "loop_s": loop_s, "wall_s": wall_s, "cpu_s": cpu_s,
                               "examples_per_s": ex / loop_s, "wall_examples_per_s": ex / wall_s,
                               "cpu_examples_per_s": ex / cpu_s,
                               "load1_before": load_before, "load1_after": os.getloadavg()[0]})
            print(f"round {r} {name:<22} {ex / loop_s:8.1f} ex/s (loop {loop_s:6.2f} s, wall {wall_s:6.2f} s, "
                  f"CPU {cpu_s:6.2f} s) load1 {load_before:.2f}->{os.getloadavg()[0]:.2f}", flush=True)

    def med(name, key):
        return statistics.median(m[key] for m in meas[name])

    keys = ("examples_per_s", "wall_examples_per_s", "cpu_examples_per_s")
    summary = {k: {key: med(k, key) for key in keys} for k in sides}
    ratios = {f"tinydistill_vs_{k}": {"loop": summary["tinydistill"]["examples_per_s"] / summary[k]["examples_per_s"],
                                      "wall": summary["tinydistill"]["wall_examples_per_s"] / summary[k]["wall_examples_per_s"],
                                      "cpu": summary["tinydistill"]["cpu_examples_per_s"] / summary[k]["cpu_examples_per_s"]}
              for k in sides if k != "tinydistill"}
    import paddle

    cmd = "python experiments/benchmarks/bench_train_speed.py " + " ".join(sys.argv[1:])
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), "
                      f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
           "paddle": paddle.__version__, "run_seconds": round(time.time() - t_start, 1), "command": cmd}
    lines = [f"Student `{args.student}` (scratch init), ChnSentiCorp train lines 1-{args.n_train}, max_seq_length "
             f"{args.max_len}, batch {args.batch_size}, {args.steps} steps per measurement, {args.rounds} rounds "
             f"(median), lr {args.lr}.", "",
             "| side | examples/s (loop, wall clock) | examples/s (whole train() call, wall clock) | "
             "examples per CPU-second (whole call) | load avg (1 min) during |",
             "|---|---|---|---|---|"]
    for k in sides:
        loads = [m["load1_before"] for m in meas[k]] + [m["load1_after"] for m in meas[k]]
        lines.append(f"| {k} | {summary[k]['examples_per_s']:.1f} | {summary[k]['wall_examples_per_s']:.1f} | "
                     f"{summary[k]['cpu_examples_per_s']:.1f} | {min(loads):.2f}-{max(loads):.2f} |")
    lines += ["", "| ratio (TinyDistill / other; > 1: TinyDistill faster) | loop, wall clock | whole call, wall clock "
              "| whole call, CPU time |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['loop']:.2f}x | {v['wall']:.2f}x | {v['cpu']:.2f}x |" for k, v in ratios.items()]
    lines += ["", "CPU time (`time.process_time()` of the process around the `train()` call) is the figure to trust "
              "when the machine is loaded: wall-clock figures include time the process waited for a core."]
    lines += ["", f"Command: `{cmd}`  ", f"Date: {env['date']}; run time {env['run_seconds']} s; machine: "
              f"{env['machine']}; paddle {env['paddle']}."]
    table = "\n".join(lines) + "\n"
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "env": env, "measurements": meas,
                                               "summary": summary, "ratios": ratios}, indent=2))
    if args.md:
        Path(args.md).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
