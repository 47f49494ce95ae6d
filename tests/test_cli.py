"""The command line: start-up stays light (``--help``, ``list`` and ``data`` never import paddle, jieba or
numpy), ``list`` shows every registry, logging levels (``-v``/``-q``, ``$TINYDISTILL_LOG_LEVEL``) leave
results on stdout, and the exit status says what happened (0 ok, 1 a run failed, 2 usage or input)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import contextlib, io, json, sys
from tinydistill.experiments.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        rc = main(sys.argv[1:])
    except SystemExit as exc:  # --help
        rc = exc.code
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('paddle', 'paddlenlp', 'paddleslim', 'onnxruntime', 'jieba'))
print(json.dumps({"rc": rc, "heavy": heavy, "numpy": "numpy" in sys.modules, "out": out.getvalue()}))
"""


def run_cli(*args: str, data_dir: Path | None = None) -> dict:
    env = dict(os.environ)
    if data_dir is not None:
        env["TINYDISTILL_DATA"] = str(data_dir)
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args,expect", [
    (("--help",), "knowledge distillation"),
    (("list", "tasks"), "nlpcc2018_slu"),
    (("list", "tokenizers"), "ernie-wordpiece"),
    (("list", "-v", "tasks"), "chnsenticorp"),
    (("data", "list"), "trainingdata04.zip"),
])
def test_light_commands_do_not_import_paddle(args, expect):
    res = run_cli(*args)  # none of these reads data: they must run (and be tested) without it
    assert res["rc"] == 0
    assert expect.lower() in res["out"].lower()
    assert res["heavy"] == []


def test_full_list_does_not_import_paddle():
    res = run_cli("list")
    assert res["rc"] == 0 and "tasks:" in res["out"] and "tokenizers:" in res["out"]
    assert res["heavy"] == []


def test_data_check_does_not_import_paddle(data_dir):
    res = run_cli("data", "check", "chnsenticorp", data_dir=data_dir)
    assert res["rc"] == 0 and "train: 9,600 examples" in res["out"] and res["heavy"] == []


def test_console_script_help():
    exe = Path(sys.executable).with_name("tinydistill")
    if not exe.exists():
        pytest.skip("tinydistill console script not installed in this environment")
    proc = subprocess.run([str(exe), "data", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "{list,fetch,check}" in proc.stdout


def test_version_prints_the_installed_version():
    import subprocess
    import sys
    from importlib.metadata import version

    out = subprocess.run([sys.executable, "-m", "tinydistill.experiments.cli", "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"tinydistill {version('tinydistill')}"


# -- list: every registry --------------------------------------------------------------------------------
def parse_list(text: str) -> dict[str, list[str]]:
    """``KIND:`` lines and the ``  NAME  SUMMARY`` lines under them -> {kind: [names]}."""
    kinds: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(" "):
            assert line.endswith(":"), line
            kinds[line[:-1]] = []
        elif line.strip():
            kinds[list(kinds)[-1]].append(line.split()[0])
    return kinds


def test_list_shows_every_registry_and_stays_light():
    from tinydistill.distill.registry import KINDS, get_registry

    res = run_cli("list")
    assert res["rc"] == 0 and res["heavy"] == [] and res["numpy"] is False
    listed = parse_list(res["out"])
    assert list(listed) == list(KINDS)
    assert {"schedules", "mixers", "formats", "runtimes", "datasets"} <= set(listed)
    for kind, names in listed.items():
        assert sorted(names) == sorted(get_registry(kind).names()) and names, kind  # order: import order
    # onnxruntime-c is a runtime (what --runtime names), not an export format (what export: names)
    assert "onnxruntime-c" in listed["runtimes"] and "onnxruntime-c" not in listed["formats"]
    assert {"constant", "linear"} <= set(listed["schedules"]) and {"fixed", "confidence"} <= set(listed["mixers"])


def test_list_one_kind_and_the_backends_alias():
    one = parse_list(run_cli("list", "runtimes")["out"])
    assert list(one) == ["runtimes"]
    both = parse_list(run_cli("list", "backends")["out"])  # the old word meant both kinds
    assert list(both) == ["formats", "runtimes"] and "onnx-int4" in both["formats"]


# -- registries derived, not duplicated --------------------------------------------------------------------
def test_runtime_tables_come_from_the_registries():
    from tinydistill.compress import FORMATS, RUNTIMES
    from tinydistill.compress.common import default_runtimes, runtime_of

    assert default_runtimes() == {"dygraph": "paddle", "paddle-inference": "paddle-inference",
                                  "onnx": "onnxruntime", "ort": "onnxruntime"}
    for entry in FORMATS.entries():  # every format's default runtime exists and runs what the format writes
        assert entry.meta["format"] in RUNTIMES.entry(entry.meta["runtime"]).meta["formats"], entry.name
    onnx = {"format": "onnx"}
    assert runtime_of(onnx) == "onnxruntime" and runtime_of(onnx, "ort") == "onnxruntime"
    assert runtime_of(onnx, "onnxruntime-c") == "onnxruntime-c" and runtime_of({"format": "dygraph"}, "dygraph") == "paddle"
    with pytest.raises(ValueError, match="use onnxruntime or onnxruntime-c"):
        runtime_of(onnx, "paddle")
    with pytest.raises(ValueError, match="unknown runtime 'onnxruntime-cc'; did you mean"):
        runtime_of(onnx, "onnxruntime-cc")


def test_config_literals_match_the_schedule_and_mixer_registries():
    import typing

    from tinydistill.distill.config import MixingConfig, ScheduleConfig
    from tinydistill.distill.multiteacher import MIXERS
    from tinydistill.distill.schedules import SCHEDULES

    hints = {cls: typing.get_type_hints(cls) for cls in (ScheduleConfig, MixingConfig)}
    assert set(typing.get_args(hints[ScheduleConfig]["type"])) == set(SCHEDULES.names())
    assert set(typing.get_args(hints[MixingConfig]["mode"])) == set(MIXERS.names())


def test_registry_reads_like_the_dicts_it_replaced(monkeypatch):
    from tinydistill.tasks import datasets

    assert list(datasets.DATASETS) == ["chnsenticorp", "nlpcc2018_task4"] and len(datasets.DATASETS) == 2
    assert datasets.get_dataset("nlpcc2018_slu") is datasets.DATASETS["nlpcc2018_task4"]  # a task's name
    fake = datasets.DATASETS["chnsenticorp"]
    monkeypatch.setitem(datasets.DATASETS, "toy", fake)
    assert datasets.get_dataset("toy") is fake
    monkeypatch.undo()
    assert "toy" not in datasets.DATASETS
    with pytest.raises(FileNotFoundError, match="unknown data set 'imdb'"):
        datasets.get_dataset("imdb")


# -- logging and exit codes (a stand-in command, in this process) ---------------------------------------------
def _fake_command(monkeypatch, body):
    import tinydistill.experiments.cli as cli

    monkeypatch.setattr(cli, "_fake", body, raising=False)
    monkeypatch.setitem(cli.HANDLERS, "report", "tinydistill.experiments.cli:_fake")
    return cli.main


def _chatty(args):
    import logging

    from tinydistill.distill.logs import ENV

    logging.getLogger("experiments.fake").info("an info line")
    logging.getLogger("tinydistill.fake").debug("a debug line")
    logging.getLogger("compress.fake").warning("a warning line")
    print(f"RESULT level={os.environ[ENV]}")  # what child processes (sweep and bench workers) inherit
    return 0


@pytest.mark.parametrize("flags,env,shown", [
    ([], None, ["an info line", "warning: a warning line"]),
    (["-q"], None, ["warning: a warning line"]),
    (["-qq"], None, []),
    (["-v"], None, ["tinydistill.fake: a debug line", "experiments.fake: an info line",
                    "compress.fake: warning: a warning line"]),
    ([], "DEBUG", ["tinydistill.fake: a debug line", "experiments.fake: an info line",
                   "compress.fake: warning: a warning line"]),
    ([], "warning", ["warning: a warning line"]),
    (["-v"], "ERROR", ["tinydistill.fake: a debug line", "experiments.fake: an info line",
                       "compress.fake: warning: a warning line"]),  # the flag wins
])
def test_log_levels_leave_results_on_stdout(monkeypatch, capsys, flags, env, shown):
    from tinydistill.distill.logs import ENV

    if env is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, env)
    main = _fake_command(monkeypatch, _chatty)
    assert main([*flags, "report", "runs"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("RESULT level=")  # results reach stdout at every level
    assert sorted(err.splitlines()) == sorted(shown)
    assert os.environ.get(ENV) == env  # exported to children for the command only


def test_spawned_process_honours_the_log_level():
    code = "from tinydistill.distill.logs import progress; progress('from a worker')"
    for level, expect in (("INFO", "from a worker\n"), ("WARNING", "")):
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "TINYDISTILL_LOG_LEVEL": level, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == expect, (level, proc.stderr)


def _raises(error):
    def handler(args):
        raise error
    return handler


def test_exit_codes(monkeypatch, capsys):
    from tinydistill.compress.common import ExportError
    from tinydistill.distill.logs import ENV
    from tinydistill.distill.schema import ConfigError

    main = _fake_command(monkeypatch, _raises(ExportError("qat: INT8 accuracy out of tolerance")))
    assert main(["report", "runs"]) == 1  # a run failed
    assert capsys.readouterr().err == "tinydistill report: error: qat: INT8 accuracy out of tolerance\n"
    main = _fake_command(monkeypatch, _raises(ConfigError("c.yaml: distill.lr: must be > 0")))
    assert main(["report", "runs"]) == 2  # input
    main = _fake_command(monkeypatch, lambda args: 1)
    assert main(["-qq", "report", "runs"]) == 1  # a command's own status (a sweep with failed runs)
    monkeypatch.setenv(ENV, "LOUD")
    assert main(["report", "runs"]) == 2
    assert ENV in capsys.readouterr().err
    monkeypatch.delenv(ENV)
    assert main(["list", "bogus"]) == 2
    for argv in (["predict"], ["bench", "x", "--runs", "0"], ["--no-such-flag", "list"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2, argv


LAZY = """
import sys
from tinydistill.experiments import cli
from tinydistill.distill.logs import get_logger

def chatty(args):
    print("IMPORTED " + str("logging" in sys.modules))  # nothing logged yet: still not imported
    get_logger("experiments.fake").info("an info line")
    get_logger("tinydistill.fake").debug("a debug line")
    get_logger("compress.fake").warning("a warning line")
    return 0

cli._fake = chatty
cli.HANDLERS["report"] = "tinydistill.experiments.cli:_fake"
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("flags,shown", [
    ([], ["an info line", "warning: a warning line"]),
    (["-q"], ["warning: a warning line"]),
    (["-v"], ["tinydistill.fake: a debug line", "experiments.fake: an info line",
              "compress.fake: warning: a warning line"]),
])
def test_logging_is_imported_on_the_first_record_and_set_up_then(flags, shown):
    """A process that has not imported ``logging`` when the command starts (the lean predictor) gets the same
    records at the same level as one that had: the first record imports it and sets the handler up."""
    env = {k: v for k, v in os.environ.items() if k != "TINYDISTILL_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", LAZY, *flags, "report", "runs"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**env, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "IMPORTED False\n"
    assert sorted(proc.stderr.splitlines()) == sorted(shown)


def test_project_loggers_come_from_get_logger():
    """``distill.logs.get_logger`` sets the project's handler up on first use; a stdlib logger taken directly
    would log before that set-up in a process that imported ``logging`` late, and its info lines would be lost."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".venv/", ".ci/", "tests/")) or rel == "distill/logs.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "logging.getLogger(" in line and 'getLogger("jieba")' not in line:
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []
