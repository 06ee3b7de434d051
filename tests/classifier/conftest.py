"""Shared fixtures for the classifier's tests: real images from tests/fixtures/images only."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
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


@contextmanager
def _tf_functions(*, eager: bool) -> Iterator[None]:
    """Run every ``tf.function`` eagerly (or as a graph) inside the block, then restore the setting."""
    import tensorflow as tf

    before = tf.config.functions_run_eagerly()
    tf.config.run_functions_eagerly(eager)
    try:
        yield
    finally:
        tf.config.run_functions_eagerly(before)


@pytest.fixture(scope="module")
def eager_training() -> Iterator[None]:
    """The module's training steps run eagerly. Tracing EfficientNet-Lite's backward graph costs about 15 s
    per fit on two cores, while the one- to four-step fits on 64-px images these tests make then take a
    second or two: the module runs about four times faster. The graph path real training takes stays
    tested where a test asks for ``graph_functions`` (the release fixture, one-seed determinism)."""
    with _tf_functions(eager=True):
        yield


@pytest.fixture(scope="session")
def graph_functions() -> Callable[[], AbstractContextManager[None]]:
    """A context manager in which ``tf.function`` builds and runs graphs, as in real training."""
    return lambda: _tf_functions(eager=False)
