"""Teacher-to-student layer maps for hidden-state and attention losses.

Convention: hidden-state index 0 is the embedding output, 1..N the transformer (or LSTM) layers, as in
the model output contract (``hidden_states = [emb_out, layer1_out, ..., layerN_out]``).  A map is
``{teacher_layer: student_layer}``.

How to choose it (the default is ``uniform_layer_map``):

* Embeddings go to embeddings (0 -> 0): both are the token representation before any mixing.
* Student layer ``i`` (1..S) learns from teacher layer ``round(i * T / S)``.  This is TinyBERT's
  "uniform" strategy (g(m) = m * T / S), which beat mapping only the top or only the bottom teacher
  layers in their ablation: every student layer gets a target at the same relative depth, so the
  student imitates the teacher's whole processing path instead of only its end.
* The last student layer therefore always maps to the last teacher layer, which carries the most
  task-specific information after fine-tuning; for depths that do not divide, rounding spreads the
  targets as evenly as possible (e.g. T=12, S=5 -> 2, 5, 7, 10, 12).
* Deviate when you know better, e.g. skip the embedding pair when teacher and student vocabularies
  differ in tokenisation, or map only the top layers (``{12: 4}``) for a very shallow student.
* A student deeper than its teacher (rare) gets the mirror image: teacher layer ``t`` (1..T) is the
  target of student layer ``round(t * S / T)``, since a map has one student layer per teacher layer.
Widths may differ: ``hidden_mse`` learns a linear projection per mapped pair (student width -> teacher
width), trained with the student's optimiser and dropped after training.
"""
from __future__ import annotations

from tinydistill.distill.schema import ConfigError


def uniform_layer_map(teacher_layers: int, student_layers: int, include_embeddings: bool = True) -> dict[int, int]:
    """``{teacher_layer: student_layer}``: 0 -> 0 (if requested) and student i <- teacher round(i*T/S)."""
    if teacher_layers < 1 or student_layers < 1:
        raise ValueError(f"layer counts must be >= 1 (teacher {teacher_layers}, student {student_layers})")
    out = {0: 0} if include_embeddings else {}
    # int(x + 0.5): round half up (Python's round() rounds half to even, which would bunch targets)
    if student_layers <= teacher_layers:
        for i in range(1, student_layers + 1):
            out[int(i * teacher_layers / student_layers + 0.5)] = i
    else:
        for t in range(1, teacher_layers + 1):
            out[t] = int(t * student_layers / teacher_layers + 0.5)
    return out


def resolve_layer_map(layer_map: dict[int, int] | None, teacher_layers: int, student_layers: int,
                      include_embeddings: bool = True, where: str = "layer_map") -> dict[int, int]:
    """The configured map checked against the depths (clear error naming ``where``), or the uniform map."""
    if layer_map is None:
        return uniform_layer_map(teacher_layers, student_layers, include_embeddings)
    low = 0 if include_embeddings else 1
    for t, s in layer_map.items():
        if not low <= t <= teacher_layers:
            raise ConfigError(f"{where}: teacher layer {t} out of range {low}..{teacher_layers}")
        if not low <= s <= student_layers:
            raise ConfigError(f"{where}: student layer {s} (for teacher layer {t}) out of range "
                              f"{low}..{student_layers}")
    if not layer_map:
        raise ConfigError(f"{where}: empty layer map")
    return dict(sorted(layer_map.items()))
