"""Celery's prefork pool, made to survive a pool child that dies while it waits for work.

Why this exists. With a transport that has no event loop (the embedded file broker), Celery runs
billiard's *blocking* pool: every child reads tasks from one shared pipe, guarded by one
cross-process lock (``inqueue._rlock``). billiard's child takes that lock and then blocks in
``recv_bytes()`` until a task arrives, so an idle child holds the lock all the time. When that child is
killed (``kill -9``, the OOM killer), the lock is never released: the replacement child waits for it
forever, the task the main process hands over is never read, and the main process blocks for good in
``_putlock.acquire()`` on the next one, with nothing in any log. (On Redis Celery uses its asynchronous
pool, one pipe per child, which is why the same kill recovers there.)

The fix, where the fault is:

- a child waits for data on the shared pipe *without* the lock, and takes the lock (with a timeout)
  only to read a message that is already there; so the lock is held for microseconds, not forever;
- after a child dies, the pool checks the shared locks; one still held a moment later can only have
  been held by the dead child (a live one holds it for microseconds), and is released.

Selected by ``CELERY_WORKER_POOL`` (config/settings.py). The asynchronous pool used with Redis is
Celery's own and unchanged. The module name contains "prefork" on purpose: Celery's Django fix-up
recognises the prefork pool by it.
"""

from __future__ import annotations

import logging
from typing import Any

from billiard import pool as billiard_pool
from billiard.common import pickle_loads
from celery.concurrency import prefork

logger = logging.getLogger(__name__)

# A live child holds a shared queue lock only while it copies one small message; held this long after
# a child died, it was the dead child's.
STUCK_LOCK_SECONDS = 2.0


class SharedQueueWorker(billiard_pool.Worker):
    """A pool child that never sleeps while holding the shared task queue's lock."""

    def _make_recv_method(self, conn: Any) -> Any:
        if conn is not self.inq or getattr(conn, "_rlock", None) is None:
            return super()._make_recv_method(conn)
        reader = conn._reader
        lock = conn._rlock

        def receive(timeout: float) -> tuple[bool, Any]:
            if not reader.poll(timeout):  # wait for work without the lock
                return False, None
            if not lock.acquire(timeout=timeout):  # a sibling is reading
                return False, None
            try:
                if not reader.poll(0):  # the sibling took the message we saw
                    return False, None
                payload = reader.recv_bytes()
            finally:
                lock.release()
            return True, pickle_loads(payload)

        return receive


class BlockingPool(billiard_pool.Pool):
    """billiard's blocking pool with the child above and a repair of locks left by a dead child."""

    Worker = SharedQueueWorker

    def _join_exited_workers(self, shutdown: bool = False) -> Any:
        cleaned = super()._join_exited_workers(shutdown=shutdown)
        if cleaned:
            self._release_locks_held_by_the_dead()
        return cleaned

    def _release_locks_held_by_the_dead(self) -> None:
        for name, lock in (
            ("task queue", getattr(self._inqueue, "_rlock", None)),
            ("result queue", getattr(self._outqueue, "_wlock", None)),
        ):
            if lock is None:
                continue
            if lock.acquire(timeout=STUCK_LOCK_SECONDS):
                lock.release()
                continue
            logger.warning("a dead pool process held the %s lock; releasing it", name)
            lock.release()


class TaskPool(prefork.TaskPool):
    """Celery's prefork TaskPool; only the blocking variant (no event loop) is replaced."""

    BlockingPool = BlockingPool
