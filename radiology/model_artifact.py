"""Checks on the model artifact that need no TensorFlow, shared by the worker (refuse to start on a
broken artifact) and the web application (tell an administrator).

Here rather than in worker/ because the web pages use it, and radiology never imports the worker.
"""

from __future__ import annotations

import functools
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from classifier.predict import default_model_path


@dataclass(frozen=True)
class ModelStatus:
    path: Path
    ok: bool
    version: str = ""
    problem: str = ""


def configured_model_path() -> Path:
    if settings.CLASSIFIER_MODEL:
        return Path(settings.CLASSIFIER_MODEL)
    return default_model_path()


def check_model_artifact(path: Path | None = None) -> ModelStatus:
    """Is the artifact there, complete and readable? (Its integrity, not its accuracy.)

    Cached on the files' size and modification time: the web process asks on every admin page, and
    checking the archive's CRCs means reading the whole file.
    """
    path = path or configured_model_path()
    return _check_cached(path, _fingerprint(path))


def _fingerprint(path: Path) -> tuple[tuple[int, int], ...]:
    model_dir = path if path.is_dir() else path.parent
    keras_file = path if path.suffix == ".keras" else path / "model.keras"
    stamps = []
    for file in (keras_file, model_dir / "card.json"):
        try:
            stat = file.stat()
            stamps.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            stamps.append((-1, -1))
    return tuple(stamps)


@functools.lru_cache(maxsize=8)
def _check_cached(path: Path, fingerprint: tuple[tuple[int, int], ...]) -> ModelStatus:
    model_dir = path if path.is_dir() else path.parent
    keras_file = path if path.suffix == ".keras" else path / "model.keras"
    card_file = model_dir / "card.json"
    if not keras_file.is_file():
        return ModelStatus(path, False, problem=f"The model file {keras_file} does not exist.")
    if not card_file.is_file():
        return ModelStatus(path, False, problem=f"The model card {card_file} does not exist.")
    try:
        card = json.loads(card_file.read_text())
        version = str(card["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return ModelStatus(
            path, False, problem=f"The model card {card_file} is not valid JSON with a version."
        )
    try:
        with zipfile.ZipFile(keras_file) as archive:
            damaged = archive.testzip()
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return ModelStatus(
            path, False, version, f"The model file {keras_file} is corrupt (not a .keras archive)."
        )
    if damaged is not None or "config.json" not in names:
        return ModelStatus(path, False, version, f"The model file {keras_file} is corrupt or incomplete.")
    return ModelStatus(path, True, version)
