"""Fixtures of the core's unit tests that work with an image store: the in-memory fake
(worklist.orthanc.FakeImageStore) and a service on a fresh SQLite file using it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from worklist.orthanc import FakeImageStore
from worklist.service import WorklistService
from worklist.store import open_store


@pytest.fixture
def images() -> FakeImageStore:
    return FakeImageStore()


@pytest.fixture
def service(tmp_path: Path, images: FakeImageStore) -> Iterator[WorklistService]:
    store = open_store(f"sqlite:///{tmp_path / 'wl.db'}")
    yield WorklistService(store, image_store=images)
    store.engine.dispose()
