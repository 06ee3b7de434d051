"""Files written inside a transaction, and removed again if it fails."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from radiology.services.errors import ServiceError

logger = logging.getLogger(__name__)


@contextmanager
def cleanup_files_on_error() -> Iterator[list[str]]:
    """Collects storage names written inside the block and deletes them if the block raises,
    so a failed transaction never leaves orphan files (and no row ever points at a missing one)."""
    written: list[str] = []
    try:
        yield written
    except BaseException:
        for name in written:
            try:
                default_storage.delete(name)
            except OSError:
                logger.warning("could not remove orphan file %s after a failed write", name)
        raise


def save_file(file_field: Any, name: str, content: bytes, written: list[str]) -> None:
    try:
        file_field.save(name, ContentFile(content), save=False)
    except OSError as exc:
        logger.error("storage refused a write: %s", exc.__class__.__name__)
        raise ServiceError(
            "storage_unavailable",
            "The image store is not accepting files right now (it may be full). Nothing was saved; "
            "please try again later or tell your administrator.",
        ) from None
    written.append(file_field.name)
