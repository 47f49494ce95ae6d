"""Logging for the whole project: one handler on stderr, one level, set once (shared core: stdlib only).

Progress and diagnostics are log records on stderr; results (tables, JSON, paths a script reads) are what
a command prints on stdout, so ``tinydistill ... > out.json`` captures the result and nothing else.

The level, first match wins: ``tinydistill -v`` (DEBUG) / ``-q`` (WARNING) / ``-qq`` (ERROR), else
``$TINYDISTILL_LOG_LEVEL`` (a level name or number), else INFO.  Modules log with
``logging.getLogger(__name__)``; the project's top-level packages (``PACKAGES``) share the handler, and
other libraries' loggers are left alone (``-v`` does not turn on paddle's debug output).  Code that takes a
``log=`` callable gets ``progress`` as its default.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

ENV = "TINYDISTILL_LOG_LEVEL"
#: the loggers configured here: the project's packages and the name ``progress`` logs under
PACKAGES = ("tinydistill", "experiments", "compress", "distill", "tasks", "teachers", "students")
NAMES = {"CRITICAL": logging.CRITICAL, "ERROR": logging.ERROR, "WARNING": logging.WARNING, "WARN": logging.WARNING,
         "INFO": logging.INFO, "DEBUG": logging.DEBUG}
_VERBOSITY = {1: logging.DEBUG, -1: logging.WARNING, -2: logging.ERROR}


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
    """Info lines as they are (progress reads like the prints it replaced); warnings and errors say so unless
    the message already does; DEBUG adds the logger's name, which is what one wants to see there."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING and not message.lower().startswith(record.levelname.lower()):
            message = f"{record.levelname.lower()}: {message}"
        if logging.getLogger(PACKAGES[0]).getEffectiveLevel() <= logging.DEBUG:
            message = f"{record.name}: {message}"
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return message


_HANDLER = _Stderr()
_HANDLER.setFormatter(_Format())


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
    return parse_level(env) if env else logging.INFO


def setup(level: int | None = None) -> int:
    """Route the project's loggers to stderr at ``level`` (default: from the environment); returns it."""
    level = resolve_level() if level is None else level
    for name in PACKAGES:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if _HANDLER not in logger.handlers:
            logger.addHandler(_HANDLER)
        logger.propagate = False  # one line per record, also where an application configured the root logger
    return level


@contextlib.contextmanager
def configured(verbosity: int = 0) -> Iterator[int]:
    """``setup`` for one command, exported as ``$TINYDISTILL_LOG_LEVEL`` to the processes it starts (sweep
    workers, bench workers), and both undone afterwards (a test that calls ``main`` twice starts clean)."""
    level = resolve_level(verbosity)
    loggers = [logging.getLogger(name) for name in PACKAGES]
    before = [(lg.level, lg.propagate, _HANDLER in lg.handlers) for lg in loggers]
    saved_env = os.environ.get(ENV)
    os.environ[ENV] = logging.getLevelName(level)
    setup(level)
    try:
        yield level
    finally:
        for lg, (old_level, old_propagate, had_handler) in zip(loggers, before):
            lg.setLevel(old_level)
            lg.propagate = old_propagate
            if not had_handler:
                lg.removeHandler(_HANDLER)
        if saved_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = saved_env


def progress(message: str) -> None:
    """Log one progress line at INFO (the default ``log=`` of runs, sweeps, searches and benchmarks).

    Where nothing set this module up, it sets itself up first when a ``tinydistill`` process started this one
    (``$TINYDISTILL_LOG_LEVEL`` is exported to sweep workers, which paddleslim's import gives a root handler
    at WARNING that would drop every progress line) or when no logging is configured at all (a library
    caller: the stdlib's fallback would drop info); an application's (or pytest's) own root logging is left
    to it otherwise."""
    logger = logging.getLogger(PACKAGES[0])
    if _HANDLER not in logger.handlers and (os.environ.get(ENV) or not logging.getLogger().handlers):
        setup()
    logger.info(message)
