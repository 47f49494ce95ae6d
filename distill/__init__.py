"""The knowledge-distillation engine (losses, layer mapping, schedules, multi-teacher, teacher-output
cache, augmentation, training loop) and the light shared core every package uses:
``distill.registry`` (the one registry helper), ``distill.schema`` (strict config sections),
``distill.fsutil`` (atomic writes).  Importing ``distill`` does not import paddle.
"""
