"""What bad input gets: a table of bad configs, arguments, data and model files run through the real CLI.

Every case runs ``python -m tinydistill.experiments.cli ...`` in its own directory, in a subprocess (a few at a time),
at ``TINYDISTILL_LOG_LEVEL=WARNING`` (progress is info), and must exit non-zero with exactly one error line
on stderr that names the file, key or argument, with no traceback and no temporary (``.*.tmp``) or output
directory left behind.  Most cases fail before paddle is imported.  The data are a few generated rows, so the
module needs no real data set.  Besides the table: the command line's ``--data-dir`` wins over
``task.data_dir``, and run ids and teacher keys follow the data read (not where it lives); a damaged result
record is skipped by ``report``; atomic writes land 0644.
"""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 4
CASE_TIMEOUT = 240

BASE = """\
name: bad
task: {name: chnsenticorp, max_seq_length: 16}
teacher: {name: ernie-3.0-tiny-pico-v2-zh, init: scratch, tokenizer: {build: true}}
student: {name: bilstm, init: scratch, tokenizer: {type: char}, options: {embedding_size: 8, hidden_size: 4}}
distill: {epochs: 1, max_steps: 2, batch_size: 8, losses: [{type: soft_ce}, {type: hard_ce}], progress: false}
"""
TINY_RUN = """\
name: tiny
task: {name: chnsenticorp, max_seq_length: 16}
student: {name: bilstm, init: scratch, tokenizer: {type: char}, options: {embedding_size: 8, hidden_size: 4, mlp_size: 4}}
distill: {epochs: 1, max_steps: 2, batch_size: 8, losses: [{type: hard_ce}], progress: false}
"""
WORDS = "好 很好 不错 满意 差 很差 糟糕 失望 一般 还行".split()


def bomb(where: str) -> str:
    """9 levels of 9 aliases: ~387 million strings once expanded."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    body = BASE.replace("name: bad\n", "name: *a9\n") if where == "name" else \
        BASE.replace("hidden_size: 4}", "hidden_size: *a9}")
    return "\n".join(lines) + "\n" + body


def write_chnsenticorp(root: Path, rows: int = 40) -> Path:
    folder = root / "chnsenticorp"
    folder.mkdir(parents=True, exist_ok=True)
    texts = [f"{WORDS[i % len(WORDS)]}{WORDS[(i * 3) % len(WORDS)]}的酒店{i}" for i in range(rows)]
    (folder / "train.tsv").write_text("label\ttext_a\n" + "".join(f"{i % 2}\t{t}\n" for i, t in enumerate(texts)),
                                      encoding="utf-8")
    (folder / "dev.tsv").write_text("qid\tlabel\ttext_a\n" + "".join(f"{i}\t{i % 2}\t{t}\n" for i, t in
                                                                     enumerate(texts[:12])), encoding="utf-8")
    return root


def write_slu(root: Path, corpus: str) -> Path:
    folder = root / "nlpcc2018_task4"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.train.txt").write_text(corpus, encoding="utf-8")
    (folder / "intent_label.txt").write_text("OTHERS\nmusic.play\n", encoding="utf-8")
    (folder / "slot_label.txt").write_text("PAD\nO\nB-song\nI-song\nB-singer\nI-singer\n", encoding="utf-8")
    return root


def cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = CASE_TIMEOUT,
        code: str | None = None) -> subprocess.CompletedProcess:
    # at WARNING: progress (info) is not what a case is about; warnings and the error line still show
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TINYDISTILL_LOG_LEVEL": "WARNING", **(env or {})}
    env.pop("TINYDISTILL_DEBUG", None)
    cmd = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "tinydistill.experiments.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class Case:
    """One bad input: ``files`` are written into the case's own directory first (``None`` content:
    a directory; bytes: binary), then ``args`` run there."""

    name: str
    args: list[str]
    expect: str  # must appear in the one error line (the file, key or argument it names)
    files: dict[str, str | bytes | None] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    code: str | None = None  # run `python -c code args` instead of the CLI module (fault injection)
    noise: tuple[str, ...] = ()  # stderr line prefixes that are progress output, not errors
    nothing_under: tuple[str, ...] = ("runs",)  # globs that must match nothing afterwards


# ENOSPC while writing: the atomic write's fsync fails as a full disk does, then the CLI must say so in one
# line and leave no temporary behind
ENOSPC = """
import errno, sys
import tinydistill.distill.fsutil as fs
def full(path):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))
fs._fsync = full
from tinydistill.experiments.cli import main
sys.exit(main(sys.argv[1:]))
"""
# ... and while a stage writes a model directory (a checkpoint), where the library's error names no file
ENOSPC_STAGE = """
import errno, sys
import tinydistill.distill.fsutil as fs
def full(root):
    raise OSError(errno.ENOSPC, "No space left on device")
fs._finish_tree = full
from tinydistill.experiments.cli import main
sys.exit(main(sys.argv[1:]))
"""
# the QAT / INT8 tolerance refusal is an ExportError raised deep in a run; here raised by the handler itself
EXPORT_REFUSAL = """
import sys
import tinydistill.experiments.cli as cli
import tinydistill.compress.common as common
def refuse(args):
    raise common.ExportError("qat: INT8 dev accuracy 61.20 is 2.10 points below the FP32 input (tolerance 0.5)")
sys.modules[__name__].refuse = refuse
cli.HANDLERS["report"] = "__main__:refuse"
sys.exit(cli.main(sys.argv[1:]))
"""


def cases(env: dict) -> list[Case]:
    m, dat = env["models"], env["data"]
    onnx, dy, bad_onnx, bad_dy = m / "onnx", m / "dy", m / "bad_onnx", m / "bad_dy"
    fake_onnx = {"fake/manifest.json": json.dumps({"tinydistill": 1, "format": "onnx", "arch": "bilstm",
                                                   "heads": []})}
    cfg = lambda text: {"c.yaml": text}  # noqa: E731
    over = lambda *sets: ["run", "c.yaml", *[a for s in sets for a in ("--set", s)]]  # noqa: E731
    out = [
        # -- config loading, bounded
        Case("alias bomb in student.options", ["run", "c.yaml"], "c.yaml", cfg(bomb("options"))),
        Case("alias bomb in a string field", ["run", "c.yaml"], "c.yaml", cfg(bomb("name"))),
        Case("recursive alias", ["run", "c.yaml"], "recursive YAML alias", cfg("name: &x [*x]\n")),
        Case("config over 1 MB", ["run", "c.yaml"], "c.yaml", cfg(BASE + "#" + "x" * (1 << 20) + "\n")),
        Case("alias bomb in --set", over("student.options.hidden_size=[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,"
                                         "*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,"
                                         "*c,*c,*c,*c], [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]]"),
             "--set student.options.hidden_size", cfg(BASE)),
        Case("invalid YAML", ["run", "c.yaml"], "c.yaml:", cfg("name: x\ntask: {name: [\n")),
        Case("not UTF-8", ["run", "c.yaml"], "c.yaml", {"c.yaml": b"name: \xff\xfe\n"}),
        Case("missing config file", ["run", "nope.yaml"], "nope.yaml"),
        Case("top level not a mapping", ["run", "c.yaml"], "c.yaml", cfg("- 1\n- 2\n")),
        # -- validation before any work
        Case("negative lr", over("distill.lr=-1"), "distill.lr", cfg(BASE)),
        Case("lr 0", over("distill.lr=0"), "distill.lr", cfg(BASE)),
        Case("max_steps 0", over("distill.max_steps=0"), "distill.max_steps", cfg(BASE)),
        Case("max_steps negative", over("distill.max_steps=-5"), "distill.max_steps", cfg(BASE)),
        Case("warmup_ratio 2", over("distill.warmup_ratio=2"), "distill.warmup_ratio", cfg(BASE)),
        Case("max_grad_norm -1", over("distill.max_grad_norm=-1"), "distill.max_grad_norm", cfg(BASE)),
        Case("eval_every 0", over("distill.eval_every=0"), "distill.eval_every", cfg(BASE)),
        Case("epochs 0", over("distill.epochs=0"), "distill.epochs", cfg(BASE)),
        Case("lr not a number", over("distill.lr=fast"), "distill.lr", cfg(BASE)),
        Case("num_hidden_layers -1", over("teacher.options.num_hidden_layers=-1"),
             "teacher.options.num_hidden_layers", cfg(BASE)),
        Case("hidden_size abc", over("student.options.hidden_size=abc"), "student.options.hidden_size", cfg(BASE)),
        Case("dropout 1.5", over("teacher.options.hidden_dropout_prob=1.5"), "teacher.options.hidden_dropout_prob",
             cfg(BASE)),
        Case("misspelt model option", over("student.options.hiden_size=4"), "did you mean 'hidden_size'",
             cfg(BASE)),
        Case("unknown loss in a qat step", over("compress=[{step: qat, losses: [{type: hard_cee}]}]"),
             "compress[0].losses[0].type", cfg(BASE)),
        Case("qat loss temperature 0", over("compress=[{step: qat, losses: [{type: soft_ce, temperature: 0}]}]"),
             "compress[0].losses[0].temperature", cfg(BASE)),
        Case("qat lr 0", over("compress=[{step: qat, lr: 0}]"), "compress[0].lr", cfg(BASE)),
        Case("unknown distill loss", over("distill.losses=[{type: sof_ce}]"), "distill.losses[0].type", cfg(BASE)),
        Case("loss temperature -1", over("distill.losses.0.temperature=-1"), "distill.losses[0].temperature",
             cfg(BASE)),
        Case("misspelt top-level key", ["run", "c.yaml"], "distil", cfg(BASE + "distil: {}\n")),
        Case("bench runs 0 in config", over("bench={runs: 0}"), "bench.runs", cfg(BASE)),
        Case("export tolerance -1", over("export=[{backend: onnx, tolerance: -1}]"), "export[0].tolerance",
             cfg(BASE)),
        Case("--set without =", ["run", "c.yaml", "--set", "distill.lr"], "--set 'distill.lr'", cfg(BASE)),
        # -- arguments
        Case("run --out is a file", ["run", "c.yaml", "--out", "c.yaml"], "--out c.yaml", cfg(BASE)),
        Case("sweep --jobs 0", ["sweep", "c.yaml", "--jobs", "0"], "--jobs", cfg(BASE)),
        Case("quickstart --out is a file", ["quickstart", "--out", "f.txt"], "--out f.txt", {"f.txt": "x"},
             nothing_under=("quickstart",)),
        Case("bench --runs 0", ["bench", str(onnx), "--runs", "0"], "--runs"),
        Case("bench --batch-size 0", ["bench", str(onnx), "--batch-size", "0"], "--batch-size"),
        Case("bench --seq-len 0", ["bench", str(onnx), "--seq-len", "0"], "--seq-len"),
        Case("bench --throughput-batches 0", ["bench", str(onnx), "--throughput-batches", "8,0"],
             "--throughput-batches"),
        Case("bench --json is a directory", ["bench", str(onnx), "--json", "."], "--json"),
        Case("predict --threads 0", ["predict", str(onnx), "好", "--threads", "0"], "--threads"),
        Case("predict --runtime foo", ["predict", str(onnx), "好", "--runtime", "foo"], "--runtime foo"),
        Case("--runtime paddle on an ONNX directory", ["predict", "fake", "好", "--runtime", "paddle"],
             "--runtime paddle", fake_onnx),
        Case("evaluate --runtime paddle-inference on ONNX", ["evaluate", "fake", "--runtime", "paddle-inference"],
             "--runtime paddle-inference", fake_onnx),
        Case("deprecated --backend names itself", ["predict", "fake", "好", "--backend", "paddle"],
             "--backend paddle", fake_onnx, noise=("warning: --backend is deprecated",)),
        Case("model directory missing", ["predict", "nowhere", "好"], "nowhere"),
        Case("manifest without a tokenizer", ["predict", "fake", "好"], "fake/manifest.json", fake_onnx),
        Case("directory without manifest", ["evaluate", "empty"], "empty", {"empty": None}),
        Case("manifest not JSON", ["bench", "broken"], "broken/manifest.json", {"broken/manifest.json": "{"}),
        Case("report on a missing directory", ["report", "noruns"], "noruns"),
        Case("report --out is a file", ["report", ".", "--out", "f.txt"], "--out f.txt", {"f.txt": "x"}),
        Case("report on damaged records only", ["report", "r"], "r/_store/x.json",
             {"r/_store/x.json": '{"run_id": "x", "metr'}, noise=("warning: skipping damaged",)),
        # -- data
        Case("empty SLU corpus", ["data", "check", "nlpcc2018_slu", "--data-dir", str(dat / "slu_empty")],
             "nlpcc2018_task4"),
        Case("empty ChnSentiCorp files", ["data", "check", "chnsenticorp", "--data-dir", str(dat / "cs_empty")],
             "chnsenticorp"),
        Case("bad SLU row", ["data", "check", "nlpcc2018_slu", "--data-dir", str(dat / "slu_bad")],
             "corpus.train.txt:2"),
        Case("bad ChnSentiCorp label", ["data", "check", "chnsenticorp", "--data-dir", str(dat / "cs_bad")],
             "train.tsv:3"),
        Case("data set not in --data-dir", ["data", "check", "chnsenticorp", "--data-dir", "."], "chnsenticorp"),
        Case("unknown data set", ["data", "check", "imdb"], "imdb"),
        Case("--split-seed on an unsplit set", ["data", "check", "chnsenticorp", "--data-dir", str(dat / "cs"),
                                                "--split-seed", "3"], "--split-seed"),
        # -- model files and runtime faults (these import onnxruntime or paddle)
        Case("evaluate --file empty", ["evaluate", str(onnx), "--file", "e.tsv", "--data-dir", str(dat / "cs")],
             "e.tsv", {"e.tsv": ""}),
        Case("evaluate --file header only", ["evaluate", str(onnx), "--file", "h.tsv", "--data-dir",
                                             str(dat / "cs")], "h.tsv", {"h.tsv": "label\ttext_a\n"}),
        Case("truncated model.onnx (predict)", ["predict", str(bad_onnx), "好"], str(bad_onnx)),
        Case("truncated model.onnx (C API)", ["predict", str(bad_onnx), "好", "--runtime", "onnxruntime-c"],
             str(bad_onnx)),
        Case("truncated model.onnx (bench)", ["bench", str(bad_onnx), "--runs", "2", "--warmup", "0"],
             str(bad_onnx), noise=("[bench] ",)),
        Case("truncated model_state.pdparams", ["predict", str(bad_dy), "好"], str(bad_dy)),
        Case("damaged checkpoint on --resume", ["run", str(env["run_cfg"]), "--data-dir", str(dat / "cs"),
                                                 "--out", str(env["run_out"]), "--resume"],
             f"delete {env['damaged_stage']}", nothing_under=()),
        Case("disk full while writing", ["report", str(env["run_out"]), "--out", "out"], "disk full",
             code=ENOSPC),
        Case("disk full while checkpointing", ["run", "tiny.yaml", "--data-dir", str(dat / "cs"), "--out", "runs"],
             "(stage student): disk full", {"tiny.yaml": TINY_RUN}, code=ENOSPC_STAGE,
             nothing_under=("runs/tiny/_store/*.json", "runs/tiny/*/student/checkpoint", "runs/tiny/*/student/best")),
        Case("export refused (INT8 tolerance)", ["report", "."], "tolerance", code=EXPORT_REFUSAL),
    ]
    return out


def run_case(case: Case, root: Path) -> str | None:
    """Run one case in its own directory; returns what is wrong, or None."""
    where = root / case.name.replace(" ", "_").replace("/", "_")
    where.mkdir(parents=True)
    for rel, content in case.files.items():
        path = where / rel
        if content is None:
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    proc = cli(case.args, where, env=case.env, code=case.code)
    errors = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(case.noise)]
    problems = []
    if proc.returncode == 0:
        problems.append("exit status 0")
    if "Traceback" in proc.stderr:
        problems.append("traceback")
    if len(errors) != 1:
        problems.append(f"{len(errors)} stderr lines")
    elif case.expect not in errors[0] or "error" not in errors[0]:
        problems.append(f"error line does not name {case.expect!r}")
    left = [str(p.relative_to(where)) for p in where.rglob(".*.tmp")]
    left += [p for p in case.nothing_under if list(where.glob(p))]
    if left:
        problems.append(f"left behind: {left}")
    if not problems:
        return None
    return f"{case.name}: {'; '.join(problems)}\n    $ tinydistill {' '.join(case.args)}\n    " + \
        "\n    ".join(proc.stderr.strip().splitlines()[-6:])


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("bad_inputs")
    data = root / "data"
    cs = write_chnsenticorp(data / "cs")
    (data / "cs_empty" / "chnsenticorp").mkdir(parents=True)
    (data / "cs_empty" / "chnsenticorp" / "train.tsv").write_text("label\ttext_a\n", encoding="utf-8")
    (data / "cs_empty" / "chnsenticorp" / "dev.tsv").write_text("qid\tlabel\ttext_a\n", encoding="utf-8")
    write_chnsenticorp(data / "cs_bad")
    bad = data / "cs_bad" / "chnsenticorp" / "train.tsv"
    bad.write_text(bad.read_text(encoding="utf-8").replace("\n1\t", "\n7\t", 1), encoding="utf-8")
    write_slu(data / "slu_empty", "")
    write_slu(data / "slu_bad", "1\t播放花心\tmusic.play\t播放<song>花心</song>\n"
                                "1\t播放花心\tmusic.play\t播放<song>花心\n")
    # model directories (a tiny Bi-LSTM and its ONNX export) and damaged copies of both
    models = root / "models"
    maker = f"""
import shutil, sys
from pathlib import Path
from tinydistill.compress.export import export
from tinydistill.tasks import build_task
from tinydistill.tasks.tokenization import CharTokenizer
from tinydistill.teachers.base import build_model, save_model_dir
out = Path({str(models)!r})
task = build_task("chnsenticorp", data_dir={str(cs)!r}, max_seq_length=16)
tok = CharTokenizer.build(task.texts("train"))
model = build_model("student", "bilstm", task.heads(), vocab_size=tok.vocab_size, embedding_size=8, hidden_size=4,
                    mlp_size=4)
save_model_dir(out / "dy", model, tok, task)
export(out / "dy", "onnx", out / "onnx", check=False, data_dir={str(cs)!r})
for name in ("dy", "onnx"):
    shutil.copytree(out / name, out / f"bad_{{name}}")
for f in (out / "bad_dy" / "model_state.pdparams", out / "bad_onnx" / "model.onnx"):
    f.write_bytes(f.read_bytes()[:200])
"""
    # ... and a finished tiny run whose student checkpoint is then damaged, for --resume
    run_cfg = root / "tiny.yaml"
    run_cfg.write_text(TINY_RUN, encoding="utf-8")
    run_out = root / "runs"
    with ThreadPoolExecutor(2) as pool:
        made = pool.submit(cli, [], root, code=maker)
        ran = pool.submit(cli, ["run", str(run_cfg), "--data-dir", str(cs), "--out", str(run_out)], root)
        for proc in (made.result(), ran.result()):
            assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = next(p for p in (run_out / "tiny").iterdir() if p.name.startswith("bilstm-"))
    ckpt = run_dir / "student" / "checkpoint" / "student.pdparams"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    (run_dir / ".stages" / "student.json").unlink()
    return {"root": root, "data": data, "models": models, "run_cfg": run_cfg, "run_out": run_out,
            "damaged_stage": run_dir / "student"}


def test_bad_inputs_table(env):
    table = cases(env)
    assert len(table) >= 40
    root = env["root"] / "cases"
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda c: run_case(c, root), table))
    failed = [r for r in results if r]
    print(f"\n{len(table)} bad-input cases through the CLI, {len(table) - len(failed)} handled as one line")
    assert not failed, "\n".join(failed)


# -- silent wrong results: the data a run reads ----------------------------------------------------------
def test_data_dir_wins_and_run_ids_follow_the_data(tmp_path):
    from tinydistill.experiments.config import load_config
    from tinydistill.experiments.runner import Runner

    a = write_chnsenticorp(tmp_path / "A", rows=40)
    b = write_chnsenticorp(tmp_path / "B", rows=30)
    same_as_a = write_chnsenticorp(tmp_path / "A2", rows=40)
    (tmp_path / "c.yaml").write_text(BASE.replace("max_seq_length: 16}", f"max_seq_length: 16, data_dir: {a}}}"),
                                     encoding="utf-8")
    cfg = load_config(tmp_path / "c.yaml")
    from_config = Runner(cfg, 1, out_root=tmp_path / "runs")
    from_cli = Runner(cfg, 1, out_root=tmp_path / "runs", data_dir=str(b))
    moved = Runner(cfg, 1, out_root=tmp_path / "runs", data_dir=str(same_as_a))
    assert from_cli.cfg.task.options.data_dir == str(b)  # the command line wins over task.data_dir
    assert from_cli.run_id != from_config.run_id  # other data: another run, not "finished already"
    assert from_cli.teacher_keys() != from_config.teacher_keys()  # ... and another teacher
    assert moved.run_id == from_config.run_id and moved.teacher_keys() == from_config.teacher_keys()
    (b / "chnsenticorp" / "dev.tsv").write_text((a / "chnsenticorp" / "dev.tsv").read_text(encoding="utf-8")
                                                 + "99\t1\t新的一行\n", encoding="utf-8")
    edited = Runner(cfg, 1, out_root=tmp_path / "runs", data_dir=str(b))
    assert edited.run_id != from_cli.run_id  # same path, edited content


# -- degrade, don't die; bookkeeping -------------------------------------------------------------------
def test_report_skips_a_damaged_record_and_counts_it(env, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(env["run_out"] / "tiny" / "_store", runs / "tiny" / "_store")
    good = next((runs / "tiny" / "_store").glob("*.json"))
    (good.parent / "zz-truncated.json").write_text(good.read_text(encoding="utf-8")[:80], encoding="utf-8")
    proc = cli(["report", str(runs)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "zz-truncated.json" in proc.stderr and "Traceback" not in proc.stderr
    assert "1 damaged result record(s) skipped" in (runs / "results.md").read_text(encoding="utf-8")
    record = json.loads(good.read_text(encoding="utf-8"))
    assert record["metrics"]["data.skipped_rows"] == {"value": 0, "unit": "count"}
    assert set(record["data_fingerprint"]) == {"chnsenticorp/train.tsv", "chnsenticorp/dev.tsv"}


def test_atomic_writes_are_readable_by_others_and_clean_up(tmp_path):
    from tinydistill.distill.fsutil import atomic_dir, clean_stale_temporaries, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "store" / "r.json", {"a": 1})
        with atomic_dir(tmp_path / "model") as tmp:
            write_json(tmp / "manifest.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "store" / "r.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model" / "manifest.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755
    (tmp_path / "export" / ".onnx.x1.tmp").mkdir(parents=True)
    (tmp_path / ".metrics.json.x2.tmp").write_text("")
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".metrics.json.x2.tmp", ".onnx.x1.tmp"]
    assert not list(tmp_path.rglob(".*.tmp")) and (tmp_path / "model" / "manifest.json").is_file()


def test_sweep_counts_runs_finished_elsewhere_as_skipped(tmp_path, monkeypatch):
    """A run another worker finished between the sweep's check and its turn returns "skipped": the summary
    must say so instead of counting it as done."""
    import tinydistill.experiments.sweep as sweep
    from tinydistill.experiments.config import load_config

    (tmp_path / "c.yaml").write_text(TINY_RUN + "seeds: [1, 2]\n", encoding="utf-8")
    cfg = load_config(tmp_path / "c.yaml")
    monkeypatch.setattr(sweep, "_map", lambda jobs, n: iter((f"run{i}", "skipped", "") for i, _ in enumerate(jobs)))
    lines: list[str] = []
    result = sweep.run_sweep(cfg, tmp_path / "runs", data_dir=str(write_chnsenticorp(tmp_path / "d")),
                             log=lines.append)
    assert result["skipped"] == ["run0", "run1"] and result["done"] == []
    assert "0 done, 2 skipped, 0 failed" in lines[-1]
