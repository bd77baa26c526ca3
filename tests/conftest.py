"""Shared fixtures: the embedded samples, and the full data when it is there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medmeta.paths import ENV_VAR, sample_data_dir

REPO = Path(__file__).resolve().parents[1]


def _full_data_dir() -> Path | None:
    candidates = [os.environ.get(ENV_VAR), REPO.parent / "shared" / "data"]
    for c in candidates:
        if c and (Path(c) / "medmnist").is_dir():
            return Path(c)
    return None


FULL_DATA = _full_data_dir()


@pytest.fixture(scope="session")
def samples() -> Path:
    return sample_data_dir()


@pytest.fixture(scope="session")
def full_data() -> Path:
    """The full data (``MEDMETA_DATA``, else ``../shared/data``); the test is skipped without it."""
    if FULL_DATA is None:
        pytest.skip(f"full data not found: set {ENV_VAR} to a copy of shared/data")
    return FULL_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small models on a shared 2-core machine run faster without thread contention."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def _fhir_server_running():
    from fhir_server import RunningServer

    with RunningServer() as server:
        yield server


@pytest.fixture
def fhir_server(_fhir_server_running):
    """A FHIR test server on 127.0.0.1 (see ``tests/fhir_server.py``), emptied for each test."""
    _fhir_server_running.reset()
    return _fhir_server_running
