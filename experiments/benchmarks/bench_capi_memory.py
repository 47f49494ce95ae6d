"""Peak RSS and latency of a numpy-free ONNX Runtime process (C API via ctypes) vs the Python predictor.

    python experiments/benchmarks/bench_capi_memory.py FP32_ONNX_DIR COMPRESSED_DIR [--runs 200]

Each model directory (an ONNX export with its tokenizer, e.g. ``export/fp32-onnx`` and ``export/ort-mobile``
written by ``experiments/benchmarks/bench_compress.py``) is measured in a fresh process per runtime:

* ``python-ort``: ``compress.predictor.Predictor`` on the ``onnxruntime`` Python package (imports numpy);
* ``c-api``: ``compress.ort_capi.CSession`` + the pure-Python WordPiece (``compress/wordpiece.py``), no numpy in
  the process (``onnx-int4`` directories expanded as the predictor does).

Both time tokenisation + model at batch 1 / 16 tokens / 1 thread (p50 over ``--runs`` calls after 20
warm-up calls) and report the peak RSS (VmHWM) of the process.  Ratios are against the first directory on the
same runtime.  Both sides time tokenizer + model only (no decoding), to isolate the runtime's own cost;
``tinydistill bench DIR ... --runtime onnxruntime-c`` measures the whole C-API predictor end to end.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

TEXT = "播放周杰伦的稻香然后导航到北京西站"


def worker(runtime: str, model_dir: str, runs: int) -> dict:
    from tinydistill.compress.bench import peak_rss_kib, time_ms  # light: neither numpy nor onnxruntime

    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    if runtime == "python-ort":
        from tinydistill.compress.predictor import Predictor

        predictor = Predictor.from_dir(model_dir, runtime="onnxruntime", threads=1)
        p50 = time_ms(lambda: predictor.logits(predictor.collate(predictor.encode(predictor.examples([TEXT])))),
                    runs, 20)["p50"]
    else:
        from array import array

        from tinydistill.compress.ort_capi import CSession, lean_process
        from tinydistill.compress.wordpiece import lean_tokenizer

        lean_process()
        tokenizer = lean_tokenizer(model_dir, manifest["tokenizer"])
        initializers = None
        if manifest.get("int4"):  # onnx-int4: 4-bit rows expanded to the INT8 initializers
            from tinydistill.compress.int4 import expand

            initializers = expand(model_dir, manifest)
        session = CSession(model_dir / manifest.get("model_file", "model.onnx"), threads=1, initializers=initializers)

        def run():
            enc = tokenizer.encode(TEXT, max_length=16)
            n = len(enc.ids)
            feed = {"input_ids": (array("q", enc.ids), [1, n]),
                    "token_type_ids": (array("q", enc.token_type_ids), [1, n]),
                    "attention_mask": (array("q", [1] * n), [1, n])}
            return session.run(feed)

        p50 = time_ms(run, runs, 20)["p50"]
    return {"runtime": runtime, "model_dir": str(model_dir), "p50_ms": p50, "peak_rss_mib": peak_rss_kib() / 1024.0,
            "numpy_imported": "numpy" in sys.modules}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dirs", nargs="*")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--worker", nargs=2, metavar=("RUNTIME", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.runs)))
        return
    rows = []
    for runtime in ("python-ort", "c-api"):
        for d in args.model_dirs:
            out = subprocess.run([sys.executable, __file__, "--worker", runtime, d, "--runs", str(args.runs)],
                                 capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"{'runtime':<11} {'model dir':<48} {'p50 ms':>7} {'peak RSS MiB':>13} {'RSS vs first':>13} numpy")
    for r in rows:
        base = next(b for b in rows if b["runtime"] == r["runtime"])
        change = 100.0 * (r["peak_rss_mib"] / base["peak_rss_mib"] - 1.0)
        print(f"{r['runtime']:<11} {r['model_dir'][-48:]:<48} {r['p50_ms']:>7.3f} {r['peak_rss_mib']:>13.1f} "
              f"{change:>+12.1f}% {r['numpy_imported']}")


if __name__ == "__main__":
    main()
