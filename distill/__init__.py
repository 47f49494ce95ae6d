"""The knowledge-distillation engine (losses, layer mapping, schedules, multi-teacher, teacher-output
cache, augmentation, training loop) and the light shared core every package uses:
``distill.registry`` (the one registry helper), ``distill.schema`` (strict config sections),
``distill.fsutil`` (atomic writes), ``distill.records`` (dataclass-like records without ``dataclasses``).
Importing ``distill`` does not import paddle.
"""

import os as _os

# Paddle 3.0.0 must run with the legacy (non-PIR) program format: paddleslim's QAT/PTQ/quant_embedding
# and the INT8 Paddle Inference path need ``model.pdmodel`` programs (see README, "Dependency stack").
# Every package of this project imports ``distill`` (for the registry) before paddle, so setting the
# flag here fixes it for the whole process; a user's explicit setting wins.
_os.environ.setdefault("FLAGS_enable_pir_api", "0")
# numpy's OpenBLAS sizes its thread pool from the environment when numpy is first imported, and paddle sets
# OMP_NUM_THREADS=1 when it is imported: without this, a process that happens to import paddle before numpy
# computes with a different BLAS thread count (and slightly different sums: a QAT result moved by points on a
# tiny model).  Pin OpenBLAS to its own default, every core, whatever the import order.
_os.environ.setdefault("OPENBLAS_NUM_THREADS", str(_os.cpu_count() or 1))


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


# Paddle's CPU kernels (matmul, LSTM, the gradients of both) call the MKL it ships (libmklml_intel, an MKL
# of the generation that reads MKL_DEBUG_CPU_TYPE).  On AMD processors that MKL picks its generic SSE code
# path: measured on a 2-core AMD EPYC (Zen 4) here, a [512x312]x[312x1248] FP32 matmul ran at 28 GFLOP/s
# against 80 GFLOP/s with MKL_DEBUG_CPU_TYPE=5 (its AVX2 path), and a nano training step took 0.58 s
# against 0.36 s.  Intel processors already get MKL's best path, so the variable is only set on AMD, only
# when unset, and before paddle (and with it MKL) is loaded: every package of the project imports
# ``distill`` first.  ``experiments/benchmarks/bench_train_speed.py`` measures the effect.
if _cpu_vendor() == "AuthenticAMD":
    _os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
