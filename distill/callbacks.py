"""The engine's built-in callbacks (``distill.engine.Callback``): tensorboardX logging and the progress bar.

A ``Distiller`` with an ``out_dir`` adds both on rank 0; pass more with ``callbacks=[...]``.
"""
from __future__ import annotations

import sys

from tinydistill.distill.engine import Callback


class TensorBoardLogger(Callback):
    """``out_dir/tb``: every loss term, total loss and lr every ``log_every`` steps (and step 1), every dev
    metric at every evaluation.  A resumed run purges events past its checkpoint."""

    def __init__(self):
        self.writer = None

    def _open(self, engine):
        if self.writer is None:
            from tensorboardX import SummaryWriter
            step = engine.state.global_step - 1   # opened at the first step end after (re)start
            self.writer = SummaryWriter(str(engine.out_dir / "tb"), purge_step=step or None)
        return self.writer

    def on_step_end(self, engine, logs):
        step = engine.state.global_step
        if step % engine.config.log_every == 0 or step == 1:
            w = self._open(engine)
            w.add_scalar("train/loss", float(logs["loss"]), step)
            w.add_scalar("train/lr", logs["lr"], step)
            for name, value in logs.items():
                if name.startswith("loss/"):
                    w.add_scalar(f"train/{name}", float(value), step)

    def on_evaluate(self, engine, metrics, improved):
        w = self._open(engine)
        for name, value in metrics.items():
            w.add_scalar(f"dev/{name}", float(value), engine.state.global_step)

    def on_stop(self, engine, reason):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class ProgressBar(Callback):
    """A tqdm bar with ETA on stderr (``distill.progress: false`` turns it off)."""

    def __init__(self):
        self.bar = None

    def on_step_end(self, engine, logs):
        if not engine.config.progress:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=engine.total_steps, initial=engine.state.global_step - 1, file=sys.stderr,
                            desc="train", unit="step", dynamic_ncols=True, mininterval=1.0)
        self.bar.update(1)
        if engine.state.global_step % engine.config.log_every == 0:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_stop(self, engine, reason):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
