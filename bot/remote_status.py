"""Remote workers as members and moderators read about them: /admin workers (the roster) and the words
/queue uses for a job in remote mode. State in, text out, like bot/presenter.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the bot without remote workers never imports the broker's client
    from generation.remote.dispatcher import RemoteBackend, WorkerStatus
    from generation.scheduler import QueueEntry

NO_WORKERS_ONLINE = "No workers are online."


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"


def worker_line(status: WorkerStatus) -> str:
    info = status.info
    if not status.online:
        return f"**{info.name}** — offline (last heard {_seconds(status.heard_s)} ago)"
    loaded = set(info.loaded)
    models = ", ".join(f"{m.name} ({'loaded' if m.name in loaded else 'served'})" for m in info.models)
    parts = [f"**{info.name}** — {info.state} on `{info.device}`", f"models: {models}"]
    if info.busy:
        job = f"job {info.busy[0]}"
        if info.state == "rendering" and info.total:
            job += f" step {info.step}/{info.total}"
        if len(info.busy) > 1:
            job += f" (+{len(info.busy) - 1} prefetched)"
        parts.append(job)
    parts.append(f"heartbeat {_seconds(status.heard_s)} ago")
    hours = max(info.uptime_s, 60.0) / 3600  # a minute at least: no absurd rate just after a start
    parts.append(f"{info.jobs_done / hours:.1f} jobs/h")
    if info.seconds_per_image:
        parts.append(", ".join(f"{model} {secs:.1f} s/image"
                               for model, secs in sorted(info.seconds_per_image.items())))
    return " · ".join(parts)


def roster_text(remote: RemoteBackend) -> str:
    """/admin workers: plain text when none is online (offline ones are still listed below it)."""
    roster = remote.roster()
    online = [w for w in roster if w.online]
    lines = [] if online else [NO_WORKERS_ONLINE]
    if online:
        lines.append(f"{len(online)} worker{'s' if len(online) != 1 else ''} online:")
    lines += [worker_line(w) for w in roster]
    return "\n".join(lines)[:1990]


def remote_state(remote: RemoteBackend, entry: QueueEntry) -> str | None:
    """Where a job stands with the workers: "rendering on <worker>", "waiting for a worker with model X",
    or None when there is nothing to add to the queue's own words."""
    model = str(entry.request.get("model", ""))
    if entry.status == "running":
        worker = remote.worker_of(entry.job_id)
        if worker is not None:
            return f"rendering on {worker}"
        if not remote.has_capacity(model):
            return f"waiting for a worker with model {model}"
        return None
    if not remote.serves(model):
        return f"waiting for a worker with model {model}"
    return None
