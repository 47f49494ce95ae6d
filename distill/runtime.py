"""Process-level settings of training: the random seeds and paddle's CPU thread count.

Paddle sets ``OMP_NUM_THREADS=1`` when it is imported and that variable was unset, so without an explicit
setting its CPU kernels use one core and the others idle.  ``set_cpu_threads`` sets paddle's intra-op
thread count at run time (``paddle.base.core.set_num_threads``), which works after import.  The engine
calls it with ``distill.threads`` (default: the cores this process may run on).  Exact resume after a
kill is tested on 1 thread: with more, MKL's parallel reductions may add in another order.

bf16 mixed precision is not offered: ``paddle.amp.auto_cast(dtype="bfloat16", level="O1")`` around a plain
training loop on this CPU (AVX512-BF16) trained at 72.9 vs 68.5 examples per CPU-second (nano SLU), 18.8 vs
20.1 (nano ChnSentiCorp) and 33.3 vs 33.0 (Bi-LSTM) against FP32, i.e. no measurable gain in CPU time
(``experiments/results/train_speed.md``, side ``plain-bf16``): paddle 3.0's dygraph CPU kernels do not run
these matmuls in bf16.
"""
from __future__ import annotations

import os
import random


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_cpu_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads in paddle's kernels (``None``: every available core); returns the count."""
    from paddle.base import core

    n = available_cores() if threads is None else int(threads)
    core.set_num_threads(n)
    return n


def seed_everything(seed: int) -> None:
    """Seed python, numpy and paddle, so a model's random initialisation (and so the whole run) is the same
    in every process for the same seed."""
    import numpy as np
    import paddle

    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    paddle.seed(seed)


def rng_state() -> dict:
    import numpy as np
    import paddle

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "paddle": paddle.get_rng_state()}
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        state["cuda"] = paddle.get_cuda_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np
    import paddle

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])
    if "cuda" in state and paddle.device.is_compiled_with_cuda():
        paddle.set_cuda_rng_state(state["cuda"])
