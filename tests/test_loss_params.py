"""Every loss declares its own parameters: config entries are checked against that loss's class, with
``file:line: key.path`` errors, in ``distill`` and in compression steps; run ids hash losses as before."""
from __future__ import annotations

import dataclasses

import pytest

from tinydistill.distill.config import DistillConfig, LossConfig, ScheduleConfig, loss_config
from tinydistill.distill.schema import ConfigError, to_dict


def test_every_loss_has_its_own_parameter_class():
    from tinydistill.distill.losses import LOSSES
    for entry in LOSSES.entries():
        params = entry.obj.Params
        assert dataclasses.is_dataclass(params) and issubclass(params, LossConfig) and params is not LossConfig
    keys = {name: {f.name for f in dataclasses.fields(LOSSES.get(name).Params)} for name in LOSSES.names()}
    base = {"type", "weight", "weight_schedule"}
    assert keys["hard_ce"] == keys["logits_mse"] == base | {"heads"}
    assert keys["soft_ce"] == base | {"heads", "temperature", "temperature_schedule"}
    assert keys["hidden_mse"] == keys["attention_kl"] == base | {"teacher_index", "matches", "layer_map"}
    assert keys["minilm"] == base | {"teacher_index", "matches", "relation_heads"}
    assert keys["intermediate"] == base | {"teacher_index", "matches"}
    soft = loss_config("kl", temperature=2)                      # an alias picks the same class
    assert type(soft).__name__ == "TemperatureParams" and soft.temperature == 2.0


@pytest.mark.parametrize("entry, message", [
    ({"type": "soft_ce", "layer_map": {0: 0}},
     r"distill.losses\[0\].layer_map: unknown key \(valid keys of loss 'soft_ce': type, weight, weight_schedule, "
     r"heads, temperature, temperature_schedule\)"),
    ({"type": "hard_ce", "temperature": 2.0}, r"distill.losses\[0\].temperature: unknown key .*loss 'hard_ce'"),
    ({"type": "hidden_mse", "relation_heads": 4}, r"losses\[0\].relation_heads: unknown key .*'hidden_mse'"),
    ({"type": "hidden_mse", "layer_mop": {0: 0}}, r"losses\[0\].layer_mop: unknown key; did you mean 'layer_map'"),
    ({"weight": 1.0}, r"distill.losses\[0\].type: required key is missing"),
    ({"type": "soft_cee"}, r"distill.losses\[0\].type: unknown loss 'soft_cee'; did you mean 'soft_ce'"),
    ({"type": "soft_ce", "temperature": 0}, r"distill.losses\[0\].temperature: must be > 0"),
    ({"type": "hard_ce", "weight": -1}, r"distill.losses\[0\].weight: must be >= 0"),
    ({"type": "hidden_mse", "layer_map": {0: 0}, "matches": [{"teacher": 1, "student": 1}]},
     r"losses\[0\].layer_map: give layer_map or matches, not both"),
    ({"type": "intermediate"}, r"distill.losses\[0\].matches: required"),
    ({"type": "intermediate", "matches": []}, r"losses\[0\].matches: give at least one match"),
    ({"type": "intermediate", "matches": [{"teacher": 1, "studnet": 1}]},
     r"losses\[0\].matches\[0\].studnet: unknown key; did you mean 'student'"),
    ({"type": "intermediate", "matches": [{"teacher": 1, "student": 1, "loss": "hidden_ms"}]},
     r"losses\[0\].matches\[0\].loss: 'hidden_ms' is not one of .*did you mean 'hidden_mse'"),
    ({"type": "intermediate", "matches": [{"teacher": -1, "student": 1}]},
     r"losses\[0\].matches\[0\].teacher: must be a layer index >= 0 or a module path"),
])
def test_loss_entries_are_checked_against_their_own_class(entry, message):
    with pytest.raises(ConfigError, match=message):
        DistillConfig.from_dict({"losses": [entry]})


def test_config_file_errors_name_file_line_and_the_loss_keys(tmp_path):
    from tinydistill.experiments.config import load_config
    from tests.test_experiments_config import BASE, _write
    path = _write(tmp_path, BASE.replace("{type: hard_ce, weight: 0.5}", "{type: hard_ce, weight: 0.5, layer_map: {0: 0}}"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "layer_map" in text)
    assert str(err.value).startswith(f"{path}:{line}: distill.losses[1].layer_map: unknown key (valid keys of loss "
                                     "'hard_ce': type, weight, weight_schedule, heads)")
    # compression steps' losses are checked the same way, recover included
    for step in ("{step: qat, losses: [{type: soft_ce, teacher_index: 1}]}",
                 "{step: width_prune, recover: {losses: [{type: soft_ce, teacher_index: 1}]}}"):
        with pytest.raises(ConfigError, match=r"compress\[0\]\.(recover\.)?losses\[0\]\.teacher_index: unknown key "
                                              r"\(valid keys of loss 'soft_ce'"):
            load_config(_write(tmp_path, BASE), [f"compress=[{step}]"])
    ok = load_config(_write(tmp_path, BASE), ["compress=[{step: qat, losses: [{type: hidden_mse, layer_map: {0: 0}}]}]"])
    assert ok.compress[0].params.losses == [{"type": "hidden_mse", "layer_map": {0: 0}}]


def test_resolved_losses_round_trip_and_hash_as_before():
    from tinydistill.distill.engine import config_hash
    cfg = DistillConfig.from_dict({"losses": [{"type": "soft_ce", "temperature": 2.0}, {"type": "hard_ce", "weight": 0.5},
                                              {"type": "hidden_mse", "layer_map": {0: 0, 6: 1}},
                                              {"type": "minilm", "relation_heads": 4}]})
    raw = to_dict(cfg)
    assert raw["losses"][1] == {"type": "hard_ce", "weight": 0.5, "weight_schedule": {"type": "constant", "end": None},
                                "heads": None}
    assert to_dict(DistillConfig.from_dict(raw)) == raw          # what to_raw writes loads again
    # the hashes the engine's checkpoints had when one class held every loss's fields (computed then)
    assert config_hash(cfg, 100) == "ce41705358c40c54"
    assert config_hash(DistillConfig(), 10) == "2b0113756c0a92f9"
    with_matches = DistillConfig.from_dict({"losses": [{"type": "hidden_mse", "matches": [{"teacher": 6, "student": 1}]}]})
    assert config_hash(with_matches, 10) != config_hash(DistillConfig.from_dict({"losses": [{"type": "hidden_mse"}]}), 10)


def test_needs_teacher_comes_from_the_loss_class():
    from tinydistill.distill.losses import LOSSES, uses_teacher
    assert [n for n in LOSSES.names() if not LOSSES.get(n).needs_teacher] == ["hard_ce"]
    assert not uses_teacher([loss_config("hard_ce"), loss_config("soft_ce", weight=0)])
    assert uses_teacher([loss_config("logits_mse")])
    ramp = loss_config("soft_ce", weight=0, weight_schedule={"type": "linear", "end": 1.0})
    assert ramp.weight_schedule == ScheduleConfig("linear", 1.0) and uses_teacher([ramp])   # switched on later
