"""Result store and report code on synthetic records (test fixtures, not results)."""
from __future__ import annotations

import argparse
import csv
import io
import json
import multiprocessing as mp

import pytest

from tinydistill.experiments import report
from tinydistill.experiments.store import ResultStore, flatten_metrics, guess_unit, store_dir


def _record(recipe, seed, student_acc, kd, size=5.0, lat=2.0, teacher="ernie-3.0-tiny-base-v2-zh"):
    metrics = {
        **flatten_metrics("teacher", {"dev": {"accuracy": 90.0 + seed * 0.1}}),
        **flatten_metrics("student", {"dev": {"accuracy": student_acc}, "size_mb": 20.0, "latency_p50_ms": 4.0}),
        **flatten_metrics("compressed.qat", {"dev": {"accuracy": student_acc - 0.5}, "size_mb": size,
                                             "latency_p50_ms": lat}),
    }
    return {"run_id": f"{recipe}-s{seed}", "name": "t", "recipe": recipe, "task": "chnsenticorp",
            "teacher": teacher, "student": "bilstm", "seed": seed, "kd": kd, "main_metric": "accuracy",
            "metrics": metrics, "variants": ["student", "compressed.qat"], "final": "compressed.qat",
            "durations": {"student": 1.0}, "git_commit": "abc", "versions": {"paddlepaddle": "3.0.0"}}


@pytest.fixture
def runs(tmp_path):
    store = ResultStore(store_dir(tmp_path))
    base = {1: 80.0, 2: 81.0, 3: 79.5}
    kd = {1: 82.0, 2: 83.5, 3: 81.0}  # gains 2.0, 2.5, 1.5
    for s in (1, 2, 3):
        store.put(_record("no_kd", s, base[s], False, size=6.0, lat=3.0))
        store.put(_record("logits_kd", s, kd[s], True, size=4.0, lat=1.5))
    store.put(_record("single_seed_kd", 1, 85.0, True, size=8.0, lat=1.0))
    return tmp_path


def test_units_are_inferred_and_explicit_units_kept():
    assert guess_unit("size_mb") == "MB" and guess_unit("latency_p50_ms") == "ms"
    assert guess_unit("sentence_accuracy") == "%" and guess_unit("num_parameters") == "count"
    flat = flatten_metrics("x", {"a": {"value": 3, "unit": "widgets"}, "name": "skip", "flag": True})
    assert flat == {"x.a": {"value": 3, "unit": "widgets"}}


def test_kd_gain_is_paired_and_tested_with_scipy(runs):
    from scipy import stats

    rows = report.group(report.find_records(runs))
    by_recipe = {r.recipe: r for r in rows}
    gain = report.kd_gain(by_recipe["logits_kd"], rows)
    assert gain.baseline == "no_kd" and gain.n == 3
    assert gain.mean == pytest.approx(2.0)
    expected = stats.ttest_rel([82.0, 83.5, 81.0], [80.0, 81.0, 79.5]).pvalue
    assert gain.p_value == pytest.approx(expected)
    single = report.kd_gain(by_recipe["single_seed_kd"], rows)
    assert single.n == 1 and single.p_value is None and single.note == "n<2"
    assert report.kd_gain(by_recipe["no_kd"], rows).mean is None


def test_report_writes_tables_and_plots(runs):
    written = report.write_report(runs, plots=True)
    md = written["md"].read_text(encoding="utf-8")
    line = next(l for l in md.splitlines() if "| logits_kd |" in l)
    assert "82.17 ± 1.26" in line  # mean ± sample std over seeds
    assert "+2.00 (p=" in line and "n=3" in line
    assert "(n=1: no test, n<2)" in next(l for l in md.splitlines() if "single_seed_kd" in l)
    rows = list(csv.reader(io.StringIO(written["csv"].read_text())))
    header, body = rows[0], {r[3]: dict(zip(rows[0], r)) for r in rows[1:]}
    assert "kd_gain_p" in header and float(body["logits_kd"]["final_size_mb"]) == 4.0
    tex = written["latex"].read_text()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and r"logits\_kd" in tex
    for name in ("acc_vs_size.png", "acc_vs_latency.png"):
        assert written[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pareto_front():
    pts = [(1.0, 80.0), (2.0, 85.0), (3.0, 84.0), (0.5, 70.0), (2.0, 83.0)]
    from tinydistill.experiments.report_plots import pareto_front

    assert pareto_front(pts) == [3, 0, 1]


def test_cli_report_prints_format(runs, capsys):
    assert report.cli_report(argparse.Namespace(runs_dir=str(runs), out=None, format="csv", plots=False)) == 0
    assert "kd_gain_mean" in capsys.readouterr().out


def _writer(path, worker, n):
    store = ResultStore(path)
    for i in range(n):
        store.put({"run_id": f"w{worker}-{i}", "payload": "x" * 5000, "seed": i})


def test_store_concurrent_writers_lose_nothing(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(tmp_path, w, 40)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = ResultStore(tmp_path).records()
    assert len(records) == 120 and all(len(r["payload"]) == 5000 for r in records)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_store_skips_damaged_record(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    ResultStore(tmp_path).put(_record("a", 1, 1.0, False))
    damaged: list[str] = []
    assert [r["run_id"] for r in ResultStore(tmp_path).records(damaged)] == ["a-s1"]  # one bad file hides nothing
    assert len(damaged) == 1 and "bad.json" in damaged[0]
    with pytest.raises(ValueError):
        ResultStore(tmp_path).put({"run_id": "../escape"})
    json.dumps(_record("a", 1, 1.0, False))  # records are plain JSON


def test_rows_never_mix_configurations():
    a1, a2 = _record("kd", 1, 80.0, True), _record("kd", 2, 82.0, True)
    b1 = _record("kd", 1, 60.0, True)  # same labels, another configuration (e.g. a recipe edited later)
    for r, h in ((a1, "aaaaaaaa"), (a2, "aaaaaaaa"), (b1, "bbbbbbbb")):
        r["group_hash"] = h
    rows = report.group([a1, a2, b1])
    assert sorted((r.recipe, r.seeds) for r in rows) == [("kd#aaaaaa", [1, 2]), ("kd#bbbbbb", [1])]
    rerun = dict(a1, stored_at=2e9, metrics=_record("kd", 1, 90.0, True)["metrics"])
    (row,) = report.group([a1, rerun])
    assert row.per_seed("student.dev.accuracy") == {1: 90.0}  # the newest record of a seed wins
