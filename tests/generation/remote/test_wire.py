"""The wire's pure functions: round trips, and every malformed message is a short, clear WireError."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from generation.remote.wire import (
    PROTOCOL,
    Dispatch,
    DispatchJob,
    Event,
    ImageRef,
    Subjects,
    WireError,
    assemble,
    chunk_header,
    chunks,
    decode_dispatch,
    decode_event,
    decode_worker,
    encode,
    parse_chunk_header,
    sha256_hex,
)


def test_dispatch_round_trip() -> None:
    dispatch = Dispatch(dispatch_id="d1", jobs=(DispatchJob(job_id=7, request={"prompt": "a cat"}),))
    assert decode_dispatch(encode(dispatch)) == dispatch
    assert json.loads(encode(dispatch))["v"] == PROTOCOL


@pytest.mark.parametrize(("raw", "says"), [
    (b"not json", "malformed dispatch"),
    (b'{"v": 1, "dispatch_id": "d", "jobs": []}', "jobs"),
    (b'{"v": 1, "dispatch_id": "d", "jobs": [{"job_id": "x", "request": {}}]}', "job_id"),
    (b'{"v": 1, "jobs": [{"job_id": 1, "request": {}}]}', "dispatch_id"),
    (b'{"v": 9, "dispatch_id": "d", "jobs": [{"job_id": 1, "request": {}}]}', "protocol 9"),
    (b'{"v": 1, "dispatch_id": "d", "jobs": [{"job_id": 1, "request": {}}, {"job_id": 1, "request": {}}]}',
     "twice"),
])
def test_malformed_dispatch_is_a_clear_error(raw: bytes, says: str) -> None:
    with pytest.raises(WireError, match=says) as info:
        decode_dispatch(raw)
    assert len(str(info.value)) < 200 and "\n" not in str(info.value)


def test_event_checks_kind_and_image_hash() -> None:
    ref = ImageRef(index=0, seed=1, width=64, height=64, sha256="a" * 64, size=10)
    done = Event(kind="done", job_id=3, dispatch_id="d", worker="w", images=(ref,))
    assert decode_event(encode(done)) == done
    with pytest.raises(WireError, match="kind"):
        decode_event(encode(done).replace(b'"done"', b'"exploded"'))
    with pytest.raises(WireError, match="sha256"):
        decode_event(encode(done).replace(b"a" * 64, b"not-a-hash"))


def test_worker_entry_needs_its_fields() -> None:
    with pytest.raises(WireError, match="malformed workerinfo"):
        decode_worker(b'{"v": 1, "name": "gpu0"}')


def test_subjects_live_under_the_prefix() -> None:
    subjects = Subjects("guild")
    assert subjects.jobs("sd1.5") == "guild.jobs.sd1_5"
    assert subjects.events(4) == "guild.events.4"
    assert subjects.blob("ab") == "guild.blobs.ab"
    assert "." not in subjects.jobs_stream + subjects.workers_bucket
    with pytest.raises(WireError):
        Subjects("a.b")
    with pytest.raises(WireError):
        subjects.jobs("bad>name")


@given(st.binary(max_size=5000), st.integers(min_value=1, max_value=700))
def test_chunks_reassemble_to_the_blob(data: bytes, size: int) -> None:
    parts = chunks(data, size)
    assert all(len(p) <= size for p in parts)
    framed = [(*parse_chunk_header(chunk_header(i, len(parts))), p) for i, p in enumerate(parts)]
    # Redelivered and reordered chunks are harmless.
    assert assemble(sha256_hex(data), list(reversed(framed)) + framed[:1], max_bytes=10_000) == data


def test_a_bad_blob_is_refused() -> None:
    data = b"x" * 100
    parts = [(i, 2, p) for i, p in enumerate(chunks(data, 50))]
    with pytest.raises(WireError, match="missing"):
        assemble(sha256_hex(data), parts[:1], max_bytes=1000)
    with pytest.raises(WireError, match="hash"):
        assemble(sha256_hex(b"other"), parts, max_bytes=1000)
    with pytest.raises(WireError, match="over"):
        assemble(sha256_hex(data), parts, max_bytes=99)
    with pytest.raises(WireError, match="missing"):
        assemble(sha256_hex(data), [], max_bytes=1000)
    with pytest.raises(WireError):
        parse_chunk_header("3/2")
