"""The training engine: ``Distiller`` runs teacher fine-tuning, the no-KD baseline and distillation alike.

Why a hand-written loop rather than paddlenlp's ``Trainer``: one step here runs a student and zero or
more teachers (each with its own tokenizer), reads per-example teacher logits computed up front, applies
several per-head losses with schedules and learned projections that the student's optimiser trains but
the saved model must not contain, and resumes *exactly* (data order, dropout RNG, optimiser, schedules,
early stopping) after a kill.  ``Trainer`` would need overriding of nearly all of that.

Shape (after TextBrewer's Distiller): the loop's state is a ``TrainState``; the engine calls its
``callbacks`` at ``on_train_begin`` (after set-up and any resume), ``on_step_end`` (after every optimisation
step, with the loss terms),
``on_evaluate`` (after every dev evaluation, with the metrics and whether they improved), ``on_checkpoint``
(after the resumable checkpoint is written) and ``on_stop`` (once, with the reason).  Logging to
tensorboardX and the progress bar are such callbacks; users add their own.

With ``out_dir=None`` nothing is written to disk: the best dev weights are kept in memory
(``Distiller.best_state``) - the compression steps train this way and load the weights straight back.
With an ``out_dir`` the engine writes ``out_dir/best`` (a model directory), ``out_dir/checkpoint``
(resumable state), ``out_dir/history.json`` and, through ``TensorBoardLogger``, ``out_dir/tb``.

Data parallelism: run the same script under ``python -m paddle.distributed.launch``; with world size > 1
the student is wrapped in ``paddle.DataParallel``, every rank reads its own batches of the same epoch
order, the KD projections' gradients are all-reduced by hand, only rank 0 evaluates and writes, and the
early-stopping decision is broadcast.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Sequence

from tinydistill.distill.augment import augment_examples
from tinydistill.distill.batching import collate, encode_examples, epoch_batches, evaluate, model_forward
from tinydistill.distill.checkpoint import load_checkpoint, save_checkpoint
from tinydistill.distill.config import DistillConfig, loss_identity
from tinydistill.distill.fsutil import write_json
from tinydistill.distill.hooks import FeatureCapture, probe
from tinydistill.distill.losses import LossInputs, LossSetup, build_losses, uses_teacher
from tinydistill.distill.runtime import available_cores, seed_everything, set_cpu_threads
from tinydistill.distill.schema import ConfigError, to_dict
from tinydistill.distill.teaching import TeacherTargets, same_tokenization

#: test hook: SIGKILL the training process right after this optimisation step (simulates a crash)
KILL_ENV = "TINYDISTILL_KILL_AFTER_STEP"


@dataclass
class TrainState:
    """Everything the loop carries between steps; saved in every checkpoint and restored on resume."""

    global_step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int = -1
    best_metrics: dict = field(default_factory=dict)
    bad_evals: int = 0
    history: list = field(default_factory=list)
    stopped_early: bool = False
    config_hash: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> "TrainState":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


class Callback:
    """Override any of these; ``engine`` gives the state (``engine.state``), model, config and output dir."""

    def on_train_begin(self, engine: "Distiller") -> None:
        """After set-up (and after a resume restored the state), before the first step."""

    def on_step_end(self, engine: "Distiller", logs: dict) -> None:
        """``logs``: ``loss`` (tensor), ``lr``, ``loss/<term>`` tensors of this step."""

    def on_evaluate(self, engine: "Distiller", metrics: dict, improved: bool) -> None:
        pass

    def on_checkpoint(self, engine: "Distiller", path: Path) -> None:
        pass

    def on_stop(self, engine: "Distiller", reason: str) -> None:
        """``reason``: ``max_steps``, ``early_stopping`` or ``finished_already``."""


@dataclass
class TrainResult:
    best_metrics: dict
    best_dir: Path | None
    best_step: int
    history: list
    global_step: int
    stopped_early: bool = False
    num_train_examples: int = 0       # including augmented copies
    train_seconds: float = 0.0        # optimisation time (no evaluation, no teacher pre-computation)
    examples_per_second: float = 0.0
    teacher_seconds: float = 0.0      # time spent computing teacher logits up front
    cache: dict = field(default_factory=dict)
    steps_per_epoch: int = 0
    threads: int = 1

    @property
    def epochs_run(self) -> float:
        return self.global_step / self.steps_per_epoch if self.steps_per_epoch else 0.0


def config_hash(config: DistillConfig, n_train: int) -> str:
    cfg = loss_identity(to_dict(config))   # loss entries as hashed before each loss had its own parameters
    for key in ("progress", "log_every", "cache_dir", "teacher_cache", "threads"):  # do not change results
        cfg.pop(key, None)
    return hashlib.sha1(json.dumps([cfg, n_train], sort_keys=True, default=str).encode()).hexdigest()[:16]


def lr_lambda(config: DistillConfig, total_steps: int):
    warmup = int(config.warmup_ratio * total_steps)

    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.lr_schedule == "constant":
            return 1.0
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
    return fn


class Distiller:
    """Train ``student`` on ``train_examples`` with ``config.losses`` and ``teachers`` ((model, tokenizer)
    pairs); ``fit()`` returns a ``TrainResult``.  The student is left at its last state; the best dev weights
    are ``out_dir/best`` (or ``best_state`` without an out_dir).  Under data parallelism only rank 0
    evaluates, so other ranks return empty ``best_metrics``."""

    def __init__(self, student, tokenizer, task, train_examples, dev_examples, config: DistillConfig,
                 out_dir=None, teachers: Sequence = (), callbacks: Sequence[Callback] = (), resume: bool = False):
        import paddle.distributed as dist

        self.student, self.tokenizer, self.task, self.config = student, tokenizer, task, config
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.teachers, self.resume = list(teachers), resume
        self.world = dist.get_world_size()
        self.rank = dist.get_rank() if self.world > 1 else 0
        self.callbacks = list(callbacks)
        if self.out_dir is not None and self.rank == 0:
            from tinydistill.distill.callbacks import ProgressBar, TensorBoardLogger
            self.callbacks = [TensorBoardLogger(), ProgressBar(), *self.callbacks]
        self.train_examples, self.dev_examples = list(train_examples), list(dev_examples or [])
        self.state = TrainState()
        self.best_state: dict | None = None
        self._hooks: list = []

    # -- set-up ------------------------------------------------------------------------------------
    def _setup(self) -> None:
        import paddle
        import paddle.distributed as dist

        cfg = self.config
        # data parallelism on one machine: the cores are shared among the ranks
        self.threads = set_cpu_threads(cfg.threads or max(1, available_cores() // self.world))
        if self.world > 1:
            dist.init_parallel_env()
        # same seed on every rank: identical initialisation of the loss projections, which live outside
        # paddle.DataParallel (their gradients are all-reduced by hand)
        seed_everything(cfg.seed)
        task, tok = self.task, self.tokenizer
        if not self.train_examples:
            raise ConfigError("distill: no training examples")
        examples = self.train_examples
        if cfg.augment is not None:
            if not self.teachers or not uses_teacher(cfg.losses):
                raise ConfigError("distill.augment: augmented copies have no gold labels; they need a teacher and "
                                  "a loss that reads it (soft_ce, logits_mse, ...) - add them or remove 'augment'")
            examples = examples + augment_examples(examples, cfg.augment, cfg.seed)
        self.encoded = encode_examples(task, examples, tok)
        self.dev_encoded = encode_examples(task, self.dev_examples, tok)
        aligned = all(same_tokenization(tok, t_tok) for _, t_tok in self.teachers)
        # features by module path: one capture per model, whose hooks the losses register while they are built
        self.captures = [FeatureCapture(self.student, "student", self._hooks)] + \
            [FeatureCapture(m, "teacher" if len(self.teachers) == 1 else f"teacher {k}", self._hooks)
             for k, (m, _) in enumerate(self.teachers)]

        def probe_forward(k, hidden):  # k: None = the student, else teacher k (sizes the losses' projections)
            model, t_tok = (self.student, tok) if k is None else self.teachers[k]
            enc = self.encoded[:2] if k is None else encode_examples(task, examples[:2], t_tok)
            return probe(model, task, enc, t_tok.pad_token_id, self.captures[0 if k is None else k + 1], hidden)

        setup = LossSetup(task.heads(), self.student, [m for m, _ in self.teachers], aligned,
                          student_features=self.captures[0], teacher_features=self.captures[1:], probe=probe_forward)
        self.losses = build_losses(cfg.losses, setup)
        self.needs = set().union(*(l.needs for l in self.losses))
        t0 = time.perf_counter()
        self.targets = TeacherTargets(task, self.teachers, examples, self.encoded, tok, cfg, self.losses,
                                      self.captures[1:])
        self.teacher_seconds = time.perf_counter() - t0 if self.targets.per_example is not None else 0.0

        self.lengths = [len(e.input_ids) for e in self.encoded]
        self.steps_per_epoch = len(self._batches(0))
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.model = paddle.DataParallel(self.student, find_unused_parameters=True) if self.world > 1 \
            else self.student
        self.loss_params = [p for l in self.losses for p in l.parameters()]
        self.named = list(self.student.named_parameters()) + \
            [(f"loss{i}.p{j}", p) for i, l in enumerate(self.losses) for j, p in enumerate(l.parameters())]
        decay = {p.name for n, p in self.named if not any(k in n for k in ("bias", "norm"))}
        self.scheduler = paddle.optimizer.lr.LambdaDecay(cfg.lr, lr_lambda(cfg, self.total_steps))
        clip = paddle.nn.ClipGradByGlobalNorm(cfg.max_grad_norm) if cfg.max_grad_norm else None
        self.optimizer = paddle.optimizer.AdamW(learning_rate=self.scheduler, parameters=[p for _, p in self.named],
                                                weight_decay=cfg.weight_decay, grad_clip=clip,
                                                apply_decay_param_fun=lambda name: name in decay)
        self.state = TrainState(config_hash=config_hash(cfg, len(self.encoded)))
        ckpt = self.checkpoint_dir
        if ckpt is not None and self.resume and (ckpt / "trainer_state.json").is_file():
            self.state = TrainState.from_dict(load_checkpoint(ckpt, self.state.config_hash, self.student,
                                                              self.losses, self.optimizer, self.scheduler,
                                                              self.named))
        elif self.out_dir is not None and self.rank == 0 and not self.resume:  # fresh run: drop old state
            for stale in (ckpt, self.out_dir / "tb"):
                shutil.rmtree(stale, ignore_errors=True)
            (self.out_dir / "history.json").unlink(missing_ok=True)

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.out_dir / "checkpoint" if self.out_dir is not None else None

    def _batches(self, epoch: int) -> list[list[int]]:
        cfg = self.config
        return epoch_batches(self.lengths, cfg.batch_size, cfg.seed, epoch, bucketing=cfg.length_bucketing,
                             window=cfg.bucket_window, world=self.world, rank=self.rank)

    def _emit(self, event: str, *args) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        try:
            return self._fit()
        finally:
            for hook in self._hooks:
                hook.remove()
            self._hooks.clear()

    def _fit(self) -> TrainResult:
        self._setup()
        st, cfg = self.state, self.config
        done = st.global_step >= self.total_steps or st.stopped_early
        self._emit("on_train_begin")
        if done:
            self._emit("on_stop", "finished_already")
        self.train_seconds, trained = 0.0, 0
        eval_every = cfg.eval_every or self.steps_per_epoch
        kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
        self.model.train()
        while not done:
            epoch, skip = st.epoch, st.batch_in_epoch
            for b, idx in enumerate(self._batches(epoch)):
                if b < skip:
                    continue
                t0 = time.perf_counter()
                logs = self._step(idx)
                self.train_seconds += time.perf_counter() - t0
                trained += len(idx)
                st.global_step += 1
                st.batch_in_epoch = b + 1
                self._emit("on_step_end", logs)
                last_of_epoch = b + 1 == self.steps_per_epoch
                if last_of_epoch:
                    st.epoch, st.batch_in_epoch = epoch + 1, 0
                step = st.global_step
                if step % eval_every == 0 or step >= self.total_steps or (cfg.eval_every is None and last_of_epoch):
                    self._evaluate_and_checkpoint(epoch)
                if kill_after and step == kill_after:   # test hook: a crash right after this step's checkpoint
                    os.kill(os.getpid(), signal.SIGKILL)
                if step >= self.total_steps or st.stopped_early:
                    self._emit("on_stop", "early_stopping" if st.stopped_early else "max_steps")
                    done = True
                    break
            else:
                if self.steps_per_epoch == 0:
                    break
        return TrainResult(
            best_metrics=st.best_metrics, best_dir=self.out_dir / "best" if self.out_dir is not None else None,
            best_step=st.best_step, history=st.history, global_step=st.global_step, stopped_early=st.stopped_early,
            num_train_examples=len(self.encoded), train_seconds=self.train_seconds,
            examples_per_second=trained / self.train_seconds if self.train_seconds else 0.0,
            teacher_seconds=self.teacher_seconds, cache=self.targets.stats, steps_per_epoch=self.steps_per_epoch,
            threads=self.threads)

    def _step(self, idx: list[int]) -> dict:
        import paddle
        import paddle.distributed as dist

        step, task = self.state.global_step, self.task
        batch = collate(task, [self.encoded[i] for i in idx], self.tokenizer.pad_token_id)
        self.captures[0].clear()
        out = model_forward(self.model, batch, "hidden_states" in self.needs, "attentions" in self.needs)
        inputs = LossInputs(
            student=out,
            labels={h.name: paddle.to_tensor(batch[f"labels/{h.name}"]) for h in task.heads()},
            attention_mask=paddle.to_tensor(batch["attention_mask"].astype("float32")),
            token_mask=paddle.to_tensor(batch["token_mask"]), features=self.captures[0].take(),
            step=step, total_steps=self.total_steps)
        if self.targets.active:
            self.targets.fill(inputs, idx, batch)
        total, logs = 0.0, {}
        for loss_obj in self.losses:
            terms = loss_obj(inputs)
            for name, value in terms.items():
                logs[f"loss/{name}"] = value
            total = total + loss_obj.weight_at(step, self.total_steps) * sum(terms.values())
        total.backward()
        if self.world > 1:
            with paddle.no_grad():
                for p in self.loss_params:
                    if p.grad is not None:
                        grad = p.grad.detach()
                        dist.all_reduce(grad)
                        p.grad.set_value(grad / self.world)
        self.optimizer.step()
        self.optimizer.clear_grad()
        logs["lr"] = self.optimizer.get_lr()
        logs["loss"] = total
        self.scheduler.step()
        return logs

    # -- evaluation, best weights, checkpoint --------------------------------------------------------
    def _evaluate_and_checkpoint(self, epoch: int) -> None:
        st = self.state
        if self.rank == 0:
            main = self.task.main_metric
            # without dev examples every evaluation point keeps the latest weights as "best"
            metrics = evaluate(self.student, self.tokenizer, self.task, None, self.config.eval_batch_size,
                               encoded=self.dev_encoded) if self.dev_encoded else {}
            if metrics and main not in metrics:
                raise KeyError(f"task {self.task.name!r}: main metric {main!r} not in computed metrics "
                               f"{sorted(metrics)}")
            st.history.append({"step": st.global_step, "epoch": epoch, **{k: float(v) for k, v in metrics.items()}})
            improved = not metrics or st.best_metric is None or metrics[main] > st.best_metric
            if improved:
                st.best_metric = float(metrics[main]) if metrics else None
                st.best_step, st.bad_evals = st.global_step, 0
                st.best_metrics = {k: float(v) for k, v in metrics.items()}
                self._keep_best()
            else:
                st.bad_evals += 1
                patience = self.config.early_stopping_patience
                if patience is not None and st.bad_evals >= patience:
                    st.stopped_early = True
            self._emit("on_evaluate", metrics, improved)
            if self.out_dir is not None:
                write_json(self.out_dir / "history.json", {"main_metric": main, "best_step": st.best_step,
                                                           "best": st.best_metrics, "evals": st.history})
                save_checkpoint(self.checkpoint_dir, asdict(st), self.student, self.losses, self.optimizer,
                                self.scheduler, self.named)
                self._emit("on_checkpoint", self.checkpoint_dir)
        if self.world > 1:
            import paddle
            import paddle.distributed as dist
            flag = paddle.to_tensor([1 if st.stopped_early else 0], dtype="int64")
            dist.broadcast(flag, src=0)
            st.stopped_early = bool(int(flag.numpy()[0]))

    def _keep_best(self) -> None:
        st = self.state
        if self.out_dir is None:
            self.best_state = {k: v.clone() for k, v in self.student.state_dict().items()}
            return
        from tinydistill.distill.modeldir import save_model_dir
        save_model_dir(self.out_dir / "best", self.student, self.tokenizer, self.task,
                       extra={"step": st.global_step, "dev_metrics": st.best_metrics,
                              "main_metric": self.task.main_metric})
