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
