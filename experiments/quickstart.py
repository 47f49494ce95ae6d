"""``tinydistill quickstart``: the whole pipeline, offline, in a few minutes on a laptop CPU.

1. generates a small in-car SLU data set from the project's templates (``experiments/slu_templates.py``,
   NLPCC 2018 intents and slots, NLPCC raw corpus format) into ``<out>/data/nlpcc2018_task4/``;
2. runs a sweep through the real ``nlpcc2018_slu`` task: a scratch-initialised small ERNIE teacher
   (fine-tuned once, shared), three students (ERNIE 3.0 Tiny nano and pico at reduced size, and a small
   Bi-LSTM on the teacher's tokenizer) each trained without KD and with KD (soft + hard cross-entropy on
   both heads); the KD runs are then compressed (vocabulary pruning, width pruning with KD recovery, INT8
   embeddings) and exported to ONNX Runtime INT8; every model directory is benchmarked;
3. writes ``<out>/report.md`` (table with mean/KD gain/size/latency) and PNG plots.

Nothing is downloaded: the vocabulary is built from the generated texts, models start from random
weights.  The numbers show that the pipeline works end to end; they say nothing about real accuracy.
The configs it runs are written to ``<out>/quickstart*.yaml`` (re-run them with ``tinydistill sweep``).
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from tinydistill.distill.fsutil import atomic_write_text
from tinydistill.distill.logs import progress
from tinydistill.distill.schema import ConfigError
from tinydistill.experiments.config import resolve
from tinydistill.experiments.config_yaml import dump_yaml

NAME = "quickstart"
TINY_ERNIE = {"tokenizer": {"build": True}}

NANO = {"num_hidden_layers": 2, "hidden_size": 96, "num_attention_heads": 4, "intermediate_size": 384}
PICO = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 256}

QUICKSTART = {
    "name": NAME,
    "task": {"name": "nlpcc2018_slu", "max_seq_length": 16, "dev_ratio": 0.2, "split_seed": 42},
    "teacher": {
        "name": "ernie-3.0-tiny-mini-v2-zh", "init": "scratch", **TINY_ERNIE,
        "options": {"num_hidden_layers": 4, "hidden_size": 128, "num_attention_heads": 4,
                    "intermediate_size": 512},
        "train": {"epochs": 40, "lr": 2.0e-3, "batch_size": 32, "warmup_ratio": 0.1, "progress": False},
    },
    "student": {"name": "ernie-3.0-tiny-nano-v2-zh", "init": "scratch", **TINY_ERNIE, "options": NANO},
    "distill": {"epochs": 30, "lr": 2.0e-3, "batch_size": 32, "progress": False,
                "losses": [{"type": "soft_ce", "temperature": 1.0}, {"type": "hard_ce", "weight": 1.0}]},
    "compress": [{"step": "vocab_prune", "max_vocab_size": 300},
                 {"step": "width_prune", "width": 0.5, "importance_examples": 128,
                  "recover": {"epochs": 5, "lr": 1.0e-3}},
                 # one dev utterance is ~1.2 points here: INT8 checks get a few points of tolerance
                 {"step": "embedding_int8", "tolerance": 3.0}],
    "export": [{"backend": "onnx-int8", "tolerance": 3.0}],
    "bench": {"batch_size": 1, "seq_len": 16, "threads": 1, "runs": 30, "warmup": 5, "throughput_batches": [8]},
    "seeds": [1],
    "sweep": {
        "students": [
            {"name": "ernie-3.0-tiny-nano-v2-zh", **TINY_ERNIE, "options": NANO},
            {"name": "ernie-3.0-tiny-pico-v2-zh", **TINY_ERNIE, "options": PICO},
        ],
        "recipes": {
            "no_kd": {"distill.losses": [{"type": "hard_ce"}], "compress": [], "export": []},
            "kd": {},
        },
    },
}


# The Bi-LSTM: same experiment (same store, same shared teacher), its own compression and export: width
# pruning does not apply to it, and ONNX Runtime's dynamic INT8 loses ~30 points on its LSTM (the export check
# refuses it), so it is exported in FP32, to ONNX Runtime and Paddle Inference.
BILSTM = {
    "compress": [{"step": "vocab_prune", "max_vocab_size": 300}],
    "export": ["onnx", "paddle-inference"],
    "sweep": {
        # the teacher's tokenizer: token-level KD (slot head) compares outputs token by token
        "students": [{"name": "bilstm", "tokenizer": {"from_teacher": True},
                      "options": {"embedding_size": 128, "hidden_size": 128, "mlp_size": 128}}],
        "recipes": QUICKSTART["sweep"]["recipes"],
    },
}


def quickstart_configs(data_root: Path) -> dict[str, dict]:
    """The quickstart's two sweeps by file name: the ERNIE students and the Bi-LSTM."""
    ernie = {**QUICKSTART, "task": {**QUICKSTART["task"], "data_dir": str(data_root)}}
    return {"quickstart.yaml": ernie, "quickstart_bilstm.yaml": {**ernie, **BILSTM}}


def run_quickstart(out: Path, resume: bool = False, utterances: int = 400, jobs: int | None = None,
                   log=progress) -> Path:
    from tinydistill.experiments.report import write_report
    from tinydistill.experiments.slu_templates import CORPUS_FILE, write_corpus
    from tinydistill.experiments.sweep import run_sweep

    t0 = time.time()
    out = Path(out)
    runs = out / "runs"
    if runs.exists() and not resume:
        raise ConfigError(f"{out}: a quickstart is already there; add --resume to continue it, or pick another --out")
    data_root = out / "data"
    folder = data_root / "nlpcc2018_task4"
    if not (folder / CORPUS_FILE).is_file():
        write_corpus(folder, n=utterances, seed=0)
        log(f"quickstart: generated {utterances} in-car SLU utterances (NLPCC 2018 format) in {folder}")
    jobs = jobs or min(2, os.cpu_count() or 1)
    failed = []
    for filename, raw in quickstart_configs(data_root).items():
        config_file = out / filename
        atomic_write_text(config_file, "# written by `tinydistill quickstart`; re-run with: tinydistill sweep "
                          f"{config_file} --out {runs}\n" + dump_yaml(raw))
        cfg = resolve(raw)
        cfg.source = str(config_file)
        failed += run_sweep(cfg, runs, jobs=jobs, log=log)["failed"]
    if failed:
        raise RuntimeError(f"quickstart: {len(failed)} run(s) failed: {', '.join(failed)}")
    written = write_report(runs / NAME, out, plots=True, basename="report")
    log(f"quickstart: finished in {time.time() - t0:.0f}s")
    for path in written.values():
        log(f"  wrote {path}")
    return written["md"]


def cli_quickstart(args: argparse.Namespace) -> int:
    report = run_quickstart(Path(args.out), resume=args.resume)
    print(Path(report).read_text(encoding="utf-8"))
    return 0
