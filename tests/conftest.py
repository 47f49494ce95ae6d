"""Shared fixtures.  Real data lives outside the repo: ``../shared/data`` (or ``$TINYDISTILL_DATA``)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("TINYDISTILL_DATA")
    return Path(env) if env else (ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = _shared_data()
    if not (path / "chnsenticorp").is_dir():
        pytest.skip(f"real data not found at {path} (set TINYDISTILL_DATA)")
    return path


@pytest.fixture(scope="session")
def ernie_vocab(data_dir) -> Path:
    return data_dir / "vocab" / "ernie-3.0" / "vocab.txt"
