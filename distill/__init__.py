"""The knowledge-distillation engine (losses, layer mapping, schedules, multi-teacher, teacher-output
cache, augmentation, training loop) and the light shared core every package uses:
``distill.registry`` (the one registry helper), ``distill.schema`` (strict config sections),
``distill.fsutil`` (atomic writes).  Importing ``distill`` does not import paddle.
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
