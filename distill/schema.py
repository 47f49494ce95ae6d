"""Strict config sections: plain dataclasses (or ``distill.records`` records) loaded from dicts (parsed YAML)
with precise errors.

Every stage owns the dataclass for its own config section (``distill.config.DistillConfig``,
compression step parameters, task options, ...); ``experiments/config.py`` composes them into the
experiment schema.  ``from_dict`` is the one loader:

* an unknown key fails with ``ConfigError`` naming the full key path and the closest valid key;
* a missing required key (a field without default) fails likewise;
* values are checked against the field's annotation (int/float/str/bool/list/dict/Optional/nested
  dataclass/Literal) - ints are accepted where floats are expected;
* a class with a ``config_class_for(data, path) -> (subclass, label)`` classmethod stands for a family
  (``distill.config.LossConfig``: one parameter class per loss): the data picks the member class.
"""
from __future__ import annotations

import math
import operator
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from tinydistill.distill import records

# ``dataclasses`` is imported where a dataclass is met, not here: the task options a deployed predictor builds
# are records, and its process does without ``dataclasses`` and ``inspect`` (``distill.records``).


def is_section(obj: Any) -> bool:
    """``obj`` (a class or an instance) is a dataclass or a record: something ``from_dict`` builds."""
    return records.is_record(obj) or hasattr(obj if isinstance(obj, type) else type(obj), "__dataclass_fields__")


def section_fields(obj: Any) -> tuple:
    """The fields of a dataclass or record (class or instance), each with ``name``, ``type``, ``default``,
    ``default_factory`` and ``init``."""
    if records.is_record(obj):
        return records.fields(obj)
    import dataclasses

    return dataclasses.fields(obj)


def replace_section(obj: Any, **changes: Any) -> Any:
    """A copy of a dataclass or record instance with ``changes`` applied (``dataclasses.replace`` for both)."""
    if records.is_record(obj):
        return records.replace(obj, **changes)
    import dataclasses

    return dataclasses.replace(obj, **changes)


def has_default(f: Any) -> bool:
    """A field of ``section_fields`` has a default or a default factory."""
    if isinstance(f, records.Field):
        return f.default is not records.MISSING or f.default_factory is not records.MISSING
    import dataclasses

    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


class ConfigError(ValueError):
    """A config problem; the message starts with the key path (e.g. ``distill.losses[1].temperature``)."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin = get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else
                          f"{path}: {value!r} does not match {_type_name(tp)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            import difflib  # here, as below: only a bad value needs it

            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}{hint}")
        return value
    if isinstance(tp, type) and is_section(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, path)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        args = get_args(tp)
        ktp, vtp = args if args else (Any, Any)
        return {_coerce(k, ktp, f"{path}.{k}"): _coerce(v, vtp, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    return value


def coerce(value: Any, tp: Any, path: str) -> Any:
    """``value`` checked against type ``tp`` (as a field annotation is); ``ConfigError`` naming ``path``."""
    return _coerce(value, tp, path)


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass (or record) ``cls`` from ``data`` strictly (see module docstring)."""
    where = path or cls.__name__
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    label = ""
    choose = getattr(cls, "config_class_for", None)
    if callable(choose):
        # a family of sections told apart by one of their keys (a loss entry's ``type``): each member
        # has its own class, and the entry is checked against that class's fields
        cls, label = choose(data, where)
    fields = {f.name: f for f in section_fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        import difflib

        close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        of = f" of {label}" if label else ""
        raise ConfigError(f"{_join(path, key)}: unknown key{hint} (valid keys{of}: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], _join(path, name))
        elif not has_default(f):
            raise ConfigError(f"{_join(path, name)}: required key is missing")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError:
            raise
        except ValueError as exc:
            # "lr must be > 0" -> "distill.lr: must be > 0", so the error names (and locates) the key
            message = str(exc)
            first = message.split(" ", 1)[0].rstrip(":")
            if first in fields and " " in message:
                raise ConfigError(f"{_join(path, first)}: {message.split(' ', 1)[1]}") from None
            raise ConfigError(f"{where}: {message}") from None
    return obj


def registered_name(registry: Any, value: Any, path: str, what: str) -> str:
    """``value`` as the canonical name of an entry of ``registry`` (aliases resolved), or a one-line
    ``ConfigError`` that names ``path`` (and, from the registry, the close matches)."""
    if not isinstance(value, str):
        raise ConfigError(f"{path}: expected a registered {what} name, got {value!r}")
    try:
        return registry.canonical(value)
    except KeyError as exc:  # distill.registry.RegistryError: its message names the registry and close matches
        raise ConfigError(f"{path}: {exc}") from None


def require(obj: Any, name: str, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
            le: float | None = None) -> None:
    """Range check of a numeric field (``None`` values pass): raises ``ValueError`` starting with the
    field name, which ``from_dict`` turns into ``path.name: ...``."""
    value = getattr(obj, name)
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    bounds = [(op, b) for op, b in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if b is not None]
    if not all(_OPS[op](value, b) for op, b in bounds):
        raise ValueError(f"{name} must be {' and '.join(f'{op} {b}' for op, b in bounds)}, got {value}")


_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def to_dict(obj: Any) -> Any:
    """Dataclass or record (nested) -> plain dict/list values, suitable for YAML/JSON."""
    if not isinstance(obj, type) and is_section(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in section_fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)
