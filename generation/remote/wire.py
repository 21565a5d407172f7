"""The wire between the bot and `atelier worker` processes: subjects, streams and the JSON messages.

Pure functions and validated values only (no I/O), so both sides and the tests share one definition.
Every message carries `v` (the protocol version); a message of another version or a malformed one is a
WireError with a short, clear reason, which the receiver logs with the ids it has and terminates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROTOCOL = 1
DEFAULT_PREFIX = "atelier"
# NATS' default max_payload is 1 MiB; a chunk leaves room for the headers beside it.
CHUNK_BYTES = 1024 * 1024 - 4096
# A worker's registry entry lives this long without a refresh; workers refresh it every HEARTBEAT_S.
WORKER_TTL_S = 15.0
HEARTBEAT_S = 5.0
# A live worker extends its batch with in-progress acks well inside this.
ACK_WAIT_S = 30.0
# After this many deliveries a batch's jobs fail (a batch that kills every worker it reaches).
MAX_DELIVERIES = 3
# Headers of a blob chunk message.
CHUNK_HEADER = "Atelier-Chunk"  # "<index>/<count>"
MSG_ID_HEADER = "Nats-Msg-Id"  # JetStream de-duplicates on it


class WireError(ValueError):
    """A message that does not follow the protocol: the receiver logs it and terminates it."""


@dataclass(frozen=True)
class Subjects:
    """Every subject, stream and bucket name under one prefix (ATELIER_BROKER_PREFIX)."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if not self.prefix or any(c in self.prefix for c in " .*>\t"):
            raise WireError(f"broker prefix {self.prefix!r} must be one word without dots or wildcards")

    def jobs(self, model: str) -> str:
        return f"{self.prefix}.jobs.{_token(model)}"

    def events(self, job_id: int | str = "*") -> str:
        return f"{self.prefix}.events.{job_id}"

    def progress(self, job_id: int | str = "*") -> str:
        return f"{self.prefix}.progress.{job_id}"

    def blob(self, sha256: str = "*") -> str:
        return f"{self.prefix}.blobs.{sha256}"

    # Stream and bucket names may not hold dots.
    @property
    def jobs_stream(self) -> str:
        return f"{self.prefix}-jobs"

    @property
    def events_stream(self) -> str:
        return f"{self.prefix}-events"

    @property
    def blobs_stream(self) -> str:
        return f"{self.prefix}-blobs"

    @property
    def workers_bucket(self) -> str:
        return f"{self.prefix}-workers"

    @property
    def cancels_bucket(self) -> str:
        """Ids of dispatched jobs their members cancelled (KV, key = job id): a worker drops such a job
        before rendering it and stops it at the next step while it renders."""
        return f"{self.prefix}-cancels"

    def cancel_updates(self) -> str:
        """The subject a put into the cancels bucket is published on (for a plain subscription)."""
        return f"$KV.{self.cancels_bucket}.>"

    def consumer(self, model: str) -> str:
        """The one durable pull consumer every worker serving `model` shares."""
        return f"render-{_token(model)}"


def _token(name: str) -> str:
    """A model name as one subject token (names are configured by operators, but may hold dots)."""
    if not name or any(c in name for c in " *>\t"):
        raise WireError(f"model name {name!r} cannot be a subject")
    return name.replace(".", "_")


class _Message(BaseModel):
    # Unknown fields are ignored (a newer peer of the same version may add some); types are strict.
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = PROTOCOL


class DispatchJob(_Message):
    job_id: int = Field(gt=0)
    request: dict[str, Any]


class Dispatch(_Message):
    """One batch for one model: the bot's fair order picked these jobs to render together."""

    dispatch_id: str = Field(min_length=1, max_length=64)
    jobs: tuple[DispatchJob, ...] = Field(min_length=1)


class ImageRef(_Message):
    """One rendered image; its PNG travels as chunks in the blobs stream under `sha256`."""

    index: int = Field(ge=0)
    seed: int
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0)
    nsfw: bool = False


class Event(_Message):
    kind: Literal["started", "done", "failed", "cancelled"]
    job_id: int = Field(gt=0)
    dispatch_id: str
    worker: str
    images: tuple[ImageRef, ...] = ()
    render_seconds: float = 0.0
    reason: str = ""
    retryable: bool = False
    # started: which delivery of its batch this is (2 after a worker died with it).
    attempt: int = Field(default=1, ge=1)


class Progress(_Message):
    job_id: int = Field(gt=0)
    step: int = Field(ge=0)
    total: int = Field(gt=0)
    # A small PNG (base64) of the render so far, or empty.
    preview: str = ""


class ModelInfo(_Message):
    name: str
    family: str
    steps: int
    guidance: float
    sampler: str
    # The model's native square side (its `?size=`), so the bot sizes requests as an in-process engine
    # would; None (and older workers) = the family's.
    size: int | None = Field(default=None, ge=64, le=4096)


class WorkerInfo(_Message):
    """A worker's registry entry (KV, TTL WORKER_TTL_S, refreshed every HEARTBEAT_S)."""

    name: str = Field(min_length=1)
    device: str
    models: tuple[ModelInfo, ...]
    loaded: tuple[str, ...] = ()
    slots: int = Field(ge=1)
    max_batch: int = Field(ge=1)
    busy: tuple[int, ...] = ()
    # The job rendering now and its step, for /admin workers.
    step: int = 0
    total: int = 0
    # For /admin workers and the metrics: what it does now ("idle", "loading", "rendering", "stopping"),
    # seconds since it started (its own clock: no skew between machines), jobs ended since, and the mean
    # render seconds per image of each model it rendered.
    state: str = "idle"
    uptime_s: float = Field(default=0.0, ge=0.0)
    jobs_done: int = Field(default=0, ge=0)
    seconds_per_image: dict[str, float] = Field(default_factory=dict)


M = TypeVar("M", bound=_Message)


def encode(message: _Message) -> bytes:
    return message.model_dump_json().encode()


def _decode(kind: type[M], data: bytes) -> M:
    try:
        message = kind.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "message"
        raise WireError(f"malformed {kind.__name__.lower()}: {where}: {first['msg']}") from None
    if message.v != PROTOCOL:
        raise WireError(f"{kind.__name__.lower()} speaks protocol {message.v}, this side speaks {PROTOCOL}")
    return message


def decode_dispatch(data: bytes) -> Dispatch:
    dispatch = _decode(Dispatch, data)
    ids = [job.job_id for job in dispatch.jobs]
    if len(set(ids)) != len(ids):
        raise WireError(f"malformed dispatch {dispatch.dispatch_id}: a job appears twice")
    return dispatch


def decode_event(data: bytes) -> Event:
    return _decode(Event, data)


def decode_progress(data: bytes) -> Progress:
    return _decode(Progress, data)


def decode_worker(data: bytes) -> WorkerInfo:
    return _decode(WorkerInfo, data)


# -- blobs ----------------------------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def chunks(data: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    """An image's bytes as the chunks its messages carry, in order (at least one)."""
    if size <= 0:
        raise ValueError("chunk size must be positive")
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def chunk_header(index: int, count: int) -> str:
    return f"{index}/{count}"


def parse_chunk_header(value: str | None) -> tuple[int, int]:
    try:
        index_text, count_text = (value or "").split("/")
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise WireError(f"blob chunk header {value!r} is not index/count") from None
    if not 0 <= index < count:
        raise WireError(f"blob chunk {index} of {count} is out of range")
    return index, count


def assemble(expected_sha256: str, parts: Sequence[tuple[int, int, bytes]], max_bytes: int) -> bytes:
    """The blob from its (index, count, bytes) chunks, checked: every chunk once, size and hash."""
    if not parts:
        raise WireError(f"blob {expected_sha256[:12]} is missing")
    count = parts[0][1]
    by_index: dict[int, bytes] = {}
    for index, n, data in parts:
        if n != count:
            raise WireError(f"blob {expected_sha256[:12]}: chunks disagree on their count")
        by_index.setdefault(index, data)  # a redelivered chunk is the same chunk
    if len(by_index) != count:
        raise WireError(f"blob {expected_sha256[:12]}: {count - len(by_index)} of {count} chunks are missing")
    data = b"".join(by_index[i] for i in range(count))
    if len(data) > max_bytes:
        raise WireError(f"blob {expected_sha256[:12]} is {len(data)} bytes, over the {max_bytes} allowed")
    if sha256_hex(data) != expected_sha256:
        raise WireError(f"blob {expected_sha256[:12]} does not match its hash")
    return data
