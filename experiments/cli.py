"""The ``tinydistill`` command line.

Start-up is kept light: this module imports only the standard library; each sub-command imports the
module that implements it when it runs (``--help``, ``list`` and ``data`` never import paddle).

Conventions every sub-command follows: results (tables, JSON, paths a script reads) go to stdout, progress
and diagnostics to stderr through ``logging`` (``distill/logs.py``: ``-v``/``-q``, ``$TINYDISTILL_LOG_LEVEL``);
the exit status is 0 on success, 1 when a run failed and 2 for a usage or input error (``EXIT_*``).
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import warnings
from pathlib import Path

from tinydistill.distill.logs import get_logger  # stdlib only: logging itself is imported on first use

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
log = get_logger("tinydistill.cli")  # not __name__: that is "__main__" under python -m tinydistill.experiments.cli

# sub-command -> "module:function(args) -> int | None"
HANDLERS = {
    "list": "tinydistill.experiments.cli:cmd_list",
    "quickstart": "tinydistill.experiments.quickstart:cli_quickstart",
    "run": "tinydistill.experiments.runner:cli_run",
    "sweep": "tinydistill.experiments.sweep:cli_sweep",
    "search": "tinydistill.experiments.search:cli_search",
    "report": "tinydistill.experiments.report:cli_report",
    "evaluate": "tinydistill.experiments.protocol:cli_evaluate",
    "predict": "tinydistill.compress.predictors:cli_predict",
    "bench": "tinydistill.compress.bench:cli_bench",
    "serve": "tinydistill.compress.serve:cli_serve",
    "data": "tinydistill.tasks.datasets:cli_data",
}


class UsageError(ValueError):
    """A command-line argument out of range or not fitting its target (one line, names the argument)."""


class _OldName(argparse.Action):
    """A deprecated option name (``--backend``): stores into the new option's ``dest`` and remembers which name
    was typed, so errors name it and ``main`` logs one deprecation warning once logging is set up."""

    def __init__(self, option_strings, dest, new: str = "", **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_flag", option_string)
        namespace.deprecated = [*getattr(namespace, "deprecated", []), (option_string, self.new)]


def _add_runtime(p: argparse.ArgumentParser, default: str) -> None:
    """``--runtime`` (a ``tinydistill list runtimes`` name) and its deprecated old name ``--backend``."""
    p.add_argument("--runtime", metavar="RUNTIME",
                   help=f"what runs the model: paddle | paddle-inference | onnxruntime | onnxruntime-c "
                        f"(tinydistill list runtimes; default: {default})")
    p.add_argument("--backend", dest="runtime", metavar="RUNTIME", action=_OldName, new="--runtime",
                   help="deprecated name of --runtime (removed in the next release)")
    p.set_defaults(runtime_flag="--runtime")


def _columns() -> int:
    """The terminal width as ``shutil.get_terminal_size`` finds it ($COLUMNS, else the terminal, else 80)."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or 80


class _Formatter(argparse.HelpFormatter):
    """argparse's help formatter with the width looked up here: argparse's own lookup imports ``shutil`` (and with it
    ``bz2``, ``lzma``, ``zlib``) for every parser it builds, which the lean ``predict`` process would carry."""

    def __init__(self, prog, indent_increment=2, max_help_position=24, width=None):
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage block), like every other input error."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)  # sub-commands' parsers too (add_parser builds a _Parser)
        super().__init__(*args, **kwargs)

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


class _Version(argparse.Action):
    """``--version``, looked up only when asked: ``importlib.metadata`` (with the ``email``, ``csv``, ``zipfile``
    and ``socket`` modules it imports) costs every other command ~3 MiB RSS, ``predict`` in a lean process too."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"tinydistill {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tinydistill",
        description="Knowledge distillation and compression for Chinese NLU (ERNIE 3.0 Tiny, ERNIE-Gram, Bi-LSTM).",
        epilog="Results go to stdout, progress to stderr ($TINYDISTILL_LOG_LEVEL, -v, -q). Exit status: 0 success, "
               "1 a run failed, 2 a usage or input error.",
    )
    parser.add_argument("--version", action=_Version, help="show the installed version and exit")
    parser.add_argument("-v", "--verbose", dest="log_verbose", action="count", default=0,
                        help="debug logging on stderr (before the command: tinydistill -v run ...)")
    parser.add_argument("-q", "--quiet", dest="log_quiet", action="count", default=0,
                        help="warnings and errors only on stderr; -qq: errors only (results still go to stdout)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from tinydistill.distill.registry import KIND_ALIASES, KINDS  # light: the registry module imports only the stdlib

    p = sub.add_parser("list", help="list what can be named: " + ", ".join(KINDS))
    p.add_argument("kind", nargs="?", metavar="KIND",
                   help=f"one of: {' '.join(KINDS)} (default: all; "
                        + "; ".join(f"{old}: {' and '.join(new)}" for old, new in KIND_ALIASES.items()) + ")")
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
    _add_runtime(p, "the model directory's own")
    p.add_argument("--threads", type=_at_least(1), default=1)
    p.add_argument("--batch-size", type=_at_least(1), default=32)
    _add_data_dir(p)

    p = sub.add_parser("predict", help="run a model directory on texts and print decoded JSON")
    p.add_argument("model_dir", metavar="MODEL_DIR")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    _add_runtime(p, "the directory's own")
    p.add_argument("--threads", type=_at_least(1), default=1)

    p = sub.add_parser("bench", help="size, latency (p50/p90), peak RSS and throughput of model directories")
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR")
    _add_runtime(p, "each directory's own; one runtime for every directory")
    p.add_argument("--batch-size", type=_at_least(1), default=1)
    # 3 = [CLS] + one token + [SEP]: the shortest encoded text
    p.add_argument("--seq-len", type=_at_least(3), default=16)
    p.add_argument("--threads", type=_at_least(1), default=1)
    p.add_argument("--runs", type=_at_least(1), default=200, help="timed runs after warm-up (default 200)")
    p.add_argument("--warmup", type=_at_least(0), default=20, help="untimed runs first (default 20)")
    p.add_argument("--throughput-batches", type=_batch_list, default="8,32", metavar="B,B",
                   help="batch sizes of the end-to-end throughput columns (default 8,32)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")

    from tinydistill.compress.serve_options import add_arguments as serve_arguments  # no http.server import here

    p = sub.add_parser("serve", help="HTTP JSON service on a model directory (POST /predict)")
    serve_arguments(p)
    _add_runtime(p, "onnxruntime-c for ONNX exports, else the directory's own")

    p = sub.add_parser("data", help="list, fetch or check the data sets")
    p.add_argument("action", choices=("list", "fetch", "check"))
    p.add_argument("name", nargs="?", help="data set or task name (default: all)")
    _add_data_dir(p)
    p.add_argument("--split-seed", type=int, default=None, help="seed of the train/dev split (SLU)")
    return parser


def cmd_list(args: argparse.Namespace) -> int:
    """Every registry (or one): a ``KIND:`` line, then one ``  NAME  SUMMARY`` line per entry."""
    from tinydistill.distill.registry import KINDS, get_registry, kinds_of

    for kind in kinds_of(args.kind) if args.kind else list(KINDS):
        registry = get_registry(kind)
        print(f"{kind}:")
        for entry in registry.entries():
            line = f"  {entry.name:<32} {entry.summary}"
            aliases = registry.aliases(entry.name)
            if aliases:
                line += f" (also: {', '.join(aliases)})"
            if args.verbose and "describe" in entry.meta:
                line += f"  [{entry.meta['describe']()}]"
            elif args.verbose and hasattr(entry.obj, "describe"):
                line += f"  [{entry.obj.describe(entry.name)}]"
            elif args.verbose and "formats" in entry.meta:
                line += f"  [runs {', '.join(entry.meta['formats'])}]"
            print(line.rstrip())
    return EXIT_OK


def check_args(args: argparse.Namespace) -> None:
    """What argparse cannot see, checked before any work (and before paddle is imported): ``--out`` must
    be a directory, model directories must be readable and ``--runtime`` known and able to run them."""
    for name in ("out", "json"):
        value = getattr(args, name, None)
        if value and Path(value).exists() and (name == "out") != Path(value).is_dir():
            raise UsageError(f"--{name} {value}: is a {'file' if name == 'out' else 'directory'}; "
                             f"expected {'a directory' if name == 'out' else 'a file path'}")
    dirs = getattr(args, "model_dirs", None) or ([args.model_dir] if getattr(args, "model_dir", None) else [])
    if not dirs:
        return
    from tinydistill.compress.common import read_manifest, runtime_of

    runtime, flag = getattr(args, "runtime", None), getattr(args, "runtime_flag", "--runtime")
    for d in dirs:
        manifest = read_manifest(d)
        try:
            runtime_of(manifest, runtime)
        except ValueError as exc:
            raise UsageError(f"{flag} {runtime}: {exc}" if runtime else f"{d}: {exc}") from None


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


def _known_errors(specs: tuple[str, ...]) -> tuple[type[BaseException], ...]:
    """The exception classes named ``module:Class`` whose module is imported (one that is not cannot have
    raised; importing it here would cost the light commands their start-up time)."""
    errors = []
    for spec in specs:
        module, attr = spec.split(":")
        mod = sys.modules.get(module)
        if mod is not None and hasattr(mod, attr):
            errors.append(getattr(mod, attr))
    return tuple(errors)


#: the user's input: exit 2 (a usage or input error), one line, no traceback; also FileNotFoundError and
#: UsageError (named in ``exit_status``: this module is ``__main__`` under ``python -m tinydistill.experiments.cli``)
INPUT_ERRORS = ("tinydistill.distill.registry:RegistryError", "tinydistill.distill.schema:ConfigError", "tinydistill.tasks.base:DataError",
                "tinydistill.distill.modeldir:ModelLoadError")
#: a run that started and failed: exit 1, one line, no traceback
RUN_ERRORS = ("tinydistill.tasks.datasets:DownloadError", "tinydistill.compress.common:ExportError", "tinydistill.compress.bench:BenchError",
              "tinydistill.experiments.stage_tools:CheckpointError")


def exit_status(exc: BaseException) -> int | None:
    """``EXIT_USAGE`` or ``EXIT_FAILED`` for an error that is reported as one line; ``None``: a bug (traceback)."""
    if _os_fault(exc):
        return EXIT_FAILED
    if isinstance(exc, (FileNotFoundError, UsageError) + _known_errors(INPUT_ERRORS)):
        return EXIT_USAGE
    if isinstance(exc, _known_errors(RUN_ERRORS)):
        return EXIT_FAILED
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a bad argument exits with EXIT_USAGE (_Parser.error)
    module, func = HANDLERS[args.command].split(":")
    # paddle's import-time notice about C++ extension builds, which nothing here does (stderr stays for errors)
    warnings.filterwarnings("ignore", message="No ccache found")
    from tinydistill.distill.logs import ENV, configured, resolve_level

    try:
        resolve_level(args.log_verbose - args.log_quiet)
    except ValueError as exc:
        print(f"tinydistill: error: {exc}; or unset {ENV}", file=sys.stderr)
        return EXIT_USAGE
    with configured(args.log_verbose - args.log_quiet):
        for old, new in getattr(args, "deprecated", []):
            log.warning("%s is deprecated; use %s (the old name goes in the next release)", old, new)
        try:
            check_args(args)
            handler = getattr(importlib.import_module(module), func)
            return int(handler(args) or EXIT_OK)
        except KeyboardInterrupt:
            print("interrupted; finished work is kept (re-run with --resume where offered)", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as exc:  # noqa: BLE001 - turn user errors and failed runs into one clear line
            status = exit_status(exc)
            if os.environ.get("TINYDISTILL_DEBUG") or status is None:
                raise
            message = " | ".join(line.strip() for line in (_os_fault(exc) or str(exc)).splitlines() if line.strip())
            # printed, not logged: the one error line shows at every log level
            print(f"tinydistill {args.command}: error: {message}", file=sys.stderr)
            return status


if __name__ == "__main__":
    sys.exit(main())
