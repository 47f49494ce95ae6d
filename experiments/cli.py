"""The ``tinydistill`` command line.

Start-up is kept light: this module imports only the standard library; each sub-command imports the
module that implements it when it runs (``--help``, ``list`` and ``data`` never import paddle).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import warnings
from pathlib import Path

# sub-command -> "module:function(args) -> int | None"
HANDLERS = {
    "list": "experiments.cli:cmd_list",
    "quickstart": "experiments.quickstart:cli_quickstart",
    "run": "experiments.runner:cli_run",
    "sweep": "experiments.sweep:cli_sweep",
    "search": "experiments.search:cli_search",
    "report": "experiments.report:cli_report",
    "evaluate": "experiments.protocol:cli_evaluate",
    "predict": "compress.predictors:cli_predict",
    "bench": "compress.bench:cli_bench",
    "serve": "compress.serve:cli_serve",
    "data": "tasks.datasets:cli_data",
}


class UsageError(ValueError):
    """A command-line argument out of range or not fitting its target (one line, names the argument)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage block), like every other input error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _batch_list(text: str) -> str:
    parts = [b.strip() for b in str(text).split(",") if b.strip()]
    if not parts or not all(b.isdigit() and int(b) >= 1 for b in parts):
        raise argparse.ArgumentTypeError(f"expected batch sizes >= 1 separated by commas, got {text!r}")
    return text


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR",
                   help="directory with the data sets' files (default: $TINYDISTILL_DATA, else the download cache)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tinydistill")
    except PackageNotFoundError:  # run from a checkout without installing
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tinydistill",
        description="Knowledge distillation and compression for Chinese NLU (ERNIE 3.0 Tiny, ERNIE-Gram, Bi-LSTM).",
    )
    parser.add_argument("--version", action="version", version=f"tinydistill {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list registered teachers, students, tasks, losses, steps, backends")
    p.add_argument("kind", nargs="?", help="one of: tasks tokenizers teachers students losses steps backends")
    p.add_argument("-v", "--verbose", action="store_true", help="more detail (parameter counts for models)")

    p = sub.add_parser("quickstart", help="whole pipeline offline on small generated in-car SLU data")
    p.add_argument("--out", default="quickstart", metavar="DIR", help="output directory (default: ./quickstart)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted quickstart in --out")

    p = sub.add_parser("run", help="run the stages an experiment config names")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--test-file", metavar="PATH",
                   help="a labelled hold-out file in the task's format (sets task.test): final models are "
                        "evaluated on it next to dev")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set teacher.init=scratch (repeatable)")
    _add_data_dir(p)
    p.add_argument("--out", default="runs", metavar="DIR", help="runs directory (default: ./runs)")
    p.add_argument("--resume", action="store_true", help="resume the latest unfinished run of this config")

    p = sub.add_parser("sweep", help="run the grid a config declares (teachers x students x recipes x seeds)")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--test-file", metavar="PATH",
                   help="a labelled hold-out file in the task's format (sets task.test): final models are "
                        "evaluated on it next to dev")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--jobs", type=_at_least(1), default=1, metavar="N", help="parallel worker processes")
    _add_data_dir(p)
    p.add_argument("--out", default="runs", metavar="DIR")
    p.add_argument("--list-cells", action="store_true",
                   help="print the grid's cells, one per line (index, run id, labels, done|todo), and exit")
    p.add_argument("--cell", action="append", metavar="K", help="run only cell K (0-based; repeatable)")
    p.add_argument("--cells", action="append", metavar="K-M",
                   help="run only cells K..M (inclusive; also K,L,M-N): one worker of a sweep over machines")

    p = sub.add_parser("search", help="search a config's space of students, widths, vocabularies and quantisations "
                                      "for the best model within a latency / size budget")
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("--budget", action="append", default=[], metavar="NAME=VALUE",
                   help="latency_ms, latency_p90_ms, model_latency_ms, size_mb or params, e.g. latency_ms=1.0 "
                        "(repeatable; wins over the config's search.budget)")
    p.add_argument("--probe-only", action="store_true",
                   help="only measure the untrained candidates and report which the budget prunes")
    p.add_argument("--test-file", metavar="PATH", help="a labelled hold-out file in the task's format (sets task.test)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--jobs", type=_at_least(1), default=1, metavar="N", help="parallel worker processes")
    _add_data_dir(p)
    p.add_argument("--out", default="runs", metavar="DIR")

    p = sub.add_parser("report", help="tables (md/csv/latex) and plots from a runs directory")
    p.add_argument("runs_dir", metavar="RUNS_DIR")
    p.add_argument("--format", choices=("md", "csv", "latex"), default="md")
    p.add_argument("--plots", action="store_true", help="also write PNG plots")
    p.add_argument("--out", metavar="DIR", help="where to write (default: RUNS_DIR)")

    p = sub.add_parser("evaluate", help="metrics of a model directory on a task's dev set or a file")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("--task", help="task name (default: the model's manifest)")
    p.add_argument("--file", metavar="PATH", help="evaluate this file (task format) instead of the dev split")
    p.add_argument("--test-file", metavar="PATH",
                   help="evaluate dev and this labelled hold-out file (task format); prints both and the gap")
    p.add_argument("--dedup", action="store_true",
                   help="also evaluate the rows whose text does not occur in the training split")
    p.add_argument("--backend", help="runtime backend (default: the model directory's own)")
    p.add_argument("--threads", type=_at_least(1), default=1)
    p.add_argument("--batch-size", type=_at_least(1), default=32)
    _add_data_dir(p)

    p = sub.add_parser("predict", help="run a model directory on texts and print decoded JSON")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    p.add_argument("--backend", help="paddle | paddle-inference | onnxruntime | onnxruntime-c (default: the directory's own)")
    p.add_argument("--threads", type=_at_least(1), default=1)

    p = sub.add_parser("bench", help="size, latency (p50/p90), peak RSS and throughput of model directories")
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR")
    p.add_argument("--backend", help="runtime backend for every directory (default: each directory's own)")
    p.add_argument("--batch-size", type=_at_least(1), default=1)
    # 3 = [CLS] + one token + [SEP]: the shortest encoded text
    p.add_argument("--seq-len", type=_at_least(3), default=16)
    p.add_argument("--threads", type=_at_least(1), default=1)
    p.add_argument("--runs", type=_at_least(1), default=200, help="timed runs after warm-up (default 200)")
    p.add_argument("--warmup", type=_at_least(0), default=20, help="untimed runs first (default 20)")
    p.add_argument("--throughput-batches", type=_batch_list, default="8,32", metavar="B,B",
                   help="batch sizes of the end-to-end throughput columns (default 8,32)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")

    from compress.serve_options import add_arguments as serve_arguments  # no http.server import here

    serve_arguments(sub.add_parser("serve", help="HTTP JSON service on a model directory (POST /predict)"))

    p = sub.add_parser("data", help="list, fetch or check the data sets")
    p.add_argument("action", choices=("list", "fetch", "check"))
    p.add_argument("name", nargs="?", help="data set or task name (default: all)")
    _add_data_dir(p)
    p.add_argument("--split-seed", type=int, default=None, help="seed of the train/dev split (SLU)")
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    from distill.registry import KINDS, get_registry

    kinds = [args.kind] if args.kind else list(KINDS)
    for kind in kinds:
        registry = get_registry(kind)
        print(f"{kind}:")
        for entry in registry.entries():
            line = f"  {entry.name:<32} {entry.summary}"
            if args.verbose and "describe" in entry.meta:
                line += f"  [{entry.meta['describe']()}]"
            elif args.verbose and hasattr(entry.obj, "describe"):
                line += f"  [{entry.obj.describe(entry.name)}]"
            print(line.rstrip())
    return 0


def check_args(args: argparse.Namespace) -> None:
    """What argparse cannot see, checked before any work (and before paddle is imported): ``--out`` must
    be a directory, model directories must be readable and ``--backend`` known and able to run them."""
    for name in ("out", "json"):
        value = getattr(args, name, None)
        if value and Path(value).exists() and (name == "out") != Path(value).is_dir():
            raise UsageError(f"--{name} {value}: is a {'file' if name == 'out' else 'directory'}; "
                             f"expected {'a directory' if name == 'out' else 'a file path'}")
    dirs = getattr(args, "model_dirs", None) or ([args.model_dir] if getattr(args, "model_dir", None) else [])
    if not dirs:
        return
    from compress.common import read_manifest, runtime_of

    for d in dirs:
        manifest = read_manifest(d)
        backend = getattr(args, "backend", None)
        try:
            runtime_of(manifest, backend)
        except ValueError as exc:
            raise UsageError(f"--backend {backend}: {exc}" if backend else f"{d}: {exc}") from None


#: errno values of environment faults that are reported as one line (the file and the remedy)
_OS_FAULTS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
              errno.EPERM: "not permitted", errno.EROFS: "read-only file system", errno.ENOTDIR: "not a directory",
              errno.EISDIR: "is a directory"}


def _os_fault(exc: BaseException) -> str | None:
    if not isinstance(exc, OSError) or exc.errno not in _OS_FAULTS:
        return None
    where = exc.filename or "a file"
    remedy = ("free some space and run the command again (with --resume for run and sweep); "
              "nothing half-written was kept") if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "check the path"
    return f"{where}: {_OS_FAULTS[exc.errno]} ({exc.strerror}); {remedy}"


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's input, shown as one line without a traceback."""
    from distill.registry import RegistryError
    from distill.schema import ConfigError
    from tasks.base import DataError

    errors: list[type[BaseException]] = [RegistryError, ConfigError, DataError, FileNotFoundError, UsageError]
    for spec in ("distill.modeldir:ModelLoadError", "tasks.datasets:DownloadError", "compress.common:ExportError",
                 "compress.bench:BenchError", "experiments.runner:CheckpointError"):
        module, attr = spec.split(":")
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, attr):
            errors.append(getattr(mod, attr))
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module, func = HANDLERS[args.command].split(":")
    # paddle's import-time notice about C++ extension builds, which nothing here does (stderr stays for errors)
    warnings.filterwarnings("ignore", message="No ccache found")
    try:
        check_args(args)
        handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished work is kept (re-run with --resume where offered)", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - turn user errors into one clear line
        fault = _os_fault(exc)
        if os.environ.get("TINYDISTILL_DEBUG") or not (fault or isinstance(exc, _expected_errors())):
            raise
        message = " | ".join(line.strip() for line in (fault or str(exc)).splitlines() if line.strip())
        print(f"tinydistill {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
