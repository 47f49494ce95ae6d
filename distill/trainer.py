"""The training loop shared by teacher fine-tuning, the no-KD baseline and distillation.

Why a hand-written loop rather than paddlenlp's ``Trainer``: one step here runs a student and zero or
more teachers (each with its own tokenizer), reads per-example teacher logits from an on-disk cache
shared across runs, applies several per-head losses with schedules and a learned projection that the
student's optimiser must train but the saved model must not contain, and has to resume *exactly*
(data order, dropout RNG, optimiser, schedules, early-stopping state) after a kill.  ``Trainer`` would
need overriding of nearly all of this (``compute_loss``, the data loader, saving, resuming) and its
checkpoints store one model.

Data parallelism: run the same script under ``python -m paddle.distributed.launch --nproc_per_node N``
(CPU, gloo) or ``--gpus 0,1`` (GPU).  With world size > 1 the student is wrapped in
``paddle.DataParallel``, each process reads its shard of every epoch through
``paddle.io.DistributedBatchSampler`` (``batch_size`` is per process), and only rank 0 evaluates,
logs and writes checkpoints; the early-stopping decision is broadcast.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from distill.augment import apply_masks, augment_examples
from distill.cache import TeacherCache, default_cache_root, example_key, teacher_fingerprint
from distill.config import DistillConfig
from distill.fsutil import atomic_dir, read_json, write_json
from distill.losses import LOSSES, LossInputs, LossSetup, build_losses
from distill.multiteacher import mix_logits
from distill.schedules import scheduled
from distill.schema import ConfigError, to_dict
from tasks.base import IGNORE_INDEX

#: test hook: SIGKILL the training process right after this optimisation step (simulates a crash)
KILL_ENV = "TINYDISTILL_KILL_AFTER_STEP"


@dataclass
class TrainResult:
    best_metrics: dict
    best_dir: Path
    best_step: int
    history: list
    global_step: int
    stopped_early: bool = False
    num_train_examples: int = 0       # including augmented copies
    train_seconds: float = 0.0        # optimisation time (no evaluation, no teacher pre-computation)
    examples_per_second: float = 0.0
    teacher_seconds: float = 0.0      # time spent computing teacher logits up front (cache misses)
    cache: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# encoding, batching, inference
# ----------------------------------------------------------------------------------------------
def encode_examples(task, examples, tokenizer) -> list:
    """``task.encode`` every example; augmented examples get their masked words collapsed to one mask
    token of this tokenizer."""
    return [apply_masks(task.encode(ex, tokenizer), ex, tokenizer) for ex in examples]


def collate(task, encoded: Sequence, pad_id: int) -> dict[str, np.ndarray]:
    """``task.collate`` plus ``labels/<head>`` for every head (IGNORE_INDEX where an example has no gold
    label, e.g. augmented copies) and ``token_mask`` (1 on real text tokens, 0 on specials/padding)."""
    batch = task.collate(encoded, pad_id)
    length = batch["input_ids"].shape[1]
    for head in task.heads():
        if f"labels/{head.name}" in batch:
            continue
        if head.kind == "sequence":
            batch[f"labels/{head.name}"] = np.array([e.labels.get(head.name, IGNORE_INDEX) for e in encoded],
                                                    dtype="int64")
        else:
            arr = np.full((len(encoded), length), IGNORE_INDEX, dtype="int64")
            for i, e in enumerate(encoded):
                lab = e.labels.get(head.name)
                if lab is not None:
                    arr[i, :len(lab)] = lab
            batch[f"labels/{head.name}"] = arr
    tm = np.zeros((len(encoded), length), dtype="float32")
    for i, e in enumerate(encoded):
        tm[i, :len(e.offsets)] = [1.0 if end > start else 0.0 for start, end in e.offsets]
    batch["token_mask"] = tm
    return batch


def _forward(model, batch, hidden=False, attentions=False):
    import paddle
    return model(paddle.to_tensor(batch["input_ids"]), token_type_ids=paddle.to_tensor(batch["token_type_ids"]),
                 attention_mask=paddle.to_tensor(batch["attention_mask"]),
                 output_hidden_states=hidden, output_attentions=attentions)


def predict_logits(model, task, encoded: Sequence, pad_id: int, batch_size: int = 64) -> list[dict]:
    """Per-example logits ``{head: [C] | [L, C]}`` (token heads cut to the example's length), eval mode."""
    import paddle
    was_training = model.training
    model.eval()
    out: list[dict] = []
    try:
        with paddle.no_grad():
            for start in range(0, len(encoded), batch_size):
                chunk = encoded[start:start + batch_size]
                logits = _forward(model, collate(task, chunk, pad_id))["logits"]
                arrays = {h: v.numpy() for h, v in logits.items()}
                for i, e in enumerate(chunk):
                    out.append({h: (a[i, :len(e.input_ids)] if a.ndim == 3 else a[i]) for h, a in arrays.items()})
    finally:
        if was_training:
            model.train()
    return out


def stack_logits(per_example: list[dict], heads) -> dict[str, np.ndarray]:
    """Per-example logits -> ``{head: [N, C] | [N, Lmax, C]}`` (token heads zero-padded)."""
    out = {}
    for head in heads:
        rows = [p[head.name] for p in per_example]
        if head.kind == "sequence":
            out[head.name] = np.stack(rows)
        else:
            length = max(len(r) for r in rows)
            arr = np.zeros((len(rows), length, rows[0].shape[-1]), dtype="float32")
            for i, r in enumerate(rows):
                arr[i, :len(r)] = r
            out[head.name] = arr
    return out


def evaluate(model, tokenizer, task, examples, batch_size: int = 64, encoded=None) -> dict:
    """Metrics of ``model`` on ``examples`` (``task.compute_metrics``, percentages)."""
    if encoded is None:
        encoded = encode_examples(task, examples, tokenizer)
    per_example = predict_logits(model, task, encoded, tokenizer.pad_token_id, batch_size)
    return task.compute_metrics(stack_logits(per_example, task.heads()), encoded)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def _same_tokenization(a, b) -> bool:
    return a is b or (type(a) is type(b) and list(a.vocab) == list(b.vocab))


def _unwrap(model):
    return getattr(model, "_layers", model)


class ValueCapture:
    """Records the value projection output of the last ``paddle.nn.MultiHeadAttention`` of a model
    (MiniLM's value relation), via a forward post-hook on its ``v_proj``."""

    def __init__(self, model, who: str, hooks: list):
        import paddle
        attns = [m for m in model.sublayers() if isinstance(m, paddle.nn.MultiHeadAttention)]
        if not attns:
            raise ConfigError(f"minilm: the {who} {getattr(model, 'arch', type(model).__name__)!r} has no "
                              "paddle.nn.MultiHeadAttention layer to read values from")
        self.value = None
        hooks.append(attns[-1].v_proj.register_forward_post_hook(self._record))

    def _record(self, layer, inputs, output):
        self.value = output


def _hidden_widths(model, task, encoded, pad_id) -> list[int]:
    """Width of every ``hidden_states`` entry (a probe forward in eval mode; no RNG is consumed)."""
    import paddle
    was_training = model.training
    model.eval()
    with paddle.no_grad():
        hidden = _forward(model, collate(task, encoded, pad_id), hidden=True)["hidden_states"]
    if was_training:
        model.train()
    return [int(h.shape[-1]) for h in hidden]


def _seed_everything(seed: int) -> None:
    import paddle
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    paddle.seed(seed)


def _rng_state() -> dict:
    import paddle
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "paddle": paddle.get_rng_state()}
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        state["cuda"] = paddle.get_cuda_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    import paddle
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])
    if "cuda" in state and paddle.device.is_compiled_with_cuda():
        paddle.set_cuda_rng_state(state["cuda"])


def _config_hash(config: DistillConfig, n_train: int) -> str:
    cfg = to_dict(config)
    for key in ("progress", "log_every", "cache_dir", "teacher_cache"):  # do not change results
        cfg.pop(key, None)
    return hashlib.sha1(json.dumps([cfg, n_train], sort_keys=True, default=str).encode()).hexdigest()[:16]


def _lr_lambda(config: DistillConfig, total_steps: int):
    warmup = int(config.warmup_ratio * total_steps)

    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.lr_schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
    return fn


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------
def train(student, tokenizer, task, train_examples, dev_examples, config: DistillConfig, out_dir,
          teachers: Sequence = (), resume: bool = False) -> TrainResult:
    """Train ``student`` on ``train_examples`` with ``config.losses`` (and ``teachers``: (model, tokenizer)
    pairs); see module doc.  Writes ``out_dir/best`` (model dir of the best dev checkpoint),
    ``out_dir/checkpoint`` (resumable state), ``out_dir/tb`` and ``out_dir/history.json``.  The student is
    left at its last state; load ``result.best_dir`` for the best one.  Under data parallelism only rank 0
    evaluates, so other ranks return empty ``best_metrics``."""
    hooks: list = []   # forward hooks this call registers (MiniLM values); removed whatever happens
    try:
        return _train(student, tokenizer, task, train_examples, dev_examples, config, Path(out_dir), list(teachers),
                      resume, hooks)
    finally:
        for hook in hooks:
            hook.remove()


def _train(student, tokenizer, task, train_examples, dev_examples, config, out_dir, teachers, resume, hooks):
    import paddle
    import paddle.distributed as dist

    world = dist.get_world_size()
    rank = dist.get_rank() if world > 1 else 0
    if world > 1:
        dist.init_parallel_env()
    # same seed on every rank: identical initialisation of the loss projections, which live outside
    # paddle.DataParallel (their gradients are all-reduced by hand below)
    _seed_everything(config.seed)
    heads = task.heads()
    pad_id = tokenizer.pad_token_id

    # -- data: originals + teacher-labelled augmented copies -----------------------------------
    train_examples = list(train_examples)
    if not train_examples:
        raise ConfigError("distill: no training examples")
    if config.augment is not None:
        if not teachers or not any(LOSSES.get(c.type).needs_teacher for c in config.losses):
            raise ConfigError("distill.augment: augmented copies have no gold labels; they need a teacher and a "
                              "loss that reads it (soft_ce, logits_mse, ...) - add them or remove 'augment'")
        train_examples += augment_examples(train_examples, config.augment, config.seed)
    encoded = encode_examples(task, train_examples, tokenizer)
    dev_encoded = encode_examples(task, list(dev_examples or []), tokenizer)
    aligned = all(_same_tokenization(tokenizer, t_tok) for _, t_tok in teachers)

    # -- losses and what they need ------------------------------------------------------------
    setup = LossSetup(heads, student, [m for m, _ in teachers], aligned)
    if any(LOSSES.get(c.type).needs & {"hidden_states"} for c in config.losses) and teachers:
        setup.student_widths = _hidden_widths(student, task, encoded[:2], pad_id)
        setup.teacher_widths = [_hidden_widths(m, task, encode_examples(task, train_examples[:2], t_tok),
                                               t_tok.pad_token_id) for m, t_tok in teachers]
    losses = build_losses(config.losses, setup)
    needs = set().union(*(l.needs for l in losses))
    need_teacher_logits = any(l.needs_teacher and not l.needs for l in losses)
    need_internals = any(l.needs_teacher and l.needs for l in losses)
    student_values = ValueCapture(student, "student", hooks) if "values" in needs else None
    teacher_values = [ValueCapture(m, "teacher", hooks) if "values" in needs else None for m, _ in teachers]
    for model, _ in teachers:
        model.eval()
    online = bool(teachers) and (need_internals or (need_teacher_logits and config.teacher_cache == "off"))
    t_encoded = [encoded if _same_tokenization(tokenizer, t_tok) else encode_examples(task, train_examples, t_tok)
                 for _, t_tok in teachers] if online else []

    # -- teacher logits up front (cache) --------------------------------------------------------
    teacher_seconds, cache_stats, cached_logits = 0.0, {}, None
    if teachers and need_teacher_logits and not online:
        t0 = time.perf_counter()
        cached_logits, cache_stats = _cached_teacher_logits(task, teachers, train_examples, encoded, tokenizer,
                                                            config)
        teacher_seconds = time.perf_counter() - t0

    # -- optimiser, schedule, sampler --------------------------------------------------------------
    sampler = paddle.io.DistributedBatchSampler(list(range(len(encoded))), batch_size=config.batch_size,
                                                num_replicas=world, rank=rank, shuffle=True)
    steps_per_epoch = len(sampler)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    model = paddle.DataParallel(student, find_unused_parameters=True) if world > 1 else student
    loss_params = [p for l in losses for p in l.parameters()]
    named = list(student.named_parameters()) + \
        [(f"loss{i}.p{j}", p) for i, l in enumerate(losses) for j, p in enumerate(l.parameters())]
    decay = {p.name for n, p in named if not any(k in n for k in ("bias", "norm"))}
    scheduler = paddle.optimizer.lr.LambdaDecay(config.lr, _lr_lambda(config, total_steps))
    clip = paddle.nn.ClipGradByGlobalNorm(config.max_grad_norm) if config.max_grad_norm else None
    optimizer = paddle.optimizer.AdamW(learning_rate=scheduler, parameters=[p for _, p in named],
                                       weight_decay=config.weight_decay, grad_clip=clip,
                                       apply_decay_param_fun=lambda name: name in decay)

    # -- state / resume ---------------------------------------------------------------------------
    state = {"global_step": 0, "epoch": 0, "batch_in_epoch": 0, "best_metric": None, "best_step": -1,
             "best_metrics": {}, "bad_evals": 0, "history": [], "stopped_early": False,
             "config_hash": _config_hash(config, len(encoded))}
    ckpt = out_dir / "checkpoint"
    if resume and (ckpt / "trainer_state.json").is_file():
        state = _load_checkpoint(ckpt, state["config_hash"], student, losses, optimizer, scheduler, named)
    elif rank == 0 and not resume:  # a fresh run: drop what an earlier run left here
        import shutil
        for stale in (ckpt, out_dir / "tb"):
            shutil.rmtree(stale, ignore_errors=True)
        (out_dir / "history.json").unlink(missing_ok=True)
    done = state["global_step"] >= total_steps or state["stopped_early"]

    writer = None
    if rank == 0:
        from tensorboardX import SummaryWriter
        writer = SummaryWriter(str(out_dir / "tb"), purge_step=state["global_step"] or None)
    progress = _progress(total_steps, state["global_step"], config.progress and rank == 0)
    kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
    main_metric = task.main_metric
    train_seconds, trained_examples = 0.0, 0
    eval_every = config.eval_every or steps_per_epoch
    model.train()

    while not done:
        epoch, skip = state["epoch"], state["batch_in_epoch"]
        sampler.set_epoch(config.seed * 1000 + epoch)
        for b, idx in enumerate(sampler):
            if b < skip:
                continue
            t0 = time.perf_counter()
            step = state["global_step"]
            batch = collate(task, [encoded[i] for i in idx], pad_id)
            out = _forward(model, batch, "hidden_states" in needs, "attentions" in needs)
            if student_values is not None:
                out = dict(out, values=student_values.value)
            inputs = LossInputs(
                student=out,
                labels={h.name: paddle.to_tensor(batch[f"labels/{h.name}"]) for h in heads},
                attention_mask=paddle.to_tensor(batch["attention_mask"].astype("float32")),
                token_mask=paddle.to_tensor(batch["token_mask"]))
            if online or cached_logits is not None:
                _teacher_inputs(inputs, task, teachers, idx, batch, cached_logits, t_encoded, needs,
                                teacher_values, config, need_teacher_logits)
            total, logged = 0.0, {}
            for loss_obj, cfg in zip(losses, config.losses):
                temperature = scheduled(cfg.temperature, cfg.temperature_schedule, step, total_steps)
                weight = scheduled(cfg.weight, cfg.weight_schedule, step, total_steps)
                terms = loss_obj(inputs, temperature)
                for name, value in terms.items():
                    logged[f"loss/{name}"] = value
                total = total + weight * sum(terms.values())
            total.backward()
            if world > 1:
                with paddle.no_grad():
                    for p in loss_params:
                        if p.grad is not None:
                            grad = p.grad.detach()
                            dist.all_reduce(grad)
                            p.grad.set_value(grad / world)
            optimizer.step()
            optimizer.clear_grad()
            lr = optimizer.get_lr()
            scheduler.step()
            train_seconds += time.perf_counter() - t0
            trained_examples += len(idx)
            state["global_step"] = step = step + 1
            state["batch_in_epoch"] = b + 1
            progress.update(1)
            if writer is not None and (step % config.log_every == 0 or step == 1):
                writer.add_scalar("train/loss", float(total), step)
                writer.add_scalar("train/lr", lr, step)
                for name, value in logged.items():
                    writer.add_scalar(f"train/{name}", float(value), step)
                progress.set_postfix(loss=f"{float(total):.4f}", refresh=False)
            last_of_epoch = b + 1 == steps_per_epoch
            if last_of_epoch:
                state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
            if step % eval_every == 0 or step >= total_steps or (config.eval_every is None and last_of_epoch):
                _eval_and_checkpoint(state, student, tokenizer, task, dev_encoded, config, out_dir, writer,
                                     losses, optimizer, scheduler, named, rank, main_metric, step, epoch)
                if world > 1:
                    flag = paddle.to_tensor([1 if state["stopped_early"] else 0], dtype="int64")
                    dist.broadcast(flag, src=0)
                    state["stopped_early"] = bool(int(flag.numpy()[0]))
            if kill_after and step == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            if step >= total_steps or state["stopped_early"]:
                done = True
                break
        else:
            if steps_per_epoch == 0:
                break
    progress.close()
    if writer is not None:
        writer.close()
    return TrainResult(
        best_metrics=state["best_metrics"], best_dir=out_dir / "best", best_step=state["best_step"],
        history=state["history"], global_step=state["global_step"], stopped_early=state["stopped_early"],
        num_train_examples=len(encoded), train_seconds=train_seconds,
        examples_per_second=trained_examples / train_seconds if train_seconds else 0.0,
        teacher_seconds=teacher_seconds, cache=cache_stats)


def _teacher_inputs(inputs, task, teachers, idx, batch, cached_logits, t_encoded, needs, teacher_values,
                    config, need_logits) -> None:
    """Fill ``inputs.teacher_logits`` (mixed) and, online, ``inputs.teachers`` (internals)."""
    import paddle
    per_teacher = []
    if cached_logits is not None:
        rows = [cached_logits[i] for i in idx]
        per_teacher = [_pad_batch([r[k] for r in rows], batch["input_ids"].shape[1]) for k in range(len(teachers))]
    else:
        with paddle.no_grad():
            for k, (model, t_tok) in enumerate(teachers):
                t_batch = collate(task, [t_encoded[k][i] for i in idx], t_tok.pad_token_id)
                t_out = _forward(model, t_batch, "hidden_states" in needs, "attentions" in needs)
                if teacher_values[k] is not None:
                    t_out = dict(t_out, values=teacher_values[k].value)
                inputs.teachers.append(t_out)
                per_teacher.append({h: v.numpy() for h, v in t_out["logits"].items()})
    if need_logits:
        mixed = mix_logits(per_teacher, config.mixing, batch["token_mask"])
        inputs.teacher_logits = {h: paddle.to_tensor(v) for h, v in mixed.items()}


def _pad_batch(rows: list[dict], length: int) -> dict[str, np.ndarray]:
    out = {}
    for head in rows[0]:
        if rows[0][head].ndim == 1:
            out[head] = np.stack([r[head] for r in rows])
        else:
            arr = np.zeros((len(rows), length, rows[0][head].shape[-1]), dtype="float32")
            for i, r in enumerate(rows):
                if len(r[head]) > length:
                    raise ValueError(f"teacher token logits ({len(r[head])} tokens) longer than the student's "
                                     f"batch ({length}): token-level KD needs the same tokenization")
                arr[i, :len(r[head])] = r[head]
            out[head] = arr
    return out


def _cached_teacher_logits(task, teachers, examples, encoded, tokenizer, config):
    """Per example, per teacher: logits from the cache, computing (and storing) only the misses."""
    root = Path(config.cache_dir) if config.cache_dir else default_cache_root()
    keys = [example_key(ex) for ex in examples]
    per_example: list[list] = [[None] * len(teachers) for _ in examples]
    stats = {"hits": 0, "misses": 0}
    for k, (model, t_tok) in enumerate(teachers):
        cache = TeacherCache(root, teacher_fingerprint(model, t_tok, task))
        missing = [i for i, key in enumerate(keys) if key not in cache]
        # unique keys only (duplicate texts in the data are computed once)
        todo = list({keys[i]: i for i in missing}.values())
        if todo:
            t_enc = [encoded[i] for i in todo] if _same_tokenization(tokenizer, t_tok) else \
                encode_examples(task, [examples[i] for i in todo], t_tok)
            outs = predict_logits(model, task, t_enc, t_tok.pad_token_id, config.eval_batch_size)
            cache.put([keys[i] for i in todo], outs)
        stats["hits"] += len(keys) - len(missing)
        stats["misses"] += len(missing)
        for i, key in enumerate(keys):
            per_example[i][k] = cache.get(key)
    return per_example, stats


def _progress(total: int, initial: int, enabled: bool):
    try:
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, disable=not enabled, file=sys.stderr, desc="train",
                    unit="step", dynamic_ncols=True, mininterval=1.0)
    except ImportError:  # plain stderr fallback with ETA
        return _PlainProgress(total, initial, enabled)


class _PlainProgress:
    def __init__(self, total, initial, enabled):
        self.total, self.n, self.enabled, self.t0, self.start, self.last = total, initial, enabled, \
            time.perf_counter(), initial, 0.0

    def update(self, k=1):
        self.n += k
        now = time.perf_counter()
        if self.enabled and (now - self.last > 2 or self.n == self.total):
            rate = (self.n - self.start) / max(now - self.t0, 1e-9)
            eta = (self.total - self.n) / rate if rate else float("inf")
            print(f"train {self.n}/{self.total} steps, {rate:.2f} step/s, ETA {eta:.0f}s", file=sys.stderr)
            self.last = now

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


# ----------------------------------------------------------------------------------------------
# evaluation, checkpoints
# ----------------------------------------------------------------------------------------------
def _eval_and_checkpoint(state, student, tokenizer, task, dev_encoded, config, out_dir, writer, losses,
                         optimizer, scheduler, named, rank, main_metric, step, epoch) -> None:
    if rank != 0:
        return
    from teachers.base import save_model_dir
    # without dev examples every evaluation point keeps the latest weights as "best"
    metrics = evaluate(student, tokenizer, task, None, config.eval_batch_size, encoded=dev_encoded) \
        if dev_encoded else {}
    if metrics and main_metric not in metrics:
        raise KeyError(f"task {task.name!r}: main metric {main_metric!r} not in computed metrics {sorted(metrics)}")
    record = {"step": step, "epoch": epoch, **{k: float(v) for k, v in metrics.items()}}
    state["history"].append(record)
    for name, value in metrics.items():
        writer.add_scalar(f"dev/{name}", float(value), step)
    improved = not metrics or state["best_metric"] is None or metrics[main_metric] > state["best_metric"]
    if improved:
        state.update(best_metric=float(metrics[main_metric]) if metrics else None, best_step=step,
                     best_metrics={k: float(v) for k, v in metrics.items()}, bad_evals=0)
        save_model_dir(out_dir / "best", student, tokenizer, task,
                       extra={"step": step, "dev_metrics": state["best_metrics"], "main_metric": main_metric})
    else:
        state["bad_evals"] += 1
        if config.early_stopping_patience is not None and state["bad_evals"] >= config.early_stopping_patience:
            state["stopped_early"] = True
    write_json(out_dir / "history.json", {"main_metric": main_metric, "best_step": state["best_step"],
                                          "best": state["best_metrics"], "evals": state["history"]})
    _save_checkpoint(out_dir / "checkpoint", state, student, losses, optimizer, scheduler, named)


def _save_checkpoint(path: Path, state, student, losses, optimizer, scheduler, named) -> None:
    """Model + loss projections + optimiser + LR schedule + RNG + loop state, as one atomic directory.
    Optimiser accumulators are stored under structured parameter names (``param.name`` differs between
    processes that built other models first)."""
    import paddle
    to_struct = {p.name: n for n, p in named}
    opt_state = {}
    for key, value in optimizer.state_dict().items():
        if key == "LR_Scheduler":
            continue
        opt_state[_rename(key, to_struct)] = value
    with atomic_dir(path) as tmp:
        paddle.save(student.state_dict(), str(tmp / "student.pdparams"))
        paddle.save({str(i): l.state_dict() for i, l in enumerate(losses)}, str(tmp / "losses.pdparams"))
        paddle.save(opt_state, str(tmp / "optimizer.pdopt"))
        (tmp / "rng.pkl").write_bytes(pickle.dumps(_rng_state()))
        write_json(tmp / "trainer_state.json", {**state, "scheduler": scheduler.state_dict()})


def _rename(key: str, mapping: dict) -> str:
    # accumulator keys look like "<param.name>_moment1_0"; map the longest matching param prefix
    best = max((n for n in mapping if key.startswith(n + "_") or key == n), key=len, default=None)
    return mapping[best] + key[len(best):] if best else key


def _load_checkpoint(path: Path, config_hash, student, losses, optimizer, scheduler, named) -> dict:
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
    opt_state = {_rename(k, from_struct): v for k, v in paddle.load(str(path / "optimizer.pdopt")).items()}
    optimizer.set_state_dict(opt_state)
    scheduler.set_state_dict(state.pop("scheduler"))
    _set_rng_state(pickle.loads((path / "rng.pkl").read_bytes()))
    return state
