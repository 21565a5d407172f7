"""The NATS JetStream side both ends share: connecting (with one-line refusals), the streams and the
worker registry bucket, and images as checked chunks. Leases, redelivery and TTLs are JetStream's
configuration here, not code of ours."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue

from generation.remote.wire import (
    CHUNK_HEADER,
    MSG_ID_HEADER,
    WORKER_TTL_S,
    Subjects,
    WireError,
    assemble,
    chunk_header,
    chunks,
    parse_chunk_header,
    sha256_hex,
)

log = logging.getLogger(__name__)

# Events and images outlive any sane outage of the bot, then make room.
KEEP_S = 24 * 3600.0
# De-duplication window of the jobs stream: a re-published dispatch id inside it is dropped.
DEDUP_S = 600.0
# The largest image a worker may send back (a 2048² PNG of noise is ~12 MiB).
MAX_IMAGE_BYTES = 64 * 1024 * 1024


class BrokerRefused(Exception):
    """The broker cannot serve us (wrong credentials, no JetStream): one line for the operator, exit 2.
    Never holds the password."""


def where(url: str) -> str:
    """host:port of a broker URL, for messages: the credentials in it never reach a log."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    return f"{parts.hostname or '?'}:{parts.port or 4222}"


async def connect(url: str, name: str, unreachable: asyncio.Event | None = None
                  ) -> tuple[NATS, JetStreamContext]:
    """Connect, retrying with backoff while the broker is down (forever); refuse at once on wrong
    credentials or a server without JetStream. `unreachable` is set at the first failed attempt to reach
    the broker, so a caller that must not wait (the bot) can go on while this keeps trying."""
    loop = asyncio.get_running_loop()
    refused: asyncio.Future[str] = loop.create_future()

    async def on_error(exc: Exception) -> None:
        text = str(exc)
        if "Authorization" in text or "Authentication" in text:
            if not refused.done():
                refused.set_result(f"the broker at {where(url)} refused our credentials")
            return
        if unreachable is not None and isinstance(exc, OSError | TimeoutError):
            unreachable.set()
        log.warning("broker %s: %s", where(url), type(exc).__name__)

    async def on_disconnected() -> None:
        log.warning("lost the broker at %s; reconnecting", where(url))

    connecting = asyncio.ensure_future(nats.connect(
        url, name=name, error_cb=on_error, disconnected_cb=on_disconnected,
        allow_reconnect=True, max_reconnect_attempts=-1, reconnect_time_wait=2, connect_timeout=5,
    ))
    waiting: set[asyncio.Future[object]] = {connecting, refused}  # type: ignore[arg-type]
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if refused in done:
        connecting.cancel()
        with contextlib.suppress(BaseException):
            await connecting
        raise BrokerRefused(refused.result())
    refused.cancel()
    nc = connecting.result()
    js = nc.jetstream()
    try:
        await js.account_info()
    except (ServiceUnavailableError, nats.errors.NoRespondersError, nats.errors.TimeoutError):
        await nc.close()
        raise BrokerRefused(
            f"the broker at {where(url)} has no JetStream (enable `jetstream` in its config)") from None
    return nc, js


async def ensure_streams(js: JetStreamContext, subjects: Subjects) -> KeyValue:
    """Create the streams and the worker registry if missing (idempotent; both ends may call it)."""
    configs = [
        # One message per batch, removed when a worker acks it; the dispatch id de-duplicates.
        StreamConfig(name=subjects.jobs_stream, subjects=[f"{subjects.prefix}.jobs.>"],
                     retention=RetentionPolicy.WORK_QUEUE, duplicate_window=DEDUP_S),
        StreamConfig(name=subjects.events_stream, subjects=[f"{subjects.prefix}.events.>"],
                     max_age=KEEP_S, duplicate_window=DEDUP_S),
        StreamConfig(name=subjects.blobs_stream, subjects=[f"{subjects.prefix}.blobs.>"],
                     max_age=KEEP_S, duplicate_window=DEDUP_S, max_msgs_per_subject=1),
    ]
    for config in configs:
        try:
            await js.add_stream(config)
        except BadRequestError:
            # Exists with another configuration (an operator's tuning): use it as it is.
            await js.stream_info(config.name or "")
    try:
        return await js.key_value(subjects.workers_bucket)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        return await js.create_key_value(bucket=subjects.workers_bucket, ttl=WORKER_TTL_S)


async def cancels_bucket(js: JetStreamContext, subjects: Subjects) -> KeyValue:
    """The bucket of cancelled job ids, created if missing (both ends may call it). Its entries outlive
    any redelivery of their batch, then expire."""
    try:
        return await js.key_value(subjects.cancels_bucket)
    except (NotFoundError, nats.js.errors.BucketNotFoundError):
        return await js.create_key_value(bucket=subjects.cancels_bucket, ttl=KEEP_S)


async def put_blob(js: JetStreamContext, subjects: Subjects, data: bytes) -> str:
    """Upload `data` as chunks under its sha256 (a repeat upload is de-duplicated); returns the hash."""
    digest = sha256_hex(data)
    parts = chunks(data)
    for index, part in enumerate(parts):
        await js.publish(f"{subjects.blob(digest)}.{index}", part, headers={
            CHUNK_HEADER: chunk_header(index, len(parts)), MSG_ID_HEADER: f"{digest}.{index}"})
    return digest


async def get_blob(js: JetStreamContext, subjects: Subjects, digest: str,
                   max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The blob under `digest`, checked (every chunk, size, hash); a WireError when missing or corrupt."""
    parts: list[tuple[int, int, bytes]] = []
    count = 1
    index = 0
    while index < count:
        try:
            msg = await js.get_last_msg(subjects.blobs_stream, f"{subjects.blob(digest)}.{index}")
        except NotFoundError:
            break
        i, count = parse_chunk_header((msg.headers or {}).get(CHUNK_HEADER))
        if i != index:
            raise WireError(f"blob {digest[:12]}: chunk {index} carries index {i}")
        parts.append((i, count, msg.data or b""))
        index += 1
    return assemble(digest, parts, max_bytes)
