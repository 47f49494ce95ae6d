"""The one registry helper used by every kind of pluggable part.

A registry maps a name to an object (a builder function or a class) plus a one-line summary.  Every
kind of part (tasks, tokenizers, teachers, students, losses, schedules, mixers, compression steps, export
formats, runtimes, data sets) has exactly one ``Registry`` instance, created where that kind lives; ``KINDS``
below tells the CLI where to find each one so that ``tinydistill list`` can show them all.

Modules that *register* entries must stay light: no ``import paddle`` at module level (import it inside
the registered function/method).  That keeps ``tinydistill list``/``--help``/``data`` under a second
(importing paddle + paddlenlp costs ~4 s and ~580 MiB); ``tests/test_cli.py`` checks it.

Adding a part is one decorated function or class::

    from tinydistill.students import STUDENTS

    @STUDENTS.register("my-cnn", summary="3-layer CNN over characters")
    def build_my_cnn(heads, init="scratch", **options): ...
"""
from __future__ import annotations

import importlib

from typing import Any, Callable, Iterable

from tinydistill.distill.records import field, record


_MISSING = object()


class RegistryError(KeyError):
    """Unknown or duplicate name in a registry (message names the registry and close matches)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


@record
class Entry:
    name: str
    obj: Any
    summary: str = ""
    meta: dict = field(default_factory=dict)


class Registry:
    """Name -> object, populated by decorators in the modules listed in ``modules``.

    ``modules`` are imported on first lookup, so importing the package that owns a registry does not
    import every implementation eagerly.
    """

    def __init__(self, kind: str, modules: Iterable[str] = ()):
        self.kind = kind
        self._modules = list(modules)
        self._loaded = False
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    # -- registration -------------------------------------------------------------------------
    def register(self, name: str | None = None, *, summary: str = "", aliases: Iterable[str] = (),
                 **meta: Any) -> Callable[[Any], Any]:
        def decorator(obj: Any) -> Any:
            key = name or getattr(obj, "name", None) or obj.__name__
            self.add(key, obj, summary=summary, aliases=aliases, **meta)
            return obj
        return decorator

    def add(self, name: str, obj: Any, *, summary: str = "", aliases: Iterable[str] = (), **meta: Any) -> None:
        if name in self._entries or name in self._aliases:
            existing = self._entries.get(name) or self._entries[self._aliases[name]]
            if existing.obj is obj:
                return
            raise RegistryError(f"{self.kind} registry: {name!r} is registered twice")
        if not summary:
            doc = (getattr(obj, "__doc__", None) or "").strip()
            summary = doc.splitlines()[0] if doc else ""
        self._entries[name] = Entry(name, obj, summary, dict(meta))
        for alias in aliases:
            self._aliases[alias] = name

    # -- lookup -------------------------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for module in self._modules:
            importlib.import_module(module)

    def canonical(self, name: str) -> str:
        self._load()
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        choices = sorted(set(self._entries) | set(self._aliases))
        import difflib  # here: only an unknown name needs it

        close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise RegistryError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(choices)})")

    def get(self, name: str, default: Any = _MISSING) -> Any:
        """The object registered as ``name`` (or an alias); ``default`` if given and unknown, as ``dict.get``."""
        if default is not _MISSING and name not in self:
            return default
        return self._entries[self.canonical(name)].obj

    def entry(self, name: str) -> Entry:
        return self._entries[self.canonical(name)]

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries or name in self._aliases

    # a read-only mapping of name -> object (what the plain dicts this replaced offered), plus item
    # assignment and deletion so that a test can swap in a fake entry with ``monkeypatch.setitem``
    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __setitem__(self, name: str, obj: Any) -> None:
        self._load()
        self._entries.pop(name, None)
        self.add(name, obj)

    def __delitem__(self, name: str) -> None:
        self._load()
        del self._entries[name]
        for alias in [a for a, target in self._aliases.items() if target == name]:
            del self._aliases[alias]

    def __iter__(self):
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def values(self) -> list[Any]:
        return [e.obj for e in self.entries()]

    def items(self) -> list[tuple[str, Any]]:
        return [(e.name, e.obj) for e in self.entries()]

    def aliases(self, name: str) -> list[str]:
        """Other names ``name``'s entry answers to."""
        canonical = self.canonical(name)
        return [a for a, target in self._aliases.items() if target == canonical]

    def names(self) -> list[str]:
        self._load()
        return list(self._entries)

    def entries(self) -> list[Entry]:
        self._load()
        return list(self._entries.values())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"


# Where each kind's registry lives ("module:attribute"); used by ``tinydistill list``.  Every module named
# here must import without paddle or numpy (``tinydistill list`` stays light; tests/test_cli.py checks).
KINDS: dict[str, str] = {
    "tasks": "tinydistill.tasks:TASKS",
    "tokenizers": "tinydistill.tasks.tokenization:TOKENIZERS",
    "teachers": "tinydistill.teachers:TEACHERS",
    "students": "tinydistill.students:STUDENTS",
    "losses": "tinydistill.distill.losses:LOSSES",
    "schedules": "tinydistill.distill.schedules:SCHEDULES",
    "mixers": "tinydistill.distill.multiteacher:MIXERS",
    "steps": "tinydistill.compress:STEPS",
    "formats": "tinydistill.compress:FORMATS",
    "runtimes": "tinydistill.compress:RUNTIMES",
    "datasets": "tinydistill.tasks.datasets:DATASETS",
}
# Older names of kinds, and the kinds each stands for.  "backends" meant both an export format (config
# ``export:``) and a runtime (``--backend``): ``tinydistill list backends`` shows both, and where one registry
# is wanted (the config's ``export:`` validation) it is the first.
KIND_ALIASES: dict[str, tuple[str, ...]] = {"backends": ("formats", "runtimes")}


def kinds_of(kind: str) -> list[str]:
    """The kinds ``kind`` (a kind or an older name) stands for."""
    return list(KIND_ALIASES[kind]) if kind in KIND_ALIASES else [canonical_kind(kind)]


def canonical_kind(kind: str) -> str:
    kind = KIND_ALIASES[kind][0] if kind in KIND_ALIASES else kind
    if kind not in KINDS:
        import difflib

        close = difflib.get_close_matches(kind, list(KINDS) + list(KIND_ALIASES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RegistryError(f"unknown registry kind {kind!r}{hint} (known: {', '.join(KINDS)})")
    return kind


def get_registry(kind: str) -> Registry:
    module, attr = KINDS[canonical_kind(kind)].split(":")
    return getattr(importlib.import_module(module), attr)
