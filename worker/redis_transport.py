"""kombu's Redis transport, made to survive the broker going away under a running worker.

Why this exists. When Redis goes down (a restart, a failover, the network), Celery's consumer closes the
lost connection and its channel. Closing a Redis channel first puts the messages it had taken back on
their queue (``restore_unacked``), and for that kombu builds a new Redis client from the connection's
parameters; but the connection has already been closed and its parameters dropped
(``transport.client`` is ``None``), so building the client raises ``AttributeError`` instead of a
connection error. Celery ignores connection errors while closing, not that one: the worker stopped with
"Unrecoverable error", killing the batch in its pool and dropping its loaded model, on every Redis blip.

The fix, where the fault is: with no connection parameters left, the channel raises the connection
error it met in the first place; closing ignores it, the consumer reconnects once Redis is back, and the
messages it could not put back return by Redis' visibility timeout (their radiographs by the sweep long
before). Selected by ``CELERY_BROKER_TRANSPORT`` (config/settings.py) for redis:// brokers.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the connection to Redis is closed")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        return params


class Transport(kombu_redis.Transport):
    Channel = Channel
