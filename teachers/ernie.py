"""Registers the ERNIE 3.0 Tiny family and ERNIE-Gram (no paddle import here; see ``teachers/ernie_model.py``).

Teachers: every ERNIE 3.0 Tiny size, v2 (``ernie-3.0-tiny-{base,medium,mini,micro,nano,pico}-v2-zh``) and v1
(``ernie-3.0-tiny-{base,medium,mini,micro,nano}-v1-zh``: paddlenlp 2.8.1 has no pico v1), and
``ernie-gram-zh``.  Students: the sizes small enough to be worth distilling into (mini, micro, nano, pico);
base and medium (75-118 M parameters) are teachers only.  The architecture table and the parameter count
live in ``teachers/ernie_archs.py``, which the model code reads too (re-exported here).
"""
from __future__ import annotations

import functools

from tinydistill.students import STUDENTS
from tinydistill.teachers import TEACHERS
from tinydistill.teachers.ernie_archs import ARCHS, ERNIE_OPTION_TYPES, GRAM_OPTION_TYPES, STUDENT_SIZES, family, param_count


def describe(name: str) -> str:
    cfg = ARCHS[name]
    return (f"{cfg['num_hidden_layers']} layers x {cfg['hidden_size']}, {cfg['num_attention_heads']} heads, "
            f"{param_count(cfg) / 1e6:.1f} M params (vocab {cfg['vocab_size']})")


def _builder(name: str):
    def build(heads, init: str = "scratch", vocab_size: int | None = None, **options):
        from tinydistill.teachers.ernie_model import build_ernie
        return build_ernie(name, heads, init=init, vocab_size=vocab_size, **options)

    build.__name__ = f"build_{name.replace('-', '_').replace('.', '_')}"
    build.__doc__ = f"Build {name} with task heads (init: scratch | pretrained | local directory)."
    return build


def _summary(name: str) -> str:
    cfg = ARCHS[name]
    shape = f"{cfg['num_hidden_layers']}x{cfg['hidden_size']}"
    if family(name) == "ernie-gram":
        return f"ERNIE-Gram zh ({shape}, explicit n-gram MLM pre-training)"
    size, version = name.split("-")[3], name.split("-")[4]
    return f"ERNIE 3.0 Tiny {size} {version} ({shape})"


for _name in ARCHS:
    _build = _builder(_name)
    _meta = dict(summary=_summary(_name), describe=functools.partial(describe, _name), family=family(_name),
                 options=GRAM_OPTION_TYPES if family(_name) == "ernie-gram" else ERNIE_OPTION_TYPES)
    TEACHERS.add(_name, _build, **_meta)
    if family(_name) == "ernie" and _name.split("-")[3] in STUDENT_SIZES:
        STUDENTS.add(_name, _build, **_meta)
