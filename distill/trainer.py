"""The public training entry point: ``train(...)`` builds a ``distill.engine.Distiller`` and runs it.

Kept as the one-call API that the runner, the compression steps' equal-budget controls, the benchmarks and
user scripts call; ``distill.engine`` has the engine (state, callbacks, the loop) and ``distill.batching``
the encoding, batch order and batched inference.
"""
from __future__ import annotations

from typing import Sequence

from tinydistill.distill.batching import collate, encode_examples, evaluate, predict_logits, stack_logits  # noqa: F401
from tinydistill.distill.config import DistillConfig
from tinydistill.distill.engine import KILL_ENV, Callback, Distiller, TrainResult, TrainState  # noqa: F401


def train(student, tokenizer, task, train_examples, dev_examples, config: DistillConfig, out_dir,
          teachers: Sequence = (), resume: bool = False, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train ``student`` (see ``distill.engine.Distiller``).  Writes ``out_dir/best`` (model dir of the best dev
    checkpoint), ``out_dir/checkpoint`` (resumable state), ``out_dir/tb`` and ``out_dir/history.json``; with
    ``out_dir=None`` nothing is written and the best weights are loaded back into ``student``."""
    engine = Distiller(student, tokenizer, task, train_examples, dev_examples, config, out_dir, teachers=teachers,
                       callbacks=callbacks, resume=resume)
    result = engine.fit()
    if out_dir is None and engine.best_state is not None:
        student.set_state_dict(engine.best_state)
    return result
