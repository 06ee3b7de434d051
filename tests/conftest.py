"""Shared fixtures: a fixed cast of users, private media storage, fake dispatch and a fake predictor."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client

from radiology.roles import ensure_role_groups
from tests.factories import AdminFactory, ClinicianFactory, UserFactory

FIXTURES = Path(__file__).parent / "fixtures"
IMAGES = FIXTURES / "images"


def fixture_bytes(relative: str) -> bytes:
    return (FIXTURES / relative).read_bytes()


@pytest.fixture(autouse=True)
def _private_media_root(settings: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Each test writes images to its own folder (e2e tests share theirs with the worker instead)."""
    if request.node.get_closest_marker("e2e"):
        return
    media = tmp_path / "media"
    settings.MEDIA_ROOT = media
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {**settings.STORAGES["default"], "OPTIONS": {"location": str(media)}},
    }


@pytest.fixture(autouse=True)
def _no_state_from_other_tests() -> None:
    """Each test starts from empty process-wide caches (the worker's registry answer, kept 10 s; the Django
    cache: throttle counts, the model comparison), so that what a test sees, its query budget included, does
    not depend on which tests ran before it in the same process (pytest-xdist deals them out differently)."""
    from django.core.cache import cache

    from worker import governance_tasks

    governance_tasks.forget_registry_for_tests()
    cache.clear()


@pytest.fixture(autouse=True)
def _tallies_at_once(request: pytest.FixtureRequest) -> None:
    """On PostgreSQL the study and radiograph tallies' triggers fire at commit (migrations 0018, 0022), and
    a test's transaction never commits: in such a test they fire at once, so that the counts see the test's
    rows."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None and "db" not in request.fixturenames:
        return
    if (marker is not None and marker.kwargs.get("transaction")) or {
        "transactional_db",
        "live_server",
    } & set(request.fixturenames):
        return  # committed: the triggers fire as in production
    request.getfixturevalue("db")
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SET CONSTRAINTS study_tally_insert_delete, study_tally_update, radiograph_tally_insert_delete "
                "IMMEDIATE"
            )


@dataclass
class DispatchRecorder:
    calls: list[list[int]]

    @property
    def sent(self) -> list[int]:
        return [pk for call in self.calls for pk in call]


@pytest.fixture(autouse=True)
def dispatched(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> DispatchRecorder:
    """Records what would be sent to the broker; tests marked e2e or real_dispatch use the real broker."""
    recorder = DispatchRecorder(calls=[])
    if request.node.get_closest_marker("e2e") or request.node.get_closest_marker("real_dispatch"):
        return recorder

    def record(radiograph_ids: Sequence[int]) -> list[int]:
        recorder.calls.append(list(radiograph_ids))
        return list(radiograph_ids)

    monkeypatch.setattr("radiology.dispatch.send_classification", record)
    return recorder


@pytest.fixture
def roles(db: None) -> None:
    ensure_role_groups()


@pytest.fixture
def clinician(roles: None) -> Any:
    return ClinicianFactory.create(username="dr.ada")


@pytest.fixture
def admin(roles: None) -> Any:
    return AdminFactory.create(username="audit.admin")


@pytest.fixture
def outsider(roles: None) -> Any:
    """Can log in, belongs to no group, must see nothing clinical."""
    return UserFactory.create(username="no.role")


def _client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def clinician_client(clinician: Any) -> Client:
    return _client_for(clinician)


@pytest.fixture
def admin_client_(admin: Any) -> Client:
    return _client_for(admin)


@pytest.fixture
def outsider_client(outsider: Any) -> Client:
    return _client_for(outsider)


@dataclass(frozen=True)
class FakeBox:
    x0: float
    y0: float
    x1: float
    y1: float
    score: float


@dataclass(frozen=True)
class FakeOperatingPoints:
    sensitive: float
    specific: float


@dataclass(frozen=True)
class FakeResult:
    probability: float
    label: str
    heatmap: np.ndarray | None
    band: str = "no_fracture"
    boxes: tuple[FakeBox, ...] = ()


class FakePredictor:
    """Deterministic stand-in for classifier.predict.Predictor: brighter images look more 'fractured'.

    Bands from two operating points (0.3, 0.7); an image outside "no fracture" gets one box over the
    middle of its upper-left quarter, in original-image pixels.
    """

    version = "fake-model-1"
    threshold = 0.5
    thresholds = FakeOperatingPoints(sensitive=0.3, specific=0.7)
    class_names = ("not_fractured", "fractured")

    def __init__(self) -> None:
        self.batches: list[int] = []

    def band_for(self, probability: float) -> str:
        if probability >= self.thresholds.specific:
            return "fracture"
        return "doubt" if probability >= self.thresholds.sensitive else "no_fracture"

    def predict(self, images: Sequence[np.ndarray], *, heatmaps: bool = True) -> list[FakeResult]:
        self.batches.append(len(images))
        results = []
        for image in images:
            probability = float(np.clip(image.mean() / 255.0, 0.0, 1.0))
            label = "fractured" if probability >= self.threshold else "not_fractured"
            heatmap = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8) if heatmaps else None
            band = self.band_for(probability)
            height, width = image.shape[:2]
            boxes: tuple[FakeBox, ...] = ()
            if band != "no_fracture":
                boxes = (FakeBox(width * 0.125, height * 0.125, width * 0.375, height * 0.375, probability),)
            results.append(FakeResult(probability, label, heatmap, band, boxes))
        return results


@pytest.fixture
def fake_predictor(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePredictor]:
    from worker.tasks import reset_predictor_for_tests

    reset_predictor_for_tests()  # nothing remembered from another test's radiographs (ids are reused)
    predictor = FakePredictor()
    monkeypatch.setattr("worker.tasks.get_predictor", lambda: predictor)
    yield predictor


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (tiny, untrained) Keras artifact with the shipped model's interface."""
    from classifier.testing import write_tiny_artifact

    return write_tiny_artifact(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def shadow_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny artifact, registered as a shadow version beside ``tiny_model_dir``."""
    from classifier.testing import write_tiny_artifact

    return write_tiny_artifact(tmp_path_factory.mktemp("tiny-shadow"), version="tiny-shadow")


@pytest.fixture
def image_bytes() -> Callable[[str], bytes]:
    return lambda name: (IMAGES / name).read_bytes()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SQLite test databases live in a file, so worker subprocesses in e2e tests can open them too."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("db") / "test.sqlite3")
