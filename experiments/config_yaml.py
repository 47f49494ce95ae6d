"""Config text: bounded safe YAML, ``--set`` overrides, recipe merges, and ``file:line`` error locations.

YAML is read with ``yaml.safe_load`` semantics (no object construction), bounded in size and alias expansion
(``safe_yaml``).  ``--set key.sub=value`` overrides are applied to the parsed mapping before validation (value
parsed as a YAML scalar; list items by index: ``distill.losses.0.weight=0.5``).  Nothing here knows the schema
(experiments/config.py validates the mapping).
"""
from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from tinydistill.distill.schema import ConfigError

#: bounds of what a config may expand to: a YAML "alias bomb" (anchors referencing anchors) is a few
#: lines that expand to billions of nodes, so the composed graph is measured before anything is built
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
MAX_YAML_ALIASES = 1_000


def _yaml_children(node: yaml.Node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node, where: str) -> None:
    """Refuse a composed YAML graph whose expansion (aliases copied out) is too large or cyclic."""
    sizes: dict[int, int] = {}
    active: set[int] = set()
    aliases = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        nid = id(node)
        if finished:
            active.discard(nid)
            sizes[nid] = 1 + sum(sizes[id(c)] for c in _yaml_children(node))
            if sizes[nid] > MAX_YAML_NODES:
                raise ConfigError(f"{where}:{node.start_mark.line + 1}: config expands to more than "
                                  f"{MAX_YAML_NODES:,} values (YAML aliases repeating aliases?); write it out")
            continue
        if nid in sizes:
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise ConfigError(f"{where}:{node.start_mark.line + 1}: more than {MAX_YAML_ALIASES:,} YAML "
                                  "alias uses; write the values out")
            continue
        if nid in active:
            raise ConfigError(f"{where}:{node.start_mark.line + 1}: recursive YAML alias (a value contains itself)")
        active.add(nid)
        stack.append((node, True))
        stack.extend((c, False) for c in _yaml_children(node))


def safe_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with bounded size and alias expansion (``ConfigError`` naming ``where``)."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: {len(text):,} characters is more than a config may have "
                          f"({MAX_YAML_BYTES:,})")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, where)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    finally:
        loader.dispose()


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config file not found")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size:,} bytes is more than a config may have "
                          f"({MAX_YAML_BYTES:,})")
    try:
        data = safe_yaml(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data



def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE (e.g. teacher.init=scratch)")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: empty key segment")
    try:
        parsed = safe_yaml(value, f"--set {key}") if value.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
    return _split_key(key), parsed


def _split_key(key: str) -> list[str]:
    # "distill.losses[0].weight" and "distill.losses.0.weight" are the same path
    return [p for p in re.split(r"\.|\[(\d+)\]", key) if p]


def apply_overrides(raw: dict, overrides: list[str] | dict) -> dict:
    """Return a copy of ``raw`` with ``--set`` style overrides (``["a.b=1"]`` or ``{"a.b": 1}``) applied."""
    raw = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    for key, value in items:
        parts = _split_key(key) if isinstance(key, str) else key
        set_path(raw, parts, value)
    return raw


def set_path(raw: dict, parts: list[str], value: Any) -> None:
    node: Any = raw
    where = []
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where.append(part)
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{'.'.join(where)}: no list item {part} (the list has {len(node)} items)")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"{'.'.join(where[:-1])}: is a value ({node!r}), cannot set {part!r} in it")


def deep_merge(base: dict, over: dict) -> dict:
    """``over`` merged into a copy of ``base``: mappings merge recursively, other values replace.
    Keys with dots (``distill.epochs: 3``) address nested keys."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        parts = _split_key(str(key))
        if len(parts) > 1:
            set_path(out, parts, copy.deepcopy(value))
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out



def dump_yaml(raw: dict) -> str:
    return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True, default_flow_style=None, width=110)


def locate_error(path: str | Path, message: str) -> str:
    """Prefix ``file:line`` for the key path a ConfigError message starts with."""
    key = message.split(":", 1)[0].strip()
    line = _key_line(path, key) if key and " " not in key else None
    return f"{path}:{line}: {message}" if line else f"{path}: {message}"


def _key_line(path: str | Path, key: str) -> int | None:
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in _split_key(key):
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                break
            line = match[0][0].start_mark.line + 1
            node = match[0][1]
        elif isinstance(node, yaml.SequenceNode) and part.isdigit() and int(part) < len(node.value):
            node = node.value[int(part)]
            line = node.start_mark.line + 1
        else:
            break
    return line


def closest(word: str, choices: list[str]) -> str | None:
    found = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    return found[0] if found else None
