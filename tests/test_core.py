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


# -- distill.records: the dataclass subset the lean predictor's types use -------------------------------------
from tinydistill.distill import records  # noqa: E402


@records.record
class _RecInner:
    temperature: float = 1.0
    kind: Literal["soft_ce", "mse"] = "soft_ce"


@records.record
class _RecOuter:
    name: str
    epochs: int = 3
    losses: list[_RecInner] = records.field(default_factory=list)
    seed: Optional[int] = None


@records.record
class _RecChild(_RecOuter):
    epochs: int = 5  # re-annotated: keeps its place, new default
    extra: str = "e"


@records.record(frozen=True)
class _RecFrozen:
    label: str
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class _DcFrozen:
    label: str
    start: int
    end: int


def test_record_behaves_as_the_dataclass_it_replaces():
    a, b = _RecOuter("x"), _RecOuter("x")
    assert a == b and a.losses is not b.losses  # default_factory: one new list per record
    a.losses.append(_RecInner())
    assert a != b and repr(b) == "_RecOuter(name='x', epochs=3, losses=[], seed=None)"
    with pytest.raises(TypeError):
        hash(a)  # mutable with __eq__: unhashable, as a dataclass
    assert [f.name for f in records.fields(_RecChild)] == ["name", "epochs", "losses", "seed", "extra"]
    assert _RecChild("y").epochs == 5 and _RecChild("y", 1).epochs == 1
    f = _RecFrozen("city", 0, 2)
    d = _DcFrozen("city", 0, 2)
    assert (f.label, f.start, f.end) == (d.label, d.start, d.end) and hash(f) == hash(_RecFrozen("city", 0, 2))
    assert {f, _RecFrozen("city", 0, 2)} == {f}
    with pytest.raises(AttributeError):
        f.start = 1
    assert records.replace(f, end=3) == _RecFrozen("city", 0, 3) and f.end == 2
    with pytest.raises(TypeError, match="no field 'stop'"):
        records.replace(f, stop=3)
    with pytest.raises(TypeError):
        _RecOuter()  # a field without a default is required
    assert records.is_record(f) and records.is_record(_RecFrozen) and not records.is_record(d)


def test_records_pickle_copy_and_load_through_the_schema():
    import copy
    import pickle

    f = _RecFrozen("city", 0, 2)
    assert pickle.loads(pickle.dumps(f)) == f and copy.deepcopy(f) == f
    cfg = from_dict(_RecOuter, {"name": "x", "epochs": 2, "losses": [{"temperature": 2}, {"kind": "mse"}]})
    assert isinstance(cfg.losses[0], _RecInner) and cfg.losses[0].temperature == 2.0
    assert from_dict(_RecOuter, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="name: required key is missing"):
        from_dict(_RecOuter, {})
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        from_dict(_RecOuter, {"name": "x", "losses": [{"temprature": 2}]})


def test_task_types_are_records_and_the_lean_modules_skip_dataclasses():
    import subprocess
    import sys

    code = ("import sys; import tinydistill.tasks.nlpcc_slu, tinydistill.tasks.chnsenticorp, "
            "tinydistill.tasks.multitask, tinydistill.compress.ort_capi, tinydistill.distill.modeldir; "
            "print(sorted(m for m in ('dataclasses', 'inspect') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
