"""Sweeps spread over machines: ``--list-cells`` / ``--cell`` / ``--cells``, the store lock and its stale-holder
rule, three worker processes on disjoint cells of one grid writing one store (one SIGKILLed while it holds a
run's lock, and re-run), and the documented multi-node launcher commands."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tinydistill.experiments.slu_templates import write_corpus
from tinydistill.experiments.store import ResultStore, StoreLock, store_dir

ROOT = Path(__file__).resolve().parents[1]

GRID = """\
name: grid
task: {{name: nlpcc2018_slu, max_seq_length: 16, data_dir: {data}}}
teacher:
  name: ernie-3.0-tiny-pico-v2-zh
  init: scratch
  options: {{num_hidden_layers: 1, hidden_size: 16, num_attention_heads: 2, intermediate_size: 32}}
  tokenizer: {{build: true}}
  train: {{epochs: 1, max_steps: 3, lr: 1.0e-3, batch_size: 16, progress: false}}
student:
  name: ernie-3.0-tiny-pico-v2-zh
  init: scratch
  options: {{num_hidden_layers: 1, hidden_size: 16, num_attention_heads: 2, intermediate_size: 32}}
  tokenizer: {{build: true}}
distill:
  epochs: 1
  max_steps: 3
  lr: 1.0e-3
  batch_size: 16
  progress: false
  losses: [{{type: soft_ce, temperature: 2.0}}, {{type: hard_ce, weight: 0.5}}]
seeds: [1]
sweep:
  recipes:
    no_kd: {{distill.losses: [{{type: hard_ce}}]}}
    kd: {{}}
    kd_t4: {{distill.losses.0.temperature: 4.0}}
    kd_t8: {{distill.losses.0.temperature: 8.0}}
"""
RECIPES = ("no_kd", "kd", "kd_t4", "kd_t8")


@pytest.fixture()
def grid(tmp_path):
    write_corpus(tmp_path / "data" / "nlpcc2018_task4", n=60, seed=3)
    config = tmp_path / "grid.yaml"
    config.write_text(GRID.format(data=tmp_path / "data"), encoding="utf-8")
    return config, tmp_path / "runs"


def _sweep(config, out, *args, env=None):
    # the teacher-output cache in the test's own directory, not in ~/.cache
    env = {**os.environ, "TINYDISTILL_CACHE": str(Path(out).parent / "cache"), **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "tinydistill.experiments.cli", "sweep", str(config), "--out", str(out), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_list_cells_and_selection(grid):
    config, out = grid
    proc = subprocess.run([sys.executable, "-m", "tinydistill.experiments.cli", "sweep", str(config), "--out", str(out),
                           "--list-cells"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [r[0] for r in rows] == ["0", "1", "2", "3"] and [r[4] for r in rows] == list(RECIPES)
    assert all(r[5] == "seed=1" and r[6] == "todo" for r in rows) and len({r[1] for r in rows}) == 4
    for bad, word in (("4", "cells 0-3"), ("2-1", "cells 0-3"), ("x", "expected K")):
        proc = subprocess.run([sys.executable, "-m", "tinydistill.experiments.cli", "sweep", str(config), "--out", str(out),
                               "--cells", bad], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and word in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

    from tinydistill.experiments.sweep import parse_cells

    assert parse_cells(["3", "0-1", "1,2"], 4) == [0, 1, 2, 3]


def test_three_workers_disjoint_cells_one_store_one_killed(grid):
    """Like three machines of a job array on a shared file system: A takes cells 0-1, B cell 2 (SIGKILLed while
    it runs its cell, holding that run's lock, then re-run), C cell 3.  A holds the teacher lock when B and C
    start, so they wait for it."""
    import json

    config, out = grid
    t0 = time.monotonic()
    a = _sweep(config, out, "--cells", "0-1")
    locks = out / "grid" / "_store" / ".locks"
    while not list(locks.glob("teacher-*.lock")) and a.poll() is None and time.monotonic() - t0 < 60:
        time.sleep(0.02)
    b = _sweep(config, out, "--cell", "2")
    c = _sweep(config, out, "--cell", "3")

    def holds_run_lock() -> bool:
        for f in locks.glob("run-pico-kd_t4-*.lock"):
            try:
                return json.loads(f.read_text())["pid"] == b.pid
            except (OSError, ValueError):
                pass
        return False

    while not holds_run_lock() and b.poll() is None and time.monotonic() - t0 < 240:
        time.sleep(0.02)
    b.kill()  # as a node that dies: no clean-up runs
    b_out = b.communicate(timeout=60)[0]
    assert b.returncode == -signal.SIGKILL, b_out
    b2 = _sweep(config, out, "--cell", "2")  # the re-run finds the dead worker's run lock and takes it over
    outputs = {"A": a.communicate(timeout=300)[0], "B": b_out, "C": c.communicate(timeout=300)[0],
               "B again": b2.communicate(timeout=300)[0]}
    assert (a.returncode, c.returncode, b2.returncode) == (0, 0, 0), outputs
    assert re.search(r"lock run-pico-kd_t4-\S+: took over from pid \d+ .*has exited", outputs["B again"]), outputs

    records = ResultStore(store_dir(out / "grid")).records()  # every record present and readable
    assert sorted(r["recipe"] for r in records) == sorted(RECIPES)
    assert all(r["metrics"]["student.dev.sentence_accuracy"]["unit"] == "%" for r in records)
    # the teacher was trained once, by A, and every run used that one
    assert sum(o.count("): training ->") for o in outputs.values()) == 1, outputs
    assert "training ->" in outputs["A"]
    (teacher,) = (out / "grid" / "_teachers").iterdir()
    assert all(Path(r["run_dir"], "teacher").resolve() == teacher.resolve() for r in records)
    assert len({r["metrics"]["teacher.dev.sentence_accuracy"]["value"] for r in records}) == 1
    assert not list(locks.glob("*.lock")) and not list(locks.glob("*.break"))  # every lock released
    listed = subprocess.run([sys.executable, "-m", "tinydistill.experiments.cli", "sweep", str(config), "--out", str(out),
                             "--list-cells"], cwd=ROOT, capture_output=True, text=True, timeout=120).stdout
    assert [line.rsplit("\t", 1)[1] for line in listed.splitlines()] == ["done"] * 4
    print(f"three workers + re-run: {time.monotonic() - t0:.1f}s")


# -- the lock itself ----------------------------------------------------------------------------------------
HOLDER = """\
import sys, time
from tinydistill.experiments.store import StoreLock
lock = StoreLock(sys.argv[1], heartbeat=0.05).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_lock_excludes_and_is_taken_over_from_a_killed_holder(tmp_path):
    path = tmp_path / "store" / ".locks" / "teacher-x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TimeoutError, match="still held by pid"):
            StoreLock(path, timeout=0.5, poll=0.05).acquire()
        holder.kill()  # not reaped yet: a zombie counts as exited
        messages = []
        t0 = time.monotonic()
        with StoreLock(path, poll=0.05, log=messages.append) as lock:
            assert time.monotonic() - t0 < 5 and path.is_file() and not lock.lost
        assert any("took over from pid" in m and "has exited" in m for m in messages), messages
        assert not path.exists()
    finally:
        holder.kill()
        holder.wait()


def test_lock_stale_rule_across_hosts_uses_the_heartbeat(tmp_path):
    import json

    path = tmp_path / ".locks" / "teacher-y.lock"
    path.parent.mkdir()
    # a holder on another machine whose heartbeat is fresh: waited for, not broken
    path.write_text(json.dumps({"token": "t", "pid": 1, "host": "elsewhere", "since": time.time()}))
    with pytest.raises(TimeoutError):
        StoreLock(path, stale_after=5, timeout=0.3, poll=0.05).acquire()
    # the same holder silent for longer than stale_after: taken over
    os.utime(path, (time.time() - 10, time.time() - 10))
    messages = []
    with StoreLock(path, stale_after=5, poll=0.05, log=messages.append):
        assert "elsewhere" not in path.read_text()
    assert any("no heartbeat" in m for m in messages), messages

    # a live holder keeps its lock fresh from a heartbeat thread, however long it works
    held = StoreLock(path, stale_after=0.4, heartbeat=0.05).acquire()
    try:
        time.sleep(1.0)
        with pytest.raises(TimeoutError):
            StoreLock(path, stale_after=0.4, timeout=0.3, poll=0.05).acquire()
    finally:
        held.release()
    assert not path.exists()


def test_lock_many_waiters_one_holder_at_a_time(tmp_path):
    path = tmp_path / ".locks" / "z.lock"
    inside, overlap, order = [0], [], []
    guard = threading.Lock()

    def worker(k):
        for _ in range(5):
            with StoreLock(path, poll=0.001, stale_after=30):
                with guard:
                    inside[0] += 1
                    overlap.append(inside[0])
                time.sleep(0.002)
                with guard:
                    inside[0] -= 1
                order.append(k)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(order) == 20 and max(overlap) == 1


# -- data parallelism over nodes ------------------------------------------------------------------------------
def _documented_launch_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Data parallelism", 1)[1].split("\n## ", 1)[0]
    commands = [shlex.split(line.split("#", 1)[0]) for line in section.splitlines()
                if line.startswith("python -m paddle.distributed.launch")]
    return [c[3:] for c in commands]


def test_documented_multinode_launch_commands_parse(monkeypatch):
    """Every launcher command the README documents parses with paddle's own launcher argument parser, with the
    node list / node count / rendezvous it says; running them needs several machines."""
    from tinydistill import distill  # noqa: F401 - the legacy program format flag, before paddle
    from paddle.distributed.launch.context.args_envs import parse_args

    commands = _documented_launch_commands()
    assert len(commands) >= 4
    parsed = []
    for argv in commands:
        monkeypatch.setattr(sys, "argv", ["launch", *argv])
        args, unknown = parse_args()
        assert not unknown, (argv, unknown)
        assert args.training_script and args.training_script.endswith(".py"), argv
        parsed.append(args)
    multinode = [a for a in parsed if a.ips or a.master]
    assert any(a.ips and len(a.ips.split(",")) == 2 for a in multinode)
    assert any(a.master and a.nnodes == "2" and a.rank in (0, 1) for a in multinode)


@pytest.mark.skipif(not os.environ.get("TINYDISTILL_MULTINODE_TEST"),
                    reason="two launchers as two nodes over 127.0.0.1 (~1-2 min); set TINYDISTILL_MULTINODE_TEST=1")
def test_two_launchers_as_two_nodes(data_dir, tmp_path):
    """The ``--master ... --nnodes 2`` form of the README, both "nodes" on this machine: 2 ranks in sync."""
    import json
    import socket

    from test_distill_train import DP_SCRIPT

    script = tmp_path / "dp.py"
    script.write_text(DP_SCRIPT.format(root=str(ROOT), data=str(data_dir)))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-m", "paddle.distributed.launch", "--master", f"127.0.0.1:{port}",
                               "--nnodes", "2", "--rank", str(rank), "--nproc_per_node", "1",
                               "--log_dir", str(tmp_path / f"log{rank}"), str(script), str(tmp_path)],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    logs = "".join(p.read_text() for p in sorted(tmp_path.glob("log*/workerlog.*")))
    assert all(p.returncode == 0 for p in procs), (outs, logs[-3000:])
    results = {r["rank"]: r for r in (json.loads(line.split("RESULT ", 1)[1]) for line in logs.splitlines()
                                      if line.startswith("RESULT "))}
    assert set(results) == {0, 1} and results[0]["weights"] == results[1]["weights"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_sweep_worker_ends_with_its_sweep():
    """A sweep killed by SIGKILL must not leave its workers training on (they would hold the store's locks and
    race a rerun); the control worker, without the initializer, outlives it - what the initializer prevents."""
    child = ("import sys, time\nfrom tinydistill.experiments.sweep import die_with_parent\n"
             "if sys.argv[1] == 'armed':\n    die_with_parent(int(sys.argv[2]))\nprint('ready', flush=True)\n"
             "time.sleep(60)\n")
    parent = ("import os, subprocess, sys\n"
              "kids = [subprocess.Popen([sys.executable, '-c', sys.argv[1], mode, str(os.getpid())],"
              " stdout=subprocess.PIPE, text=True) for mode in ('armed', 'control')]\n"
              "for k in kids:\n    assert k.stdout.readline().strip() == 'ready'\n"
              "print(' '.join(str(k.pid) for k in kids), flush=True)\n"
              "import time; time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", parent, child], stdout=subprocess.PIPE, text=True)
    armed, control = map(int, proc.stdout.readline().split())
    try:
        assert _alive(armed) and _alive(control)
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 15
        while _alive(armed) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(armed), "the worker outlived its sweep"
        assert _alive(control), "control: a plain child should outlive its parent"
    finally:
        for pid in (armed, control):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_teacher_jobs_with_a_shared_teacher_go_after_independent_ones():
    from tinydistill.experiments.sweep import order_teacher_jobs

    keyed = [({"base"}, "no_kd"), ({"base", "mini"}, "ta_mini"), ({"micro"}, "micro_teacher"),
             ({"base", "small"}, "ta_small"), ({"other"}, "other")]
    assert order_teacher_jobs(keyed) == ["no_kd", "micro_teacher", "other", "ta_mini", "ta_small"]
    assert order_teacher_jobs([]) == []
