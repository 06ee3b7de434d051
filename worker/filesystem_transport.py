"""kombu's file transport (the embedded broker of ``make run``), safe against a half-written message.

Why this exists. Stock kombu writes a message by opening ``<time>_<uuid>.<queue>.msg`` and then writing
into it, under an advisory lock the reader never takes; the reader lists the folder, moves the file away
and reads it. A worker that polls while a message is being written (ten times a second here, and the beat
scheduler sends every two seconds) moves and reads an empty file, ``json.loads`` fails, and Celery stops
the worker with "Unrecoverable error" (kombu issue #1551). Seen in ``make run`` after 96 s; the supervisor
restarted the worker, but a worker that dies drops its loaded model and the batch it was running.

The fix, where the fault is: a message is written under a hidden name that no queue matches and renamed
to its queue name when complete (``os.replace`` within one folder is atomic), so a reader sees a message
whole or not at all. A file that still cannot be decoded (written by something else, or cut short by a
full disk) is logged and skipped instead of stopping the worker: its task's radiograph is sent again by
the sweep (``CLASSIFY_RESEND_AFTER_SECONDS``). Selected by ``CELERY_BROKER_TRANSPORT`` (config/settings.py)
for filesystem:// brokers.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem as kombu_filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

log = logging.getLogger(__name__)


class Channel(kombu_filesystem.Channel):
    # kombu's own Channel names this argument `payload`, its base class `message`: mypy sees the two clash.
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = Path(self.data_folder_out) / name
        hidden = final.with_name(f".{name}.part")  # matches no queue
        try:
            hidden.write_bytes(str_to_bytes(dumps(payload)))
            hidden.replace(final)
        except OSError as exc:
            hidden.unlink(missing_ok=True)
            raise ChannelError(f"Cannot add file {str(final)!r} to directory") from exc

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        while True:  # super()._get has removed an undecodable file before it raises: try the next one
            try:
                return super()._get(queue)
            except ValueError:
                log.error("skipped an unreadable message file in the embedded broker's queue %r", queue)


class Transport(kombu_filesystem.Transport):
    Channel = Channel
