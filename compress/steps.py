"""Compression steps (``STEPS``) and their parameters (strict dataclasses).  Light module: the work is done
in ``compress/prune.py`` and ``compress/quant.py``, imported when a step runs.

Every step: ``step(in_dir, out_dir, params, ctx: StepContext) -> report dict`` with ``params`` its parameters
dataclass (a mapping is validated into one first); it reads a model directory, writes a new one at ``out_dir``
(with ``report.json``) and returns the report (dev metrics, size on disk, parameter count, model-only latency).
A step that cannot apply to a model (e.g. ``width_prune`` on a Bi-LSTM) raises ``NotApplicable``;
``compress.pipeline.run_step`` then carries the model through unchanged and says so in the report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from tinydistill.compress import STEPS


class NotApplicable(Exception):
    """The step does not apply to this model (the message says why)."""


@dataclass
class StepContext:
    """What every step may use besides its own parameters."""

    data_dir: str | None = None  # the task's data (default: the task options in the manifest / $TINYDISTILL_DATA)
    threads: int = 1
    seed: int = 42
    max_train_examples: int | None = None  # cap training data (tests, quick runs)
    max_dev_examples: int | None = None  # cap dev data used for reports and INT8 checks
    latency_runs: int = 50  # model-only latency in reports (tinydistill bench does the real measurement)
    progress: bool = False
    log: Callable[[str], None] = print


@dataclass
class VocabPruneParams:
    # keep every token that occurs in the training text (at least ``min_count`` times) plus the specials, at most
    # ``max_vocab_size`` of them (specials included; the most frequent first); null: no cap
    max_vocab_size: int | None = None
    min_count: int = 1
    cut_positions: bool = True  # cut position embeddings to the task's max_seq_length

    def validate(self):
        if self.max_vocab_size is not None and self.max_vocab_size < 8:
            raise ValueError("max_vocab_size must be at least 8")
        if self.min_count < 1:
            raise ValueError("min_count must be at least 1")


@dataclass
class RecoverParams:
    """Distillation from the unpruned model after width pruning (``distill.config.DistillConfig`` fields)."""

    epochs: int = 2
    max_steps: int | None = None
    lr: float = 1e-4
    batch_size: int = 32
    losses: list[dict] = field(default_factory=lambda: [{"type": "soft_ce", "weight": 1.0, "temperature": 1.0},
                                                        {"type": "hard_ce", "weight": 0.5}])


@dataclass
class WidthPruneParams:
    width: float = 0.75  # fraction of attention heads and FFN neurons kept in every layer
    # override ``width`` for one part: on the scratch SLU nano, removing a quarter of the heads cost 2.1 dev points
    # before recovery and removing half of the FFN neurons 0.3 (README, Compression), so ``heads_width: 1.0,
    # ffn_width: 0.5`` removes more parameters than ``width: 0.75`` for less accuracy
    heads_width: float | None = None
    ffn_width: float | None = None
    importance_examples: int = 512  # training examples whose gradients score heads and neurons
    batch_size: int = 32
    recover: RecoverParams | None = field(default_factory=RecoverParams)  # null: no recovery training

    def validate(self):
        for key in ("width", "heads_width", "ffn_width"):
            value = getattr(self, key)
            if value is not None and not 0.0 < value <= 1.0:
                raise ValueError(f"{key} must be in (0, 1], got {value}")

    @property
    def widths(self) -> tuple[float, float]:
        """(heads kept, FFN neurons kept), as fractions."""
        return (self.width if self.heads_width is None else self.heads_width,
                self.width if self.ffn_width is None else self.ffn_width)


@dataclass
class QatParams:
    epochs: int = 1
    max_steps: int | None = None
    lr: float = 2e-5
    batch_size: int = 32
    losses: list[dict] = field(default_factory=lambda: [{"type": "soft_ce", "weight": 1.0, "temperature": 1.0},
                                                        {"type": "hard_ce", "weight": 0.5}])
    weight_quantize_type: Literal["channel_wise_abs_max", "abs_max"] = "channel_wise_abs_max"
    activation_quantize_type: Literal["moving_average_abs_max"] = "moving_average_abs_max"
    fp32_layers: list[str] = field(default_factory=lambda: ["task_heads", "backbone.pooler"])  # name prefixes
    tolerance: float = 0.5  # dev points the INT8 program may lose against the FP32 input


@dataclass
class PtqParams:
    method: Literal["both", "paddle", "onnx"] = "both"  # paddleslim quant_post_static and/or ORT static QDQ
    calibration_examples: int = 256
    paddle_algo: Literal["abs_max", "avg", "mse", "KL", "hist"] = "mse"
    tolerance: float = 0.5


@dataclass
class EmbeddingInt8Params:
    quantize_type: Literal["abs_max", "log"] = "abs_max"
    tolerance: float = 0.5


def _step(name: str, params_cls: type, impl: str, summary: str):
    def run(in_dir, out_dir, params: dict | None = None, ctx: StepContext | None = None) -> dict:
        import importlib

        from tinydistill.distill.schema import from_dict

        p = params if isinstance(params, params_cls) else from_dict(params_cls, params or {}, f"compress.{name}")
        module, func = impl.split(":")
        return getattr(importlib.import_module(module), func)(in_dir, out_dir, p, ctx or StepContext())

    run.__name__ = name
    run.params = params_cls
    run.describe = lambda _name="": "params: " + ", ".join(f.name for f in params_cls.__dataclass_fields__.values())
    STEPS.add(name, run, summary=summary, params=params_cls)
    return run


vocab_prune = _step("vocab_prune", VocabPruneParams, "tinydistill.compress.prune:vocab_prune",
                    "keep the tokens the training text uses (specials kept; max_vocab_size caps, most frequent "
                    "first); cut embeddings, vocab and positions")
width_prune = _step("width_prune", WidthPruneParams, "tinydistill.compress.prune:width_prune",
                    "DynaBERT-style: gradient importance of heads/FFN neurons, slice to width, recover by KD")
qat = _step("qat", QatParams, "tinydistill.compress.quant:qat",
            "paddleslim QAT (INT8 per-channel weights, moving-average activations) with KD from the FP32 model")
ptq = _step("ptq", PtqParams, "tinydistill.compress.quant:ptq",
            "post-training static INT8: paddleslim quant_post_static and/or ONNX Runtime QDQ; keeps the better")
embedding_int8 = _step("embedding_int8", EmbeddingInt8Params, "tinydistill.compress.quant:embedding_int8",
                       "INT8 word embeddings (paddleslim quant_embedding; quantised Gather on ONNX export)")


def step_params(name: str, params: dict[str, Any], path: str = "") -> Any:
    """Validate ``params`` of step ``name`` strictly (ConfigError naming the key)."""
    from tinydistill.distill.schema import from_dict

    return from_dict(STEPS.entry(name).meta["params"], params, path or f"compress.{name}")
