"""Logging for the whole project: one handler on stderr, one level, set once (shared core: stdlib only).

Progress and diagnostics are log records on stderr; results (tables, JSON, paths a script reads) are what
a command prints on stdout, so ``tinydistill ... > out.json`` captures the result and nothing else.

The level, first match wins: ``tinydistill -v`` (DEBUG) / ``-q`` (WARNING) / ``-qq`` (ERROR), else
``$TINYDISTILL_LOG_LEVEL`` (a level name or number), else INFO.  Modules log through
``get_logger(__name__)``; the project's top-level packages (``PACKAGES``) share the handler, and other
libraries' loggers are left alone (``-v`` does not turn on paddle's debug output).  Code that takes a
``log=`` callable gets ``progress`` as its default.

The stdlib ``logging`` module is imported on the first record, not before: a process that logs nothing (the
lean ``onnxruntime-c`` predictor, ``tinydistill predict``) never loads it, ~0.8 MiB of RSS with the modules it
pulls in (threading, traceback, string).  ``get_logger`` returns a stand-in that imports it, and sets the
project's handler up, on first use; ``configured`` sets the level up at once where ``logging`` is already
imported and otherwise leaves it to that first use (tests/test_cli.py checks both paths).
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

ENV = "TINYDISTILL_LOG_LEVEL"
#: the loggers configured here: the project's packages and the name ``progress`` logs under
PACKAGES = ("tinydistill", "experiments", "compress", "distill", "tasks", "teachers", "students")
#: the stdlib's level numbers (logging.DEBUG ...), here so that reading a level does not import ``logging``
DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
NAMES = {"CRITICAL": CRITICAL, "ERROR": ERROR, "WARNING": WARNING, "WARN": WARNING, "INFO": INFO, "DEBUG": DEBUG}
_VERBOSITY = {1: DEBUG, -1: WARNING, -2: ERROR}
_HANDLER = None  # the one handler on the project's loggers (``_handler``), made when logging is first used


def _handler():
    """The project's stderr handler, made (with its two classes) the first time logging is used."""
    global _HANDLER
    if _HANDLER is not None:
        return _HANDLER
    import logging

    class _Stderr(logging.StreamHandler):
        """A handler on whatever ``sys.stderr`` is when a record is written (pytest's capture, a redirect), not
        the stream that was current when logging was set up."""

        @property
        def stream(self):  # type: ignore[override]
            return sys.stderr

        @stream.setter
        def stream(self, value) -> None:  # StreamHandler.__init__ assigns one; always follow sys.stderr instead
            pass

    class _Format(logging.Formatter):
        """Info lines as they are (progress reads like the prints it replaced); warnings and errors say so
        unless the message already does; DEBUG adds the logger's name, which is what one wants to see there."""

        def format(self, record: logging.LogRecord) -> str:
            message = record.getMessage()
            if record.levelno >= logging.WARNING and not message.lower().startswith(record.levelname.lower()):
                message = f"{record.levelname.lower()}: {message}"
            if logging.getLogger(PACKAGES[0]).getEffectiveLevel() <= logging.DEBUG:
                message = f"{record.name}: {message}"
            if record.exc_info:
                message += "\n" + self.formatException(record.exc_info)
            return message

    handler = _Stderr()
    handler.setFormatter(_Format())
    _HANDLER = handler
    return handler


def level_name(level: int) -> str:
    """``level`` as ``parse_level`` reads it back: its name for the standard levels, else the number."""
    return next((name for name, value in NAMES.items() if value == level and name != "WARN"), str(level))


def parse_level(text: str, where: str = ENV) -> int:
    """A level name (any case) or number; a ``ValueError`` naming ``where`` otherwise."""
    value = str(text).strip()
    if value.upper() in NAMES:
        return NAMES[value.upper()]
    if value.isdigit():
        return int(value)
    raise ValueError(f"{where}={text!r}: expected one of {', '.join(n for n in NAMES if n != 'WARN')} "
                     "(or a number)")


def resolve_level(verbosity: int = 0, environ=None) -> int:
    """``verbosity``: +1 for ``-v``, -1 per ``-q``; 0 leaves it to ``$TINYDISTILL_LOG_LEVEL`` (default INFO)."""
    if verbosity:
        return _VERBOSITY[max(-2, min(1, verbosity))]
    env = (os.environ if environ is None else environ).get(ENV, "").strip()
    return parse_level(env) if env else INFO


def setup(level: int | None = None) -> int:
    """Route the project's loggers to stderr at ``level`` (default: from the environment); returns it."""
    import logging

    level = resolve_level() if level is None else level
    handler = _handler()
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if handler not in logger.handlers:
            logger.addHandler(handler)
        logger.propagate = False  # one line per record, also where an application configured the root logger
    return level


def _ready():
    """``logging``, with the project's handler set up where nothing else set it up: when a ``tinydistill``
    command (``configured``) or process (``$TINYDISTILL_LOG_LEVEL`` is exported to sweep workers, which
    paddleslim's import gives a root handler at WARNING that would drop every progress line) asked for it, or
    when no logging is configured at all (a library caller: the stdlib's fallback would drop info); an
    application's (or pytest's) own root logging is left to it otherwise."""
    import logging

    if _handler() not in logging.getLogger(PACKAGES[0]).handlers and (
            os.environ.get(ENV) or not logging.getLogger().handlers):
        setup()
    return logging


class _Logger:
    """What ``get_logger`` returns: a ``logging.Logger`` once used (``log.warning(...)`` and every other
    attribute go to the stdlib logger of that name, after ``_ready``)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __getattr__(self, attr: str):
        return getattr(_ready().getLogger(self.name), attr)

    def __repr__(self) -> str:
        return f"<logger {self.name} (logging not imported yet)>" if "logging" not in sys.modules else \
            repr(sys.modules["logging"].getLogger(self.name))


def get_logger(name: str) -> _Logger:
    """The project's ``logging.getLogger(name)``, without importing ``logging`` until a record is written."""
    return _Logger(name)


@contextlib.contextmanager
def configured(verbosity: int = 0) -> Iterator[int]:
    """``setup`` for one command, exported as ``$TINYDISTILL_LOG_LEVEL`` to the processes it starts (sweep
    workers, bench workers), and both undone afterwards (a test that calls ``main`` twice starts clean).
    Where ``logging`` is not imported yet, the first record sets the level up (from the exported variable)."""
    level = resolve_level(verbosity)
    imported = "logging" in sys.modules
    before = [(lg.level, lg.propagate, _handler() in lg.handlers)
              for lg in map(sys.modules["logging"].getLogger, PACKAGES)] if imported else None
    saved_env = os.environ.get(ENV)
    os.environ[ENV] = level_name(level)
    if imported:
        setup(level)
    try:
        yield level
    finally:
        if "logging" in sys.modules:  # imported before or during the command; in the second case the
            import logging            # loggers started at their defaults (NOTSET, propagating, no handler)

            handler = _handler()
            for lg, (old_level, old_propagate, had_handler) in zip(
                    map(logging.getLogger, PACKAGES), before or [(logging.NOTSET, True, False)] * len(PACKAGES)):
                lg.setLevel(old_level)
                lg.propagate = old_propagate
                if not had_handler:
                    lg.removeHandler(handler)
        if saved_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = saved_env


def progress(message: str) -> None:
    """Log one progress line at INFO (the default ``log=`` of runs, sweeps, searches and benchmarks), setting
    the project's handler up first where ``_ready`` says so."""
    _ready().getLogger(PACKAGES[0]).info(message)
