"""Shared plumbing of the non-ERNIE students (no paddle import at module level).

``StudentSpec`` describes one architecture: its option defaults, how to count parameters from options
alone (``tinydistill list -v``) and which heavy class builds it (imported lazily).  ``register`` turns a
spec into a registry builder with the usual signature ``build(heads, init, vocab_size, **options)``;
``init`` is ``scratch`` or a TinyDistill model directory of the same architecture (there are no published
pretrained weights for these students).
"""
from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tinydistill.distill.schema import ConfigError
from tinydistill.students import STUDENTS


@dataclass
class StudentSpec:
    name: str
    summary: str
    defaults: dict[str, Any]
    model_class: str  # "module:Class"; Class(heads, model_config) -> contract model
    count: Callable[[dict], int]  # parameters (without heads) from a model_config

    def options(self, options: dict, vocab_size: int | None) -> dict:
        unknown = [k for k in options if k not in self.defaults and k != "vocab_size"]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(self.defaults), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown option {unknown[0]!r} for {self.name}{hint} "
                             f"(valid: vocab_size, {', '.join(self.defaults)})")
        cfg = {**self.defaults, **options}
        if vocab_size is not None:
            cfg["vocab_size"] = int(vocab_size)
        if not cfg.get("vocab_size"):
            raise ConfigError(f"{self.name} needs vocab_size (the tokenizer's vocabulary size)")
        return cfg

    def option_types(self) -> dict[str, Any]:
        """Option -> type, from the defaults (checked when a config is loaded)."""
        def kind(value):
            if isinstance(value, list):
                return list[int] if all(isinstance(v, int) for v in value) else list
            return int if value is None else type(value)

        return {k: kind(v) for k, v in self.defaults.items()}

    def describe(self, vocab_size: int = 10000) -> str:
        base = self.count({**self.defaults, "vocab_size": 0})
        per_token = self.defaults["embedding_size"]
        total = self.count({**self.defaults, "vocab_size": vocab_size})
        return (f"{base / 1e6:.2f} M params + {per_token} per vocab entry "
                f"({total / 1e6:.1f} M with a {vocab_size // 1000}k vocab)")

    def build(self, heads, init: str = "scratch", vocab_size: int | None = None, **options):
        from tinydistill.distill.modeldir import ModelLoadError

        if init == "pretrained":
            raise ModelLoadError(f"init: pretrained: {self.name} has no pretrained weights; use init: scratch "
                                 "or a TinyDistill model directory of the same architecture")
        if init == "scratch":
            return self._make(heads, self.options(options, vocab_size))
        path = Path(os.path.expanduser(str(init)))
        if not path.is_dir():
            raise ModelLoadError(f"init: {init!r} is neither 'scratch', 'pretrained' nor an existing directory")
        return self._from_dir(heads, path, vocab_size, options)

    def _make(self, heads, cfg: dict):
        module, cls = self.model_class.split(":")
        model = getattr(importlib.import_module(module), cls)(heads, cfg)
        model.arch = self.name
        return model

    def _from_dir(self, heads, path: Path, vocab_size, options):
        """Weights of a TinyDistill model directory of this architecture (heads kept where the spec matches)."""
        import paddle

        from tinydistill.distill.modeldir import ModelLoadError, load_with_matching_heads, read_manifest

        manifest = read_manifest(path)
        if manifest["format"] != "dygraph" or manifest["arch"] != self.name:
            raise ModelLoadError(f"init: {path} holds {manifest['arch']!r} ({manifest['format']}), which cannot "
                                 f"initialise {self.name}")
        saved = dict(manifest.get("model_config") or {})
        if vocab_size is not None and vocab_size > saved.get("vocab_size", 0):
            raise ModelLoadError(f"{path}: the tokenizer has {vocab_size} tokens but the checkpoint only "
                                 f"{saved.get('vocab_size')}; use the checkpoint's vocabulary")
        try:
            model = self._make(heads, self.options({**saved, **options}, None))
        except ValueError as exc:
            raise ModelLoadError(f"{path}: {exc}") from None
        file = path / "model_state.pdparams"
        load_with_matching_heads(model, paddle.load(str(file)), manifest["heads"], str(file))
        return model


def register(spec: StudentSpec) -> StudentSpec:
    def build(heads, init: str = "scratch", vocab_size: int | None = None, **options):
        return spec.build(heads, init=init, vocab_size=vocab_size, **options)

    build.__name__ = f"build_{spec.name}"
    build.__doc__ = spec.summary
    STUDENTS.add(spec.name, build, summary=spec.summary, describe=spec.describe, options=spec.option_types())
    from tinydistill.teachers import TEACHERS
    TEACHERS.add(spec.name, build, summary=spec.summary, describe=spec.describe, options=spec.option_types())
    return spec
