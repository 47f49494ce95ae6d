"""The light shared core: registry, strict schema, atomic writes."""
from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import pytest

from tinydistill.distill.fsutil import atomic_path, atomic_write_text, read_json, write_json
from tinydistill.distill.registry import Registry, RegistryError
from tinydistill.distill.schema import ConfigError, from_dict, to_dict


def test_registry_register_get_and_close_match():
    reg = Registry("widget")

    @reg.register("round-widget", summary="a round one", aliases=("rw",))
    def build_round():
        return "round"

    assert reg.get("round-widget") is build_round
    assert reg.get("rw") is build_round
    assert reg.names() == ["round-widget"]
    assert reg.entry("rw").summary == "a round one"
    with pytest.raises(RegistryError, match="did you mean 'round-widget'"):
        reg.get("round-widgte")


def test_registry_rejects_duplicates():
    reg = Registry("widget")
    reg.add("a", object())
    with pytest.raises(RegistryError, match="registered twice"):
        reg.add("a", object())


@dataclasses.dataclass
class _Inner:
    temperature: float = 1.0
    kind: Literal["soft_ce", "mse"] = "soft_ce"


@dataclasses.dataclass
class _Outer:
    name: str
    epochs: int = 3
    losses: list[_Inner] = dataclasses.field(default_factory=list)
    seed: Optional[int] = None


def test_schema_loads_nested_and_roundtrips():
    cfg = from_dict(_Outer, {"name": "x", "epochs": 2, "losses": [{"temperature": 2}, {"kind": "mse"}]})
    assert cfg.losses[0].temperature == 2.0 and isinstance(cfg.losses[0].temperature, float)
    assert cfg.losses[1].kind == "mse"
    assert from_dict(_Outer, to_dict(cfg)) == cfg


def test_schema_unknown_key_names_path_and_closest():
    with pytest.raises(ConfigError) as err:
        from_dict(_Outer, {"name": "x", "losses": [{"temprature": 2}]}, "distill")
    assert "distill.losses[0].temprature" in str(err.value)
    assert "did you mean 'temperature'" in str(err.value)


def test_schema_missing_and_wrong_type():
    with pytest.raises(ConfigError, match="name: required key is missing"):
        from_dict(_Outer, {})
    with pytest.raises(ConfigError, match="epochs: expected an integer"):
        from_dict(_Outer, {"name": "x", "epochs": "three"})
    with pytest.raises(ConfigError, match="not one of"):
        from_dict(_Outer, {"name": "x", "losses": [{"kind": "kl"}]})


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "a" / "f.json"
    write_json(target, {"x": 1})
    assert read_json(target) == {"x": 1}
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert read_json(target) == {"x": 1}
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]
    atomic_write_text(target, "{}")
    assert read_json(target) == {}
