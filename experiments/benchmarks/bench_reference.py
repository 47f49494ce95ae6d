"""End-to-end SLU inference: the reference pipeline vs TinyDistill exports, in one run, interleaved.

    python experiments/benchmarks/bench_reference.py --reference DIR --tinydistill DIR [DIR ...]
        [--rounds 20] [--runs 50] [--seq-len 16] [--json PATH] [--md PATH]

Reference: what PaddleNLP's ERNIE 3.0 Tiny deploy example does per request: paddlenlp's (Python)
``ErnieTokenizer`` on the text (max_length = seq_len), the FP32 static program in Paddle Inference on CPU
(oneDNN on, as FastDeploy's Paddle backend sets it; 1 thread), then the example's post-processing: softmax +
argmax of the intent, argmax of every token's slot tag, BIO tags -> ``{"slot", "entity", "pos"}`` by token
position.  ``--reference`` is a TinyDistill ``paddle-inference`` export directory of the *same* FP32 nano
model (only its ``model.pdmodel``/``model.pdiparams``, ``vocab.txt`` and label lists are used).

TinyDistill: ``compress.predictor.Predictor.from_dir(DIR, threads=1).predict([text])`` for each directory
(e.g. the FP32 export itself, the INT8 Paddle Inference program, the ONNX Runtime INT8 export).

Batch 1, texts that encode to exactly ``--seq-len`` tokens, 1 thread.  Both sides run in this process in
alternating blocks (``--rounds`` x ``--runs`` calls each, order flipped every round) so background load
hits them alike; p50/p90 over all calls, the load average is recorded.  Before timing, the reference's
intent predictions are checked against TinyDistill's predictor on the same FP32 program.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tinydistill import distill  # noqa: E402,F401  (legacy program format before paddle is imported)
import numpy as np  # noqa: E402


class ReferencePipeline:
    """ErnieTokenizer + Paddle Inference FP32 + the deploy example's post-processing."""

    def __init__(self, model_dir: Path, seq_len: int, threads: int = 1):
        from paddle import inference
        from paddlenlp.transformers import ErnieTokenizer

        manifest = json.loads((model_dir / "manifest.json").read_text())
        self.tokenizer = ErnieTokenizer(vocab_file=str(model_dir / "vocab.txt"))
        heads = {h["name"]: h for h in manifest["heads"]}
        self.intents, self.slots = list(heads["intent"]["labels"]), list(heads["slot"]["labels"])
        self.order = [h["name"] for h in manifest["heads"]]
        prefix = model_dir / manifest.get("model_file", "model.pdmodel")
        config = inference.Config(str(prefix), str(prefix.with_suffix(".pdiparams")))
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.disable_glog_info()
        config.switch_ir_optim(True)
        self.predictor = inference.create_predictor(config)
        self.inputs = self.predictor.get_input_names()
        self.outputs = self.predictor.get_output_names()
        self.seq_len = seq_len

    def __call__(self, texts: list[str]) -> list[dict]:
        enc = self.tokenizer(texts, max_length=self.seq_len, padding=True, truncation=True)
        ids = np.asarray(enc["input_ids"], dtype="int64")
        feed = {"input_ids": ids, "token_type_ids": np.asarray(enc["token_type_ids"], dtype="int64"),
                "attention_mask": (ids != self.tokenizer.pad_token_id).astype("int64")}
        for name in self.inputs:
            self.predictor.get_input_handle(name).copy_from_cpu(feed[name])
        self.predictor.run()
        outs = dict(zip(self.order, (self.predictor.get_output_handle(n).copy_to_cpu() for n in self.outputs)))
        return [self.postprocess(t, outs["intent"][i], outs["slot"][i], int((ids[i] != 0).sum()))
                for i, t in enumerate(texts)]

    def postprocess(self, text, intent_logits, slot_logits, length) -> dict:
        e = np.exp(intent_logits - intent_logits.max())
        probs = e / e.sum()
        k = int(probs.argmax())
        tags = [self.slots[j] for j in slot_logits[1:length - 1].argmax(-1)]  # drop [CLS]/[SEP]
        slots, cur = [], None
        for pos, tag in enumerate(tags):
            if tag.startswith("B-") or (tag.startswith("I-") and (cur is None or cur["slot"] != tag[2:])):
                cur = {"slot": tag[2:], "entity": text[pos:pos + 1], "pos": [pos, pos]}
                slots.append(cur)
            elif tag.startswith("I-"):
                cur["entity"] += text[pos:pos + 1]
                cur["pos"][1] = pos
            else:
                cur = None
        return {"intent": self.intents[k], "confidence": float(probs[k]), "slots": slots}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", required=True, help="paddle-inference export dir of the FP32 nano model")
    ap.add_argument("--tinydistill", nargs="+", required=True, help="TinyDistill model directories")
    ap.add_argument("--data-dir", default=os.environ.get("TINYDISTILL_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--md", metavar="PATH")
    args = ap.parse_args()
    t_start = time.time()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from tinydistill.compress.bench import texts_of_length
    from tinydistill.compress.predictor import Predictor

    ref_dir = Path(args.reference)
    ref = ReferencePipeline(ref_dir, args.seq_len)
    same = Predictor.from_dir(ref_dir, threads=1, data_dir=args.data_dir)
    texts = texts_of_length(same, args.seq_len, 8)
    # the reference tokenizer and post-processing agree with TinyDistill's on the same program
    ref_ids = [ref.tokenizer(t, max_length=args.seq_len, truncation=True)["input_ids"] for t in texts]
    td_ids = [list(e.input_ids) for e in same.encode(same.examples(texts))]
    assert ref_ids == td_ids, "ErnieTokenizer and TinyDistill's tokenizer disagree on the benchmark texts"
    dev = same.task.load("dev")[:300]
    dev_texts = [ex.text for ex in dev]
    agree = sum(a["intent"] == b["intent"] for a, b in zip(ref(dev_texts), same.predict(dev_texts)))
    print(f"reference vs TinyDistill predictor on the same FP32 program: intent agrees on {agree}/{len(dev)} "
          f"dev utterances; token ids equal on the {len(texts)} benchmark texts", flush=True)

    sides = {"reference (ErnieTokenizer + Paddle Inference FP32)": lambda t: ref([t])}
    labels = {}
    for d in args.tinydistill:
        p = Predictor.from_dir(d, threads=1, data_dir=args.data_dir)
        m = p.manifest
        label = f"TinyDistill {Path(d).name} ({p.runtime} {m.get('precision', 'fp32')})"
        sides[label] = (lambda p: lambda t: p.predict([t], batch_size=1))(p)
        labels[label] = {"dir": str(d), "runtime": p.runtime, "precision": m.get("precision", "fp32"),
                         "seq_len_check": len(p.encode(p.examples(texts[:1]))[0].input_ids)}
    times = {k: [] for k in sides}
    cpu_times = {k: [] for k in sides}
    for fn in sides.values():
        for i in range(args.warmup):
            fn(texts[i % len(texts)])
    loads = [os.getloadavg()[0]]
    names = list(sides)
    for r in range(args.rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            fn = sides[name]
            for i in range(args.runs):
                t0, c0 = time.perf_counter(), time.process_time()
                fn(texts[i % len(texts)])
                cpu_times[name].append((time.process_time() - c0) * 1000.0)
                times[name].append((time.perf_counter() - t0) * 1000.0)
        loads.append(os.getloadavg()[0])
    ref_name = names[0]
    stats = {k: {"p50": float(np.percentile(v, 50)), "p90": float(np.percentile(v, 90)), "mean": float(np.mean(v)),
                 "cpu_p50": float(np.percentile(cpu_times[k], 50)), "cpu_p90": float(np.percentile(cpu_times[k], 90)),
                 "calls": len(v)} for k, v in times.items()}
    for k in stats:
        stats[k]["speedup_vs_reference"] = stats[ref_name]["p50"] / stats[k]["p50"]
        stats[k]["cpu_speedup_vs_reference"] = stats[ref_name]["cpu_p50"] / stats[k]["cpu_p50"]
    best = min((k for k in names[1:]), key=lambda k: stats[k]["cpu_p50"])
    cmd = "python experiments/benchmarks/bench_reference.py " + " ".join(sys.argv[1:])
    env = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs), 1 thread",
           "run_seconds": round(time.time() - t_start, 1), "command": cmd,
           "load1_min": min(loads), "load1_max": max(loads)}
    lines = [f"Batch 1, {args.seq_len} tokens, 1 thread, end to end (text in, decoded intent + slots out); "
             f"{args.rounds} rounds x {args.runs} calls per side, interleaved; reference intent agrees with "
             f"TinyDistill's predictor on the same FP32 program on {agree}/{len(dev)} dev utterances.", "",
             "| pipeline | CPU ms p50 | CPU ms p90 | speed-up (CPU p50) | wall ms p50 | wall ms p90 | "
             "speed-up (wall p50) |", "|---|---|---|---|---|---|---|"]
    for k in names:
        s = stats[k]
        lines.append(f"| {k} | {s['cpu_p50']:.3f} | {s['cpu_p90']:.3f} | {s['cpu_speedup_vs_reference']:.2f}x | "
                     f"{s['p50']:.3f} | {s['p90']:.3f} | {s['speedup_vs_reference']:.2f}x |")
    lines += ["", f"Best TinyDistill export: {best}: {stats[best]['cpu_speedup_vs_reference']:.2f}x the reference "
              f"in CPU time per call ({stats[best]['speedup_vs_reference']:.2f}x in wall-clock time).", "",
              "CPU ms: process CPU time per call (`time.process_time`), which leaves out the time the process "
              "waited for a core on this shared machine; wall ms includes it.", "", f"Command: `{cmd}`  ",
              f"Date: {env['date']}; run time {env['run_seconds']} s; machine: {env['machine']}; load average "
              f"(1 min) {env['load1_min']:.2f}-{env['load1_max']:.2f} during the run."]
    md = "\n".join(lines) + "\n"
    print(md)
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "stats": stats, "sides": labels, "best": best,
                                               "intent_agreement": [agree, len(dev)], "args": vars(args)}, indent=2))
    if args.md:
        Path(args.md).write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
