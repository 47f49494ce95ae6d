"""Shared fixtures.  Real data lives outside the repo: ``../shared/data`` (or ``$TINYDISTILL_DATA``).

Tests that read the real data take the ``data_dir`` fixture; without the data they are skipped on a
developer's machine, but under CI (``CI=true``) a missing data directory fails them, and any other skip
fails the run (``pytest_sessionfinish``): a CI run that skipped its tests would otherwise pass on nothing.
Tests that need no data must not take the fixture.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what the data tests read (see the data directory layout in the README)
REQUIRED = ("chnsenticorp/train.tsv", "chnsenticorp/dev.tsv", "nlpcc2018_task4/corpus.train.txt",
            "nlpcc2018_task4/intent_label.txt", "nlpcc2018_task4/slot_label.txt", "vocab/ernie-3.0/vocab.txt")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _shared_data() -> Path:
    env = os.environ.get("TINYDISTILL_DATA")
    return Path(env) if env else (ROOT.parent / "shared" / "data")


def missing_data(path: Path) -> list[str]:
    return [f for f in REQUIRED if not (path / f).is_file()]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = _shared_data()
    missing = missing_data(path)
    if missing:
        message = f"real data not found at {path} (missing {', '.join(missing)}; set TINYDISTILL_DATA)"
        if in_ci():
            pytest.fail(f"{message}: under CI a missing data directory fails the run", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def ernie_vocab(data_dir) -> Path:
    return data_dir / "vocab" / "ernie-3.0" / "vocab.txt"


#: skips CI accepts: opt-in tests and the one that can only pass offline
CI_ALLOWED_SKIPS = ("TINYDISTILL_MULTINODE_TEST", "a network is available here")


def pytest_sessionfinish(session, exitstatus):
    """Under CI a skipped test fails the run (unless its reason is in ``CI_ALLOWED_SKIPS``): a missing
    package or data set must not turn into a green run that tested nothing."""
    if not in_ci() or exitstatus != 0:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    unexpected = [r for r in skipped if not any(a in str(r.longrepr) for a in CI_ALLOWED_SKIPS)]
    if unexpected:
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(f"CI: {len(unexpected)} test(s) skipped, which CI does not accept:", red=True)
            for r in unexpected:
                reporter.write_line(f"  {r.nodeid}: {r.longrepr[-1] if isinstance(r.longrepr, tuple) else r.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
