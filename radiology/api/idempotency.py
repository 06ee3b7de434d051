"""Idempotency-Key for creating requests: a retried request gets the first response instead of new work.

The key is scoped to the caller. The request is identified by a fingerprint of its method, path and
parsed body (uploaded files by content digest, so the multipart boundary does not matter):

- new key: a record is inserted (unique per user and key), the operation runs, and a 2xx response is
  stored; an error response or exception removes the record so the client can retry with the same key;
- same key, same fingerprint, completed: the stored response is replayed (`Idempotent-Replayed: true`);
- same key, same fingerprint, still running: 409 `idempotency_in_progress` with Retry-After;
- same key, different fingerprint: 422 `idempotency_key_reused`.

A record left in progress by a crashed process is taken over after API_IDEMPOTENCY_STALE_SECONDS; records
expire after API_IDEMPOTENCY_TTL_HOURS (then the key may be used afresh).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, transaction
from django.http import HttpResponseBase, QueryDict
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response

from radiology.api.problems import Problem
from radiology.models import IdempotencyRecord
from radiology.services.idempotency import idempotency_purge_expired

__all__ = [
    "complete_in_transaction",
    "idempotency_key",
    "idempotency_purge_expired",
    "request_fingerprint",
    "run_idempotently",
]

HEADER = "Idempotency-Key"
_RECORD = "_idempotency_record"  # the record a request holds while its operation runs
REPLAYED_HEADER = "Idempotent-Replayed"
_MAX_KEY_LENGTH = 255


def _file_digest(upload: UploadedFile) -> str:
    digest = hashlib.sha256()
    upload.seek(0)
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)  # the view reads it next
    return digest.hexdigest()


def _canonical(value: Any) -> Any:
    if isinstance(value, UploadedFile):
        return {"file": value.name, "sha256": _file_digest(value)}
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def request_fingerprint(request: Request) -> str:
    data = request.data
    if isinstance(data, QueryDict):
        # Multipart and form bodies: every value of every field, in field order of appearance per name.
        body: Any = {key: [_canonical(v) for v in data.getlist(key)] for key in sorted(data.keys())}
    else:
        body = _canonical(data)
    payload = json.dumps(
        {"method": request.method, "path": request.path, "body": body},
        sort_keys=True,
        cls=DjangoJSONEncoder,
        ensure_ascii=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not (0 < len(key) <= _MAX_KEY_LENGTH) or not all(" " <= ch <= "~" for ch in key):
        raise Problem(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1-255 printable ASCII characters.",
            status_code=400,
            errors=[{"field": HEADER, "code": "invalid", "message": "Use for example a UUID."}],
        )
    return key


def _replay(record: IdempotencyRecord) -> Response:
    headers = {REPLAYED_HEADER: "true"}
    if record.response_location:
        headers["Location"] = record.response_location
    return Response(record.response_body, status=record.response_status, headers=headers)


def _take_over(record: IdempotencyRecord, fingerprint: str) -> bool:
    """Conditional UPDATE on the row as we read it: of two retries reviving one record, one wins."""
    return (
        IdempotencyRecord.objects.filter(pk=record.pk, updated_at=record.updated_at).update(
            fingerprint=fingerprint,
            state=IdempotencyRecord.State.IN_PROGRESS,
            response_status=None,
            response_body=None,
            response_location="",
            created_at=timezone.now(),
            updated_at=timezone.now(),
        )
        == 1
    )


def _claim(*, user: Any, key: str, fingerprint: str) -> tuple[IdempotencyRecord | None, Response | None]:
    for _attempt in range(3):
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(user=user, key=key, fingerprint=fingerprint)
            return record, None
        except IntegrityError:
            pass  # the key exists: decide from what it holds
        existing = IdempotencyRecord.objects.filter(user=user, key=key).first()
        if existing is None:
            continue  # released between our insert and our read: try the insert again
        now = timezone.now()
        expired = existing.created_at < now - dt.timedelta(hours=settings.API_IDEMPOTENCY_TTL_HOURS)
        if expired:
            if _take_over(existing, fingerprint):
                existing.refresh_from_db()
                return existing, None
            continue
        if existing.fingerprint != fingerprint:
            raise Problem(
                "idempotency_key_reused",
                "This Idempotency-Key was already used for a different request. "
                "Use a new key for a new request.",
            )
        if existing.state == IdempotencyRecord.State.COMPLETED:
            return None, _replay(existing)
        stale = existing.updated_at < now - dt.timedelta(seconds=settings.API_IDEMPOTENCY_STALE_SECONDS)
        if stale and _take_over(existing, fingerprint):
            existing.refresh_from_db()
            return existing, None
        raise Problem(
            "idempotency_in_progress",
            "A request with this Idempotency-Key is still being processed. Retry in a moment.",
            headers={"Retry-After": "1"},
        )
    raise Problem("conflict", "The request could not be registered; please retry.")


def _complete(record: IdempotencyRecord, response: Response) -> None:
    body = json.loads(json.dumps(response.data, cls=DjangoJSONEncoder))
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        state=IdempotencyRecord.State.COMPLETED,
        response_status=response.status_code,
        response_body=body,
        response_location=response.get("Location", "")[:500],
        updated_at=timezone.now(),
    )


def _release(record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, state=IdempotencyRecord.State.IN_PROGRESS).delete()


def run_idempotently(request: Request, operation: Callable[[], HttpResponseBase]) -> HttpResponseBase:
    """Run `operation` at most once per (caller, Idempotency-Key); without the header, just run it."""
    key = idempotency_key(request)
    if key is None:
        return operation()
    record, replay = _claim(user=request.user, key=key, fingerprint=request_fingerprint(request))
    if replay is not None:
        return replay
    assert record is not None
    setattr(request, _RECORD, record)
    try:
        response = operation()
    except BaseException:
        _release(record)
        raise
    if isinstance(response, Response) and 200 <= response.status_code < 300:
        _complete(record, response)
    else:
        _release(record)
    return response


def complete_in_transaction(request: Request, response: Response) -> None:
    """Mark the request's Idempotency-Key completed with `response`, inside the transaction that does the
    work: the work and its record then commit together. Completed only after the commit, a process killed
    between the two left the work done and the key "in progress"; the retry, taking the stale key over,
    did the work again (an upload: a second study, or 409 duplicate_accession for ever)."""
    record = getattr(request, _RECORD, None)
    if record is not None:
        _complete(record, response)
