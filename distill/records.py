"""``@record``: the dataclass subset the modules a deployed predictor imports use, without ``dataclasses``.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``...): 1.4 MiB of resident
memory in a process that only runs a model, a sixth of what the lean ``onnxruntime-c`` predictor spends on
Python.  The types that process creates (``tasks.base``'s ``Example``/``Encoded``/``Span``/``HeadSpec`` and the
task ``Options``, ``tasks.tokenization.TokenizedText``, the registry's ``Entry``) are records instead; config
sections that only training reads stay dataclasses.  ``distill.schema`` loads and validates both alike.

What a record is, the same as the dataclass it replaces: fields from the class annotations in order (a base
class's first; a subclass that re-annotates one keeps its place and changes its default), ``field(default=...,
default_factory=...)``, a generated ``__init__``, ``__repr__`` and ``__eq__`` (same class, equal fields);
``frozen=True`` forbids assignment (``FrozenInstanceError``, an ``AttributeError``) and makes records hashable;
otherwise, like a dataclass with ``eq``, a record is unhashable.  ``fields``, ``replace`` and ``is_record`` are
the module functions; ``ClassVar`` annotations are not fields.  Records pickle and copy as plain objects do.
"""
from __future__ import annotations

from typing import Any, Callable

__all__ = ["MISSING", "Field", "FrozenInstanceError", "field", "fields", "is_record", "record", "replace"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_FIELDS = "__record_fields__"


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


class Field:
    """One field: ``name``, ``type`` (the annotation, a string under ``from __future__ import annotations``),
    ``default``, ``default_factory`` (``MISSING`` when absent) and ``init`` (always true: every field is an
    ``__init__`` argument, as ``distill.schema`` expects of a dataclass field)."""

    __slots__ = ("name", "type", "default", "default_factory", "init")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING):
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("a field takes a default or a default_factory, not both")
        self.name, self.type, self.init = "", None, True
        self.default, self.default_factory = default, default_factory

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, type={self.type!r}, default={self.default!r})"


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING) -> Any:
    """A field's default (``default_factory``: called once per new record, for lists and dicts)."""
    return Field(default, default_factory)


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return getattr(annotation, "__origin__", None) is not None and "ClassVar" in repr(annotation)


def _collect(cls: type) -> dict[str, Field]:
    out: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        out.update(getattr(base, _FIELDS, None) or {})
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        f.name, f.type = name, annotation
        out[name] = f
        if isinstance(value, Field):  # the class attribute is the default, as for a dataclass
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
    return out


def _init_source(cls: type, fs: dict[str, Field], frozen: bool) -> tuple[str, dict]:
    scope: dict[str, Any] = {"MISSING": MISSING, "_setattr": object.__setattr__}
    params, body, seen_default = [], [], False
    for name, f in fs.items():
        if f.default is not MISSING:
            scope[f"_d_{name}"] = f.default
            params.append(f"{name}=_d_{name}")
            value = name
        elif f.default_factory is not MISSING:
            scope[f"_f_{name}"] = f.default_factory
            params.append(f"{name}=MISSING")
            value = f"_f_{name}() if {name} is MISSING else {name}"
        else:
            if seen_default:
                raise TypeError(f"{cls.__qualname__}: field {name!r} without a default follows one with a default")
            params.append(name)
            value = name
        seen_default = seen_default or f.default is not MISSING or f.default_factory is not MISSING
        body.append(f"  _setattr(self, {name!r}, {value})" if frozen else f"  self.{name} = {value}")
    src = f"def __init__(self, {', '.join(params)}):\n" + ("\n".join(body) or "  pass") + "\n"
    return src, scope


def record(cls: type | None = None, *, frozen: bool = False):
    """Class decorator: ``cls`` as a record (see the module docstring); ``@record`` or ``@record(frozen=True)``."""

    def wrap(c: type) -> type:
        fs = _collect(c)
        setattr(c, _FIELDS, fs)
        src, scope = _init_source(c, fs, frozen)
        exec(src, scope)  # noqa: S102 - source built above from the field names only, as dataclasses does
        init = scope["__init__"]
        init.__qualname__ = f"{c.__qualname__}.__init__"
        c.__init__ = init
        names = tuple(fs)
        c.__match_args__ = names

        def __repr__(self) -> str:
            return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

        def __eq__(self, other: Any) -> Any:
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        c.__repr__, c.__eq__ = __repr__, __eq__
        if frozen:
            def __setattr__(self, name: str, value: Any) -> None:
                raise FrozenInstanceError(f"cannot assign to field {name!r} of frozen {type(self).__qualname__}")

            def __delattr__(self, name: str) -> None:
                raise FrozenInstanceError(f"cannot delete field {name!r} of frozen {type(self).__qualname__}")

            def __hash__(self) -> int:
                return hash(tuple(getattr(self, n) for n in names))

            c.__setattr__, c.__delattr__, c.__hash__ = __setattr__, __delattr__, __hash__
        else:
            c.__hash__ = None  # type: ignore[assignment]  (mutable with __eq__: unhashable, as a dataclass)
        return c

    return wrap if cls is None else wrap(cls)


def is_record(obj: Any) -> bool:
    """``obj`` is a record class or an instance of one."""
    return hasattr(obj if isinstance(obj, type) else type(obj), _FIELDS)


def fields(obj: Any) -> tuple[Field, ...]:
    """The fields of a record (class or instance), in order."""
    cls = obj if isinstance(obj, type) else type(obj)
    fs = getattr(cls, _FIELDS, None)
    if fs is None:
        raise TypeError(f"{cls.__qualname__} is not a record")
    return tuple(fs.values())


def replace(obj: Any, **changes: Any) -> Any:
    """A new record like ``obj`` with ``changes`` applied (as ``dataclasses.replace``)."""
    names = {f.name for f in fields(obj)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise TypeError(f"{type(obj).__qualname__} has no field {unknown[0]!r}")
    return type(obj)(**{n: changes[n] if n in changes else getattr(obj, n) for n in names})
