"""ATELIER_METRICS_ADDR: the Prometheus exporter (generation/metrics.py), scraped over HTTP around a real
job of the sandbox bot with the tiny engine. Remote workers' states are checked in tests/generation/remote."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from sandbox import Sandbox
from tests.bot.helpers import imagine, job_id_of


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample the exporter serves, by (name, labels)."""

    def get() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(get)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_metrics_move_with_a_job(sandbox: Sandbox, start_bot: Callable[..., Any]) -> None:
    port = free_port()
    app = await start_bot(ATELIER_METRICS_ADDR=f"127.0.0.1:{port}")
    before = await scrape(port)
    assert before[("atelier_queue_depth", ())] == 0
    assert before.get(("atelier_jobs_ended_total", (("status", "done"),)), 0) == 0

    alice, general = sandbox.users["alice"], sandbox.channel("general")
    message = await imagine(sandbox, alice, general, "a lighthouse --seed 7 --steps 2", count=2)
    job = await app.services.db.jobs.get(job_id_of(message))
    rows = await app.services.db.images.for_job(job.id)
    stored = sum(app.services.blobs.path(r.blob).stat().st_size for r in rows)

    async def counted() -> dict[Any, float]:
        for _ in range(300):  # the exporter counts on the event loop, right after the job's events
            after = await scrape(port)
            if after.get(("atelier_result_bytes_total", ()), 0) > 0:
                return after
            await asyncio.sleep(0.1)
        raise AssertionError("the job was never counted")

    after = await counted()
    assert after[("atelier_jobs_ended_total", (("status", "done"),))] == 1
    assert after[("atelier_result_bytes_total", ())] == stored
    assert after[("atelier_job_render_seconds_count", (("model", "tiny"),))] == 1
    assert after[("atelier_job_render_seconds_sum", (("model", "tiny"),))] == job.render_seconds
    assert after[("atelier_job_wait_seconds_count", (("model", "tiny"),))] == 1
    assert after[("atelier_redeliveries_total", ())] == 0
    assert after[("atelier_jobs", (("status", "running"),))] == 0


async def test_a_bad_metrics_address_is_refused_at_start(sandbox: Sandbox, start_bot: Callable[..., Any]
                                                         ) -> None:
    import pytest

    from bot.services import StartupFailed

    with pytest.raises(StartupFailed, match="host:port"):
        await start_bot(ATELIER_METRICS_ADDR="nowhere")
