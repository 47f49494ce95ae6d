"""The engine's resumable checkpoint: model, KD projections, optimiser, LR schedule, RNG and loop state,
written as one atomic directory (``distill.fsutil.atomic_dir``), so a kill leaves the previous checkpoint
or the new one, never a mixture.

Optimiser accumulators are stored under structured parameter names: ``param.name`` (``linear_12.w_0``)
depends on how many layers the process built before, and differs between a run and its resume.
"""
from __future__ import annotations

import pickle
from pathlib import Path

from tinydistill.distill.fsutil import atomic_dir, read_json, write_json
from tinydistill.distill.runtime import rng_state, set_rng_state
from tinydistill.distill.schema import ConfigError


def save_checkpoint(path: Path, state: dict, student, losses, optimizer, scheduler, named) -> None:
    import paddle
    to_struct = {p.name: n for n, p in named}
    opt_state = {_rename(k, to_struct): v for k, v in optimizer.state_dict().items() if k != "LR_Scheduler"}
    with atomic_dir(path) as tmp:
        paddle.save(student.state_dict(), str(tmp / "student.pdparams"))
        paddle.save({str(i): l.state_dict() for i, l in enumerate(losses)}, str(tmp / "losses.pdparams"))
        paddle.save(opt_state, str(tmp / "optimizer.pdopt"))
        (tmp / "rng.pkl").write_bytes(pickle.dumps(rng_state()))
        write_json(tmp / "trainer_state.json", {**state, "scheduler": scheduler.state_dict()})


def load_checkpoint(path: Path, config_hash: str, student, losses, optimizer, scheduler, named) -> dict:
    """Restore everything ``save_checkpoint`` wrote; returns the loop state (a dict of TrainState fields)."""
    import paddle
    state = read_json(path / "trainer_state.json")
    if state.get("config_hash") != config_hash:
        raise ConfigError(f"{path}: checkpoint was written with a different config or training set; "
                          "resume with the same settings or start a new run without --resume")
    student.set_state_dict(paddle.load(str(path / "student.pdparams")))
    loss_states = paddle.load(str(path / "losses.pdparams"))
    for i, l in enumerate(losses):
        l.set_state_dict(loss_states.get(str(i), {}))
    from_struct = {n: p.name for n, p in named}
    optimizer.set_state_dict({_rename(k, from_struct): v
                              for k, v in paddle.load(str(path / "optimizer.pdopt")).items()})
    scheduler.set_state_dict(state.pop("scheduler"))
    set_rng_state(pickle.loads((path / "rng.pkl").read_bytes()))
    return state


def _rename(key: str, mapping: dict) -> str:
    # accumulator keys look like "<param.name>_moment1_0"; map the longest matching param prefix
    best = max((n for n in mapping if key.startswith(n + "_") or key == n), key=len, default=None)
    return mapping[best] + key[len(best):] if best else key
