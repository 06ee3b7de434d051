"""Shared fixtures for the classifier's tests: real images from tests/fixtures/images only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "images"

# file name -> (source, label); the fractured FracAtlas image's box comes from its annotation.
LABELLED = {
    "kaggle_fractured_1.jpg": ("kaggle", "fractured"),
    "kaggle_fractured_2.jpg": ("kaggle", "fractured"),
    "kaggle_not_fractured_1.jpg": ("kaggle", "not_fractured"),
    "kaggle_not_fractured_2.jpg": ("kaggle", "not_fractured"),
    "kaggle_fractured_rgba.png": ("kaggle", "fractured"),
    "kaggle_fractured.gif": ("kaggle", "fractured"),
    "fracatlas_fractured_IMG0000480.jpg": ("fracatlas", "fractured"),
    "fracatlas_not_fractured_IMG0000263.jpg": ("fracatlas", "not_fractured"),
}
FRACATLAS_BOX = (0.5120, 0.4392, 0.0780, 0.1750)
TRUNCATED = "kaggle_truncated.jpg"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def labelled() -> dict[str, tuple[str, str]]:
    """Fixture file name -> (source, label)."""
    return dict(LABELLED)


@pytest.fixture(scope="session")
def fracatlas_box() -> tuple[float, float, float, float]:
    return FRACATLAS_BOX


@pytest.fixture(scope="session")
def truncated_jpeg() -> bytes:
    return (FIXTURES / TRUNCATED).read_bytes()


@pytest.fixture(scope="session")
def fixture_bytes() -> dict[str, bytes]:
    return {name: (FIXTURES / name).read_bytes() for name in LABELLED}


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from classifier.testing import write_tiny_artifact

    return write_tiny_artifact(tmp_path_factory.mktemp("tiny") / "tiny-test")
