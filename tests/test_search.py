"""``tinydistill search``: budgets, the space as a sweep, and a tiny space end to end on real NLPCC data (a subset
of the corpus): untrained probes prune the candidates over the size budget, the rest are trained, benchmarked
and reported with the Pareto front, the best model within the budget and the plots."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tinydistill.distill.schema import ConfigError
from tinydistill.experiments.search import over_budget, parse_budgets

ROOT = Path(__file__).resolve().parents[1]


def _student(label: str, layers: int, hidden: int, ffn: int) -> str:
    return (f"{{name: ernie-3.0-tiny-pico-v2-zh, label: {label}, init: scratch, tokenizer: {{build: true}}, "
            f"options: {{num_hidden_layers: {layers}, hidden_size: {hidden}, num_attention_heads: 2, "
            f"intermediate_size: {ffn}}}}}")


SPACE = f"""\
name: tiny-search
task: {{name: nlpcc2018_slu, max_seq_length: 16, data_dir: @DATA@}}
student: {{name: ernie-3.0-tiny-pico-v2-zh, init: scratch}}
distill: {{max_steps: 3, lr: 1.0e-3, batch_size: 32, progress: false, losses: [{{type: hard_ce}}]}}
bench: {{runs: 5, warmup: 1, throughput_batches: [2]}}
search:
  students: [{_student('small', 1, 16, 1024)}, {_student('wide', 2, 96, 192)}]
  widths: [1.0, 0.5]
  quantize: {{fp32: []}}
  width_prune: {{importance_examples: 32, recover: {{max_steps: 2, batch_size: 32}}}}
  budget: {{size_mb: 0.5}}
  probe_runs: 5
"""


def test_search_bad_input(tmp_path, capsys):
    from tinydistill.experiments.cli import main

    config = tmp_path / "plain.yaml"
    config.write_text("name: plain\ntask: {name: nlpcc2018_slu}\nstudent: {name: ernie-3.0-tiny-nano-v2-zh}\n",
                      encoding="utf-8")
    assert main(["search", str(config), "--budget", "latency_ms=1"]) == 2
    assert "no 'search' section" in capsys.readouterr().err
    config.write_text(SPACE.replace("@DATA@", str(tmp_path)) + "sweep: {recipes: {a: {}}}\n", encoding="utf-8")
    assert main(["search", str(config), "--out", str(tmp_path / "runs")]) == 2
    assert "sweep: a search runs its own grid" in capsys.readouterr().err
    config.write_text(SPACE.replace("@DATA@", str(tmp_path)).replace("widths: [1.0, 0.5]", "widths: [1.5]"),
                      encoding="utf-8")
    assert main(["search", str(config)]) == 2
    err = capsys.readouterr().err
    assert "search.widths: must be fractions in (0, 1]" in err and err.count("\n") == 1


def test_budgets():
    assert parse_budgets(["latency_ms=1.0", "size_mb=5"]) == {"latency_ms": 1.0, "size_mb": 5.0}
    for bad, message in (("latency=1", "did you mean 'latency_ms'"), ("size_mb=0", "> 0"),
                         ("size_mb", "NAME=VALUE"), ("size_mb=big", "> 0")):
        with pytest.raises(ConfigError, match=message):
            parse_budgets([bad])
    metrics = {"latency_p50_ms": 1.2, "size_mb": 4.0}
    assert over_budget(metrics, {"latency_ms": 1.0, "size_mb": 5.0}) == ["latency_ms 1.2 > 1"]
    assert over_budget(metrics, {"latency_ms": 1.0}, slack=0.25) == []  # within 1.0 x (1 + slack)
    assert over_budget(metrics, {"size_mb": 3.9}, slack=0.25) == ["size_mb 4 > 3.9"]  # sizes are exact: no slack
    assert over_budget(metrics, {"latency_ms": 1.0}, only=("size_mb",)) == []
    assert over_budget({}, {"latency_ms": 1.0}) == []  # not measured: nothing to prune on


@pytest.fixture(scope="module")
def slu_subset(data_dir, tmp_path_factory):
    """The first 120 sessions of the real NLPCC 2018 corpus (about 500 utterances) with its label files."""
    src = data_dir / "nlpcc2018_task4"
    root = tmp_path_factory.mktemp("slu") / "data"
    (root / "nlpcc2018_task4").mkdir(parents=True)
    sessions = src.joinpath("corpus.train.txt").read_text(encoding="utf-8").split("\n\n")[:120]
    (root / "nlpcc2018_task4" / "corpus.train.txt").write_text("\n\n".join(sessions) + "\n", encoding="utf-8")
    for name in ("intent_label.txt", "slot_label.txt"):
        (root / "nlpcc2018_task4" / name).write_bytes((src / name).read_bytes())
    return root


def _cli(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "tinydistill.experiments.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=600, env=dict(os.environ))
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def test_search_tiny_space(tmp_path, slu_subset):
    config = tmp_path / "space.yaml"
    config.write_text(SPACE.replace("@DATA@", str(slu_subset)), encoding="utf-8")
    out = tmp_path / "runs"
    # size budget 0.35 MB: the untrained probes prune the wide student at both widths before any training; the
    # small one is trained once and shared by its two candidates (full width, width 0.5)
    searched = _cli("search", config, "--out", out, "--budget", "size_mb=0.35", "--budget", "latency_ms=1000")
    assert searched.stdout.startswith("# Search: tiny-search")  # the result table goes to stdout, progress to stderr
    exp = out / "tiny-search"
    result = json.loads((exp / "search.json").read_text())
    cands = {c["name"]: c for c in result["candidates"]}
    small = ("small/fp32-w1-vall", "small/fp32-w0.5-vall")
    assert {n: c["status"] for n, c in cands.items()} == {
        small[0]: "trained", small[1]: "trained", "wide/fp32-w1-vall": "pruned", "wide/fp32-w0.5-vall": "pruned"}
    for name in ("wide/fp32-w1-vall", "wide/fp32-w0.5-vall"):
        c = cands[name]
        assert c["probe"]["size_mb"] > 0.35 and "latency_p50_ms" not in c["probe"]  # size first: never timed
        assert c["reason"].startswith("untrained: size_mb") and not c["result"]
        assert not any((exp / run_id).exists() for run_id in c["run_ids"])  # never trained
    assert cands["wide/fp32-w0.5-vall"]["probe"]["size_mb"] < cands["wide/fp32-w1-vall"]["probe"]["size_mb"]
    for name in small:
        c = cands[name]
        assert c["probe"]["latency_p50_ms"] > 0 and c["within_budget"] is True
        r = c["result"]
        assert r["metric"] is not None and r["latency_p50_ms"] > 0
        assert abs(r["size_mb"] - c["probe"]["size_mb"]) < 0.005  # the probe measured the architecture trained
    assert cands[small[1]]["result"]["final"] == "compressed.width_prune"
    (shared,) = (exp / "_students").iterdir()  # one student training for both candidates
    for name in small:
        assert (exp / cands[name]["run_ids"][0] / "student").resolve() == shared.resolve()
    assert result["best"] in small and set(result["pareto_front"]) <= set(small)
    md = (exp / "search.md").read_text()
    assert f"**Best within budget: {result['best']}**" in md and "pruned before training (size_mb 1.74 > 0.35)" in md
    assert "| Pareto |" in md and "![search_acc_vs_latency](search_acc_vs_latency.png)" in md
    for png in ("search_acc_vs_latency.png", "search_acc_vs_size.png"):
        assert (exp / png).stat().st_size > 1000
    records = [json.loads(f.read_text()) for f in (exp / "_store").glob("*.json")]  # the result store
    assert sorted(r["run_id"] for r in records) == sorted(cands[n]["run_ids"][0] for n in small)
    assert len({r["metrics"]["student.dev.sentence_accuracy"]["value"] for r in records}) == 1
    assert len(list((exp / "_search" / "probe").glob("*.json"))) == 4

    # a tighter budget: nothing is built or trained again; the probes and the finished runs are re-judged
    from tinydistill.experiments.config import load_config
    from tinydistill.experiments.search import run_search

    logs = []
    run_search(load_config(config), {"size_mb": 0.3, "latency_ms": 1e-6}, out=out, log=logs.append)
    assert any("2 pruned before training, 0 to train, 2 finished earlier" in line for line in logs)
    md = (exp / "search.md").read_text()
    assert "No trained candidate is within the budget" in md and "no: size_mb 0.331 > 0.3, latency_ms" in md
