"""The model contract every teacher and student obeys, and model directories (no paddle import at import time).

The one home of both: teachers, students, the engine, compression and the experiments build models and read or
write model directories through this module.  It sits above the shared core and the task adapters (it needs
``tasks.base.HeadSpec``) and below every model implementation: it reaches the registered models only through
the ``TEACHERS`` / ``STUDENTS`` registries, imported when a model is built.  ``teachers.base`` re-exports it.

Building::

    model = build_model("student", "ernie-3.0-tiny-nano-v2-zh", task.heads(), init="scratch",
                        vocab_size=tok.vocab_size, num_hidden_layers=2)   # options override the architecture

``init`` is ``"scratch"`` (random init), ``"pretrained"`` (paddlenlp weights by the registered name; offline
this raises ``ModelLoadError``) or a local directory (a paddlenlp ``save_pretrained`` directory or a
TinyDistill model directory).  ``vocab_size`` is the tokenizer's vocabulary size: a scratch model gets exactly
that many embedding rows; a model initialised from a checkpoint keeps the checkpoint's rows (the tokenizer's
ids must fit).

Output contract (every model, so the KD engine never special-cases a class)::

    out = model(input_ids, token_type_ids=None, attention_mask=None,
                output_hidden_states=False, output_attentions=False)
    out["logits"]        {head: [B, C] (sequence head) | [B, L, C] (token head)}
    out["hidden_states"] [embedding output, layer 1, ..., layer N], each [B, L, width]  ([] unless requested)
    out["attentions"]    per layer [B, heads, L, L] post-softmax probabilities (rows sum to 1; [] if none)

Pass ``attention_mask`` explicitly (int ``[B, L]``, 1 = real token).  Attributes: ``arch`` (registry name),
``kind`` ("teacher"/"student"), ``model_config`` (JSON-able options that rebuild the architecture from
scratch, ``vocab_size`` included), ``heads`` (list of ``HeadSpec``), ``hidden_size`` (width of the last
hidden state), ``num_layers``, ``num_attention_heads`` (0 without attention).  ``model.export_forward(
input_ids, token_type_ids, attention_mask)`` returns the tuple of logits in ``heads`` order (the signature
used by ``paddle.jit.to_static`` export; ``compress.export.save_program`` wraps it as a Layer).

Model directory (``save_model_dir``/``load_model_dir``): ``manifest.json``, ``model_state.pdparams`` and the
tokenizer's files (``tok.save(dir)``), written atomically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from tinydistill.distill.fsutil import atomic_dir, read_json, write_json
from tinydistill.tasks.base import HeadSpec

MANIFEST = "manifest.json"
WEIGHTS = "model_state.pdparams"
FORMAT_VERSION = 1


class ModelLoadError(RuntimeError):
    """A model cannot be built or loaded (missing weights, bad directory, shape mismatch); one clear line."""


def _registry(kind: str):
    if kind in ("teacher", "teachers"):
        from tinydistill.teachers import TEACHERS
        return TEACHERS
    if kind in ("student", "students"):
        from tinydistill.students import STUDENTS
        return STUDENTS
    raise ValueError(f"model kind must be 'teacher' or 'student', got {kind!r}")


def _heads(heads: Iterable[Any]) -> list[HeadSpec]:
    out = [h if isinstance(h, HeadSpec) else HeadSpec.from_dict(h) for h in heads]
    if not out:
        raise ValueError("a model needs at least one head")
    names = [h.name for h in out]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate head names: {names}")
    return out


def build_model(kind: str, name: str, heads: Sequence[Any], init: str = "scratch", vocab_size: int | None = None,
                **options: Any):
    """Build registered model ``name`` of ``kind`` ("teacher"/"student") with ``heads`` (see module doc)."""
    registry = _registry(kind)
    arch = registry.canonical(name)
    model = registry.get(arch)(_heads(heads), init=init, vocab_size=vocab_size, **options)
    model.arch = arch
    model.kind = "teacher" if kind.startswith("teacher") else "student"
    return model


def count_parameters(model) -> int:
    return int(sum(int(p.numel()) for p in model.parameters()))


# -- model directories ------------------------------------------------------------------------------
def save_model_dir(out_dir: str | os.PathLike, model, tokenizer=None, task=None, extra: dict | None = None) -> Path:
    """Write ``model`` (+ ``tokenizer``, may be None) as a model directory at ``out_dir`` atomically."""
    import paddle

    from tinydistill.distill.schema import to_dict

    out_dir = Path(out_dir)
    task_info, max_len = None, None
    if task is not None:
        options = getattr(task, "options", None)
        task_info = {"name": task.name, "options": to_dict(options) if options is not None else {}}
        max_len = getattr(options, "max_seq_length", None)
    with atomic_dir(out_dir) as tmp:
        paddle.save(model.state_dict(), str(tmp / WEIGHTS))
        spec = tokenizer.save(tmp) if tokenizer is not None else None
        write_json(tmp / MANIFEST, {
            "tinydistill": FORMAT_VERSION,
            "format": "dygraph",
            "kind": getattr(model, "kind", "student"),
            "arch": model.arch,
            "model_config": dict(model.model_config),
            "heads": [h.to_dict() for h in model.heads],
            "task": task_info,
            "tokenizer": spec,
            "max_seq_length": max_len,
            "num_parameters": count_parameters(model),
            "extra": dict(extra or {}),
        })
    return out_dir


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of a model directory (any format); ModelLoadError if ``path`` is not one."""
    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model directory not found")
    file = path / MANIFEST
    if not file.is_file():
        raise ModelLoadError(f"{path}: not a TinyDistill model directory (no {MANIFEST})")
    try:
        manifest = read_json(file)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from None
    version = manifest.get("tinydistill") if isinstance(manifest, dict) else None
    if version != FORMAT_VERSION:
        raise ModelLoadError(f"{file}: unsupported manifest version {version!r} (expected {FORMAT_VERSION})")
    for key in ("format", "arch", "heads"):
        if key not in manifest:
            raise ModelLoadError(f"{file}: missing key {key!r}")
    return manifest


def load_model_dir(path: str | os.PathLike):
    """Load a ``format: dygraph`` model directory -> ``(model in eval mode, tokenizer or None, manifest)``."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest["format"] != "dygraph":
        raise ModelLoadError(f"{path}: holds an exported model (format {manifest['format']!r}); "
                             "load it with compress.predictor.Predictor.from_dir")
    model = build_from_manifest(manifest, path)
    load_state_file(model, path / WEIGHTS)
    model.eval()
    tokenizer = None
    if manifest.get("tokenizer"):
        from tinydistill.tasks.tokenization import load_tokenizer
        tokenizer = load_tokenizer(path, manifest["tokenizer"])
    return model, tokenizer, manifest


def build_from_manifest(manifest: dict, where: Path):
    """A fresh (scratch) model of the architecture, heads and ``model_config`` a manifest records."""
    config = dict(manifest.get("model_config") or {})
    vocab_size = config.pop("vocab_size", None)
    kind = manifest.get("kind", "student")
    if manifest["arch"] not in _registry(kind):  # e.g. a teacher-only size saved as a student
        kind = "teacher" if kind == "student" else "student"
    try:
        model = build_model(kind, manifest["arch"], manifest["heads"], init="scratch", vocab_size=vocab_size,
                            **config)
        model.kind = manifest.get("kind", model.kind)
        return model
    except ModelLoadError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{where / MANIFEST}: cannot rebuild {manifest['arch']!r} from model_config: {exc}") \
            from None


def load_state_file(model, file: Path) -> None:
    """Load ``file`` (a ``.pdparams`` state dict) into ``model`` strictly: every parameter must be present
    with the same shape; unexpected keys are an error too."""
    import paddle

    if not Path(file).is_file():
        raise ModelLoadError(f"{file}: weights file not found")
    state = paddle.load(str(file))
    load_state_strict(model, state, source=str(file))


def load_state_strict(model, state: dict, source: str, optional: Iterable[str] = ()) -> None:
    """``model.set_state_dict(state)`` that fails (ModelLoadError naming ``source``) on any missing key (unless
    it starts with one of the ``optional`` prefixes: it keeps its current value), shape mismatch or
    unexpected key."""
    own = model.state_dict()
    optional = tuple(optional)
    missing = [k for k in own if k not in state and not (optional and k.startswith(optional))]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {list(state[k].shape)} vs model {list(own[k].shape)}"
                  for k in own if k in state and list(state[k].shape) != list(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s), e.g. {', '.join(missing[:3])}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s), e.g. {', '.join(unexpected[:3])}")
    if mismatched:
        problems.append(f"shape mismatch: {'; '.join(mismatched[:3])}")
    if problems:
        raise ModelLoadError(f"{source}: weights do not fit {getattr(model, 'arch', '') or type(model).__name__} "
                             f"({' | '.join(problems)})")
    model.set_state_dict({k: state[k] for k in own if k in state})


HEAD_PREFIX = "task_heads.classifiers."  # every model keeps its TaskHeads as ``model.task_heads``


def load_with_matching_heads(model, state: dict, saved_heads: list[dict], source: str) -> None:
    """Initialise ``model`` from another model directory's ``state``: everything but the heads must fit;
    a head is copied when the saved head of that name has the same kind and labels, else it stays fresh."""
    keep = {h.name for h in model.heads if h.to_dict() in saved_heads}
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX) or k.split(".")[2] in keep}
    fresh = tuple(f"{HEAD_PREFIX}{h.name}." for h in model.heads if h.name not in keep)
    load_state_strict(model, state, source, optional=fresh)
