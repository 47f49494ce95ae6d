"""Features by module path (torchdistill style): forward post-hooks record the outputs of sublayers named
by their dotted path, as ``paddle.nn.Layer.named_sublayers`` names them (``encoder.layers.3``, ``rnn``).

The engine keeps one ``FeatureCapture`` per model (student, every teacher); a loss asks it to capture a
path while it is built (``distill.features``), and the hooks go in the engine's hook list, which removes them
after training.  ``probe`` runs one eval-mode forward so a loss can size its projections from real outputs.
"""
from __future__ import annotations

import difflib
import functools
from typing import Any

from tinydistill.distill.schema import ConfigError


def _arch(model) -> str:
    return getattr(model, "arch", type(model).__name__)


def find_sublayer(model, path: str, who: str, where: str):
    """The sublayer of ``model`` named ``path`` (as ``named_sublayers`` names it); else a one-line
    ``ConfigError`` naming the path and the valid names nearest to it."""
    names = dict(model.named_sublayers())
    if path in names:
        return names[path]
    close = set(difflib.get_close_matches(path, list(names), n=6, cutoff=0.6))
    near = [n for n in names if n in close]   # in the model's order
    if not near:  # the children of the deepest existing parent (or the top level)
        parent = path
        while "." in parent and parent not in names:
            parent = parent.rsplit(".", 1)[0]
        prefix = parent + "." if parent in names else ""
        depth = prefix.count(".")
        near = [n for n in names if n.startswith(prefix) and n.count(".") == depth][:12]
    raise ConfigError(f"{where}: the {who} {_arch(model)!r} has no sublayer {path!r}; nearby: "
                      f"{', '.join(near) or '(it has no sublayers)'}")


class FeatureCapture:
    """Records the outputs of sublayers of one model named by module path, through forward post-hooks
    (registered in the engine's hook list, which removes them after training)."""

    def __init__(self, model, who: str, hooks: list):
        self.model, self.who, self._hooks = model, who, hooks
        self.paths: list[str] = []
        self.outputs: dict[str, Any] = {}

    def capture(self, path: str, where: str) -> None:
        if path not in self.paths:
            layer = find_sublayer(self.model, path, self.who, where)
            self._hooks.append(layer.register_forward_post_hook(functools.partial(self._record, path)))
            self.paths.append(path)

    def _record(self, path, layer, inputs, output):
        self.outputs[path] = output[0] if isinstance(output, (tuple, list)) else output

    def clear(self) -> None:
        self.outputs = {}

    def take(self) -> dict:
        """What the forward since ``clear`` recorded (a sublayer that did not run is missing, never stale)."""
        out, self.outputs = self.outputs, {}
        return out


def last_attention_values(model, who: str, where: str) -> str:
    """Module path of the value projection of the last ``paddle.nn.MultiHeadAttention`` (MiniLM)."""
    import paddle
    names = [n for n, m in model.named_sublayers() if isinstance(m, paddle.nn.MultiHeadAttention)]
    if not names:
        raise ConfigError(f"{where}: minilm: the {who} {_arch(model)!r} has no paddle.nn.MultiHeadAttention "
                          "layer to read values from")
    return f"{names[-1]}.v_proj"


def probe(model, task, encoded, pad_id, capture: FeatureCapture | None = None, hidden: bool = False) -> dict:
    """One forward of ``model`` on ``encoded`` examples in eval mode without gradients (no RNG is consumed):
    its output dict (with ``hidden_states`` when ``hidden``) plus ``features``, what ``capture`` recorded."""
    import paddle

    from tinydistill.distill.batching import collate, model_forward
    was_training = model.training
    model.eval()
    if capture is not None:
        capture.clear()
    with paddle.no_grad():
        out = model_forward(model, collate(task, encoded, pad_id), hidden=hidden)
    if was_training:
        model.train()
    return {**(out if isinstance(out, dict) else {}), "features": capture.take() if capture is not None else {}}
