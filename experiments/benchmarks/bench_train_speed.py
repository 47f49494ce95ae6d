"""Training speed of the engine against the previous loop, a plain paddle loop, paddlenlp's Trainer and the
CPU's matmul peak, in one run, sides interleaved, every measurement in a fresh process.

    python experiments/benchmarks/bench_train_speed.py [--data-dir DIR] [--rounds 2] [--steps 16]
        [--previous-commit 8e9ef8f] [--json experiments/results/train_speed.json]
        [--md experiments/results/train_speed.md]

Workloads (scratch models, real data, the first ``--n-train`` training rows):
  nano_slu             ERNIE 3.0 Tiny nano on NLPCC 2018 SLU (intent + slot heads), max_seq_length 16, batch 32
  nano_chnsenticorp    nano on ChnSentiCorp, max_seq_length 64, batch 32
  bilstm_chnsenticorp  the Bi-LSTM (embedding 300, hidden 300) on jieba words (vocabulary 8,000), seq 128, batch 64

Sides:
  new               ``distill.trainer.train`` of this tree, defaults (threads = cores, length bucketing)
  previous          ``distill.trainer.train`` at ``--previous-commit`` (the loop before the engine), checked out
                    with ``git worktree`` and run in the environment it ran in (paddle's 1 thread; MKL's own CPU
                    dispatch)
  plain             a plain paddle loop over the same model class, data and batch size: shuffled batches padded to
                    their longest row, AdamW, same threads and MKL setting as ``new`` - what paddle itself does
  plain-bf16        ``plain`` under ``paddle.amp.auto_cast(dtype="bfloat16")`` (O1), to see whether paddle 3.0 uses
                    bf16 (oneDNN / AVX512-BF16 / AMX) in CPU training
  trainer           paddlenlp ``Trainer`` on the same model and data, as a paddlenlp user runs it (ERNIE only)
  trainer-tuned     the same Trainer with the threads and MKL setting TinyDistill applies (ERNIE only)

The Bi-LSTM step ratio (``bilstm_step``) runs TinyDistill's Bi-LSTM (two one-directional LSTMs with the
in-length reversal that keeps ONNX exports right) and paddle's own ``nn.LSTM(direction="bidirect")`` model
of the same size on the same fixed batches (64 x 48 tokens, vocabulary 8,000), interleaved in one process.

Examples/s: steps x batch / loop seconds (``TrainResult.train_seconds`` for the engine; the Trainer's
``train_runtime``; the plain loop's own timer).  CPU: ``time.process_time()`` of the whole call; with two
threads it can exceed wall time, so "examples per CPU-second" is the figure to compare when the machine is
loaded.  Peak: the best FP32 throughput of a [2048 x 2048] x [2048 x 2048] paddle matmul on one thread (MKL's
AVX2 path on AMD) times the cores, measured in the same run; achieved GFLOP/s counts 6 x (matmul MACs) per real token.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = {
    "nano_slu": dict(task="nlpcc2018_slu", model="ernie-3.0-tiny-nano-v2-zh", max_len=16, batch=32),
    "nano_chnsenticorp": dict(task="chnsenticorp", model="ernie-3.0-tiny-nano-v2-zh", max_len=64, batch=32),
    "bilstm_chnsenticorp": dict(task="chnsenticorp", model="bilstm", max_len=128, batch=64),
}
SIDES = ("new", "previous", "plain", "plain-bf16", "trainer", "trainer-tuned")


def sides_for(workload: str) -> tuple[str, ...]:
    return SIDES if workload.startswith("nano") else ("new", "previous", "plain", "plain-bf16")


# ------------------------------------------------------------------------------------------------------
# worker: one (workload, side) in this process
# ------------------------------------------------------------------------------------------------------
def _import_from_tree(tree: str) -> None:
    """``tinydistill.*`` from the checkout ``tree`` (the previous commit), not from the installed package.  A commit
    from before the ``tinydistill`` namespace (issue #14) has top-level packages (``distill``, ``tasks``, ...): each
    ``tinydistill.<name>`` is then that very module, so the old code and this script share one copy of each."""
    import importlib
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import types

    sys.path.insert(0, tree)
    namespaced = "tinydistill.distill" in (Path(tree) / "setup.cfg").read_text(encoding="utf-8")
    root = types.ModuleType("tinydistill")
    root.__path__ = [tree]
    sys.modules["tinydistill"] = root

    class FromTree(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if not name.startswith("tinydistill."):
                return None
            if namespaced:  # ahead of the installed package's finder
                return importlib.machinery.PathFinder.find_spec(name, path)
            return importlib.util.spec_from_loader(name, self)

        def create_module(self, spec):
            return importlib.import_module(spec.name[len("tinydistill."):])

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, FromTree())


def worker(args) -> dict:
    if args.side == "previous":
        _import_from_tree(args.previous_tree)
    else:
        sys.path.insert(0, str(ROOT))
    from tinydistill import distill  # noqa: F401  (sets the MKL variable on AMD unless the environment has it)
    import numpy as np
    import paddle

    if args.side not in ("previous", "trainer"):
        from paddle.base import core
        core.set_num_threads(os.cpu_count() or 1)
    if args.workload == "peak":
        return peak()
    if args.workload == "bilstm_step":
        return bilstm_step(args.steps)
    from tinydistill.distill.config import DistillConfig
    from tinydistill.distill.trainer import train
    from tinydistill.tasks import build_task
    from tinydistill.teachers.base import build_model

    w = WORKLOADS[args.workload]
    data = Path(args.data_dir)
    task = build_task(w["task"], data_dir=str(data), max_seq_length=w["max_len"])
    train_ex = task.load("train")[:args.n_train]
    dev_ex = task.load("dev")[:32]
    if w["model"] == "bilstm":
        from tinydistill.tasks.tokenization import TOKENIZERS
        tok = TOKENIZERS.get("jieba-word").build([e.text for e in train_ex], min_freq=1, max_size=8000)
        options = dict(embedding_size=300, hidden_size=300, mlp_size=300)
    else:
        from tinydistill.tasks.tokenization import ErnieWordPieceTokenizer
        tok = ErnieWordPieceTokenizer(data / "vocab" / "ernie-3.0" / "vocab.txt")
        options = {}
    paddle.seed(0)
    model = build_model("student", w["model"], task.heads(), vocab_size=tok.vocab_size, **options)
    encoded = [task.encode(ex, tok) for ex in train_ex]
    real_tokens_per_example = sum(len(e.input_ids) for e in encoded) / len(encoded)
    steps, batch = args.steps, w["batch"]
    t0, c0 = time.perf_counter(), time.process_time()
    if args.side in ("new", "previous"):
        cfg = DistillConfig.from_dict({"epochs": 1000, "max_steps": steps, "batch_size": batch, "lr": 5e-5,
                                       "warmup_ratio": 0.1, "losses": [{"type": "hard_ce"}], "progress": False,
                                       "eval_every": steps, "seed": 1})
        with tempfile.TemporaryDirectory() as tmp:
            res = train(model, tok, task, train_ex, dev_ex, cfg, tmp)
        assert res.global_step == steps, res.global_step
        loop_s = res.train_seconds
    elif args.side.startswith("plain"):
        loop_s = plain_loop(model, task, encoded, tok.pad_token_id, steps, batch, bf16=args.side == "plain-bf16")
    else:
        loop_s = trainer_loop(model, task, encoded, tok.pad_token_id, steps, batch)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"loop_s": loop_s, "wall_s": wall, "cpu_s": cpu, "examples": steps * batch,
           "real_tokens_per_example": real_tokens_per_example, "module": distill.__file__}
    if w["model"] != "bilstm":
        c = model.model_config
        h, i, n = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
        out["flops_per_token"] = 6 * n * (4 * h * h + 2 * h * i + 2 * real_tokens_per_example * h)
    return out


def _batches(encoded, steps, batch, seed=1):
    import numpy as np
    rng = np.random.RandomState(seed)
    order = []
    while len(order) < steps * batch:
        order += rng.permutation(len(encoded)).tolist()
    return [order[s * batch:(s + 1) * batch] for s in range(steps)]


def _heads_loss(logits, batch):
    import paddle
    import paddle.nn.functional as F
    total = 0.0
    for name, value in logits.items():
        labels = paddle.to_tensor(batch[f"labels/{name}"])
        if value.ndim == 3:
            value, labels = value.reshape([-1, value.shape[-1]]), labels.reshape([-1])
        total = total + F.cross_entropy(value.astype("float32"), labels, ignore_index=-100)
    return total


def plain_loop(model, task, encoded, pad_id, steps, batch, bf16=False) -> float:
    import paddle
    from tinydistill.distill.batching import collate
    opt = paddle.optimizer.AdamW(learning_rate=5e-5, parameters=model.parameters(), weight_decay=0.01,
                                 grad_clip=paddle.nn.ClipGradByGlobalNorm(1.0))
    model.train()
    start = time.perf_counter()
    for idx in _batches(encoded, steps, batch):
        b = collate(task, [encoded[i] for i in idx], pad_id)
        ids = paddle.to_tensor(b["input_ids"])
        kw = dict(token_type_ids=paddle.to_tensor(b["token_type_ids"]),
                  attention_mask=paddle.to_tensor(b["attention_mask"]))
        if bf16:
            with paddle.amp.auto_cast(dtype="bfloat16", level="O1"):
                loss = _heads_loss(model(ids, **kw)["logits"], b)
        else:
            loss = _heads_loss(model(ids, **kw)["logits"], b)
        loss.backward()
        opt.step()
        opt.clear_grad()
    return time.perf_counter() - start


def trainer_loop(model, task, encoded, pad_id, steps, batch) -> float:
    import paddle
    from paddlenlp.trainer import Trainer, TrainingArguments
    from tinydistill.distill.batching import collate

    class DS(paddle.io.Dataset):
        def __len__(self):
            return len(encoded)

        def __getitem__(self, i):
            return i

    heads = [h.name for h in task.heads()]

    def pad_collate(rows):
        b = collate(task, [encoded[i] for i in rows], pad_id)
        out = {k: paddle.to_tensor(b[k]) for k in ("input_ids", "token_type_ids", "attention_mask")}
        out["labels"] = [paddle.to_tensor(b[f"labels/{h}"]) for h in heads]
        return out

    class Wrapped(paddle.nn.Layer):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, token_type_ids=None, attention_mask=None):
            logits = self.inner(input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)["logits"]
            return tuple(logits[h] for h in heads)

    class Criterion(paddle.nn.Layer):
        def forward(self, outputs, labels):
            return _heads_loss(dict(zip(heads, outputs)), {f"labels/{h}": l.numpy() for h, l in zip(heads, labels)})

    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(output_dir=f"{tmp}/tr", per_device_train_batch_size=batch, max_steps=steps,
                                  learning_rate=5e-5, warmup_ratio=0.1, weight_decay=0.01, max_grad_norm=1.0,
                                  logging_steps=10 ** 6, save_strategy="no", evaluation_strategy="no",
                                  disable_tqdm=True, report_to=[], seed=1, dataloader_num_workers=0,
                                  remove_unused_columns=False)
        trainer = Trainer(model=Wrapped(model), args=targs, train_dataset=DS(), data_collator=pad_collate,
                          criterion=Criterion())
        out = trainer.train()
    assert out.global_step == steps, out.global_step
    return float(out.metrics["train_runtime"])


def peak() -> dict:
    """One thread's best large-matmul throughput times the cores: measured on all cores at once, OpenMP's
    barriers collapse whenever another process takes a core (a run at load 6-8 read 4-6 GFLOP/s)."""
    import paddle
    from paddle.base import core
    core.set_num_threads(1)
    a, b = paddle.randn([2048, 2048]), paddle.randn([2048, 2048])
    best = 0.0
    for _ in range(3):
        paddle.matmul(a, b).numpy()
        t = time.perf_counter()
        for _ in range(5):
            c = paddle.matmul(a, b)
        c.numpy()
        best = max(best, 5 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9)
    return {"gflops": best * (os.cpu_count() or 1), "threads": os.cpu_count()}


def bilstm_step(steps: int) -> dict:
    """CPU seconds per optimisation step: TinyDistill's Bi-LSTM vs paddle's bidirectional LSTM, same size."""
    import numpy as np
    import paddle
    from tinydistill.tasks.base import HeadSpec
    from tinydistill.teachers.base import build_model

    B, L, V, E, H = 64, 48, 8000, 300, 300
    paddle.seed(0)
    ours = build_model("student", "bilstm", [HeadSpec("label", "sequence", ("0", "1"))], vocab_size=V,
                       embedding_size=E, hidden_size=H, mlp_size=H)

    class Plain(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.emb = paddle.nn.Embedding(V, E, padding_idx=0)
            self.lstm = paddle.nn.LSTM(E, H, direction="bidirect")
            self.mlp, self.out = paddle.nn.Linear(2 * H, H), paddle.nn.Linear(H, 2)

        def forward(self, ids, mask):
            y, _ = self.lstm(self.emb(ids), sequence_length=mask.sum(1))
            y = y + (1.0 - mask.unsqueeze(-1).astype("float32")) * -1e4
            return self.out(paddle.tanh(self.mlp(y.max(1))))

    plain = Plain()
    rng = np.random.RandomState(0)
    data = []
    for _ in range(4):
        lens = rng.randint(8, L + 1, B)
        ids = np.zeros((B, L), "int64")
        for i, n in enumerate(lens):
            ids[i, :n] = rng.randint(1, V, n)
        data.append((paddle.to_tensor(ids), paddle.to_tensor((ids != 0).astype("int64")),
                     paddle.to_tensor(rng.randint(0, 2, B).astype("int64"))))
    fns = {"ours": (ours, lambda ids, m: ours(ids, attention_mask=m)["logits"]["label"]),
           "plain": (plain, lambda ids, m: plain(ids, m))}
    opts = {k: paddle.optimizer.AdamW(learning_rate=1e-3, parameters=m.parameters()) for k, (m, _) in fns.items()}
    cpu = {k: [] for k in fns}
    for s in range(steps + 2):
        for k in (("ours", "plain") if s % 2 == 0 else ("plain", "ours")):
            ids, mask, y = data[s % len(data)]
            c0 = time.process_time()
            loss = paddle.nn.functional.cross_entropy(fns[k][1](ids, mask), y)
            loss.backward()
            opts[k].step()
            opts[k].clear_grad()
            if s >= 2:
                cpu[k].append(time.process_time() - c0)
    return {k: statistics.median(v) for k, v in cpu.items()}


# ------------------------------------------------------------------------------------------------------
# orchestration
# ------------------------------------------------------------------------------------------------------
def run_side(args, workload, side, steps) -> dict:
    env = dict(os.environ)
    if side in ("previous", "trainer"):
        env["MKL_DEBUG_CPU_TYPE"] = ""   # an empty value is MKL's default dispatch (the variable is then unset)
    cmd = [sys.executable, __file__, "--data-dir", args.data_dir, "--n-train", str(args.n_train),
           "--previous-tree", args.previous_tree, "--steps", str(steps), "--workload", workload, "--side", side]
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    lines = [l for l in proc.stdout.splitlines() if l.startswith("SIDE_RESULT ")]
    if proc.returncode != 0 or not lines:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"{workload}/{side} failed (exit {proc.returncode})")
    got = json.loads(lines[-1][len("SIDE_RESULT "):])
    got.update(load1_before=load, load1_after=os.getloadavg()[0])
    return got


def orchestrate(args) -> int:
    t_start = time.time()
    tree = Path(tempfile.gettempdir()) / f"tinydistill-prev-{args.previous_commit}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.previous_commit],
                       check=True, capture_output=True)
    args.previous_tree = str(tree)
    meas: dict = {w: {s: [] for s in sides_for(w)} for w in WORKLOADS}
    peaks, lstm_steps = [], []
    for r in range(args.rounds):
        peaks.append(run_side(args, "peak", "new", 1)["gflops"])
        lstm_steps.append(run_side(args, "bilstm_step", "new", args.steps))
        for w in WORKLOADS:
            sides = sides_for(w)
            steps = args.steps if w != "nano_chnsenticorp" else max(4, args.steps // 2)
            for side in (sides if r % 2 == 0 else tuple(reversed(sides))):
                m = run_side(args, w, side, steps)
                m.update(round=r, examples_per_s=m["examples"] / m["loop_s"],
                         wall_examples_per_s=m["examples"] / m["wall_s"], cpu_examples_per_s=m["examples"] / m["cpu_s"])
                meas[w][side].append(m)
                print(f"round {r} {w:<20} {side:<14} {m['examples_per_s']:7.1f} ex/s loop, "
                      f"{m['cpu_examples_per_s']:7.1f} ex/CPU-s  load {m['load1_before']:.1f}", flush=True)
    report(args, meas, peaks, lstm_steps, time.time() - t_start)
    return 0


def report(args, meas, peaks, lstm_steps, seconds) -> None:
    med = statistics.median
    summary = {w: {s: {k: med(m[k] for m in ms) for k in ("examples_per_s", "wall_examples_per_s",
                                                           "cpu_examples_per_s")}
                   for s, ms in sides.items()} for w, sides in meas.items()}
    peak = max(peaks)
    gflops = {w: {s: med(m["examples_per_s"] * m["real_tokens_per_example"] * m["flops_per_token"] / 1e9
                         for m in ms) for s, ms in sides.items()}
              for w, sides in meas.items() if "flops_per_token" in next(iter(sides.values()))[0]}

    def ratio(w, a, b, key="examples_per_s"):
        return summary[w][a][key] / summary[w][b][key]

    step_ratio = med(x["ours"] / x["plain"] for x in lstm_steps)
    ratios = {
        "new_vs_previous": {w: round(ratio(w, "new", "previous"), 3) for w in WORKLOADS},
        "new_vs_previous_cpu": {w: round(ratio(w, "new", "previous", "cpu_examples_per_s"), 3) for w in WORKLOADS},
        "new_vs_paddlenlp_trainer": round(ratio("nano_slu", "new", "trainer"), 3),
        "new_vs_paddlenlp_trainer_tuned": round(ratio("nano_slu", "new", "trainer-tuned"), 3),
        "new_vs_paddlenlp_trainer_by_workload": {w: round(ratio(w, "new", "trainer"), 3)
                                                 for w in WORKLOADS if "trainer" in summary[w]},
        "new_vs_plain": {w: round(ratio(w, "new", "plain"), 3) for w in WORKLOADS},
        "bf16_vs_fp32_plain": {w: round(ratio(w, "plain-bf16", "plain"), 3) for w in WORKLOADS},
        "bilstm_step_vs_plain_paddle": round(step_ratio, 3),
    }
    targets = {"nano_slu_vs_previous": 3.0, "bilstm_chnsenticorp_vs_previous": 2.0, "vs_paddlenlp_trainer": 2.0,
               "bilstm_step_vs_plain_paddle_max": 1.2}
    met = {"nano_slu_vs_previous": ratios["new_vs_previous"]["nano_slu"] >= 3.0,
           "bilstm_chnsenticorp_vs_previous": ratios["new_vs_previous"]["bilstm_chnsenticorp"] >= 2.0,
           "vs_paddlenlp_trainer": ratios["new_vs_paddlenlp_trainer"] >= 2.0,
           "bilstm_step_vs_plain_paddle_max": step_ratio <= 1.2}
    cmd = "python experiments/benchmarks/bench_train_speed.py " + " ".join(
        a for a in sys.argv[1:] if not a.startswith("--previous-tree"))
    from tinydistill.experiments.store import cpu_model
    loads = [m[k] for sides in meas.values() for ms in sides.values() for m in ms for k in ("load1_before", "load1_after")]
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {cpu_model()}",
           "load1": [round(min(loads), 2), round(max(loads), 2)], "run_seconds": round(seconds, 1), "command": cmd,
           "previous_commit": args.previous_commit}
    lines = [f"# Training speed\n\nCommand: `{cmd}`  ",
             f"Date: {env['date']}; run time {env['run_seconds']} s; machine: {env['machine']} (shared: load average "
             f"{env['load1'][0]}-{env['load1'][1]}); {args.rounds} rounds, medians; previous loop = commit "
             f"`{args.previous_commit}`.", ""]
    for w, sides in summary.items():
        lines += [f"## {w}", "", "| side | examples/s (loop, wall) | examples/s (whole call, wall) | examples per "
                  "CPU-second | useful GFLOP/s | spread of loop ex/s over rounds |", "|---|---|---|---|---|---|"]
        for s, v in sides.items():
            spread = [round(m["examples_per_s"], 1) for m in meas[w][s]]
            g = f"{gflops[w][s]:.1f}" if w in gflops else "-"
            lines.append(f"| {s} | {v['examples_per_s']:.1f} | {v['wall_examples_per_s']:.1f} | "
                         f"{v['cpu_examples_per_s']:.1f} | {g} | {spread} |")
        lines.append("")
    lines += ["## Ratios", "", "```json", json.dumps(ratios, indent=1), "```", "",
              f"Targets: {json.dumps(targets)}; met: {json.dumps(met)}.", "",
              f"CPU FP32 peak (estimated as the best [2048x2048]x[2048x2048] paddle matmul on one thread times "
              f"{os.cpu_count()} cores, per round: {[round(p, 1) for p in peaks]}): {peak:.1f} GFLOP/s. Bi-LSTM step, CPU s ours / "
              f"plain paddle per round: {[round(x['ours'], 3) for x in lstm_steps]} / "
              f"{[round(x['plain'], 3) for x in lstm_steps]}.", ""]
    md = "\n".join(lines) + "\n"
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "summary": summary, "ratios": ratios, "targets": targets,
                                               "met": met, "peak_gflops": peak, "gflops": gflops,
                                               "bilstm_step_cpu_s": lstm_steps, "measurements": meas}, indent=1))
    if args.md:
        Path(args.md).write_text(md)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=os.environ.get("TINYDISTILL_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--n-train", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=16, help="optimisation steps per measurement (half for seq 64)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--previous-commit", default="8e9ef8f")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--md", metavar="PATH")
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--previous-tree", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.data_dir = str(Path(args.data_dir).resolve())
    if args.side is None:
        return orchestrate(args)
    print("SIDE_RESULT " + json.dumps(worker(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
