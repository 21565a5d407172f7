"""Turns scheduler events into Discord message edits.

Each job's message is edited in order by one task per job, at most once per ~1.5 s for progress
(Discord rate-limits message edits); queued / final states always go out. The result is delivered at
least once and marked in storage; a redelivery only edits the same message into the same thing, so a
restart never posts a result twice. While the interaction token lives, edits go through it; after it
expires (or if the message was deleted) the result is posted to the channel as a normal bot message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import discord

from bot import presenter, results
from bot.jobflow import token_alive
from bot.policy import nsfw_presentation
from generation.events import (
    JobCancelled,
    JobDone,
    JobEvent,
    JobFailed,
    JobProgress,
    JobQueued,
    JobRendered,
    JobStarted,
)
from generation.request import RenderRequest

if TYPE_CHECKING:
    from bot.client import AtelierBot
    from storage.jobs import JobRow

log = logging.getLogger(__name__)

EDIT_INTERVAL_S = 1.5
REFS_WAIT_S = 10.0
SWEEP_INTERVAL_S = 15.0
UPLOAD_TOO_LARGE = 40005  # Discord's JSON error code for a file over the upload limit
MIN_UPLOAD_BYTES = 16 * 1024  # below this, a refusal is not about size: give up and let the sweep retry


class Delivery:
    def __init__(self, bot: AtelierBot) -> None:
        self.bot = bot
        self._queues: dict[int, asyncio.Queue[JobEvent | None]] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._refs: dict[int, asyncio.Event] = {}
        self._last_edit: dict[int, float] = {}
        # (position, paused) last shown per job, so unchanged queue states cost no edit.
        self._shown_position: dict[int, tuple[int, bool]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._deliver_lock: dict[int, asyncio.Lock] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        stream = self.bot.services.scheduler.subscribe()
        self._tasks.append(asyncio.create_task(self._consume(stream), name="atelier-delivery"))
        self._tasks.append(asyncio.create_task(self._sweep(), name="atelier-delivery-sweep"))

    async def stop(self) -> None:
        for task in [*self._tasks, *self._workers.values()]:
            task.cancel()
        for queue in self._queues.values():
            queue.put_nowait(None)  # a worker that missed its cancel still ends at its next get
        for task in [*self._tasks, *self._workers.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self._workers.clear()

    def refs_recorded(self, job_id: int) -> None:
        """The job's message is known (or will never be): its events may go out now."""
        self._refs.setdefault(job_id, asyncio.Event()).set()

    # -- event routing ---------------------------------------------------------------------------
    async def _consume(self, stream: Any) -> None:
        async for event in stream:
            try:
                self._route(event)
            except Exception:  # one bad event must not stop delivery of the others
                log.exception("routing event %r failed", event)

    def _route(self, event: JobEvent) -> None:
        # Position changes arrive as JobQueued events from the scheduler; they are throttled per message
        # like progress.
        job_id = event.job_id
        queue = self._queues.get(job_id)
        if queue is None:
            queue = self._queues[job_id] = asyncio.Queue()
            self._workers[job_id] = asyncio.create_task(self._job_worker(job_id, queue),
                                                        name=f"atelier-job-{job_id}")
        queue.put_nowait(event)

    async def _job_worker(self, job_id: int, queue: asyncio.Queue[JobEvent | None]) -> None:
        """Edits one job's message in event order. Progress is throttled with a trailing edge: an update
        that arrives too soon is held and shown when the interval is over, unless a newer one replaces it
        or the job finishes first."""
        pending: JobEvent | None = None
        try:
            await self._wait_for_refs(job_id)
            while True:
                if pending is None:
                    event: JobEvent | None = await queue.get()
                else:
                    wait = self._last_edit.get(job_id, 0.0) + EDIT_INTERVAL_S - time.monotonic()
                    try:
                        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that
                        # lands as the get completes, leaving stop() waiting on this task forever.
                        async with asyncio.timeout(max(wait, 0.0)):
                            event = await queue.get()
                    except TimeoutError:
                        event, pending = pending, None
                        await self._safely(self._update, job_id, event)
                        continue
                if event is None:
                    return
                if isinstance(event, JobDone | JobFailed | JobCancelled):
                    await self._safely(self.deliver, job_id)
                    return
                if isinstance(event, JobRendered):
                    # Not throttled: the member is waiting for exactly this; any held progress is stale.
                    pending = None
                    await self._safely(self._show_rendered, job_id, event)
                    continue
                if isinstance(event, JobProgress) and event.step >= event.total:
                    # The render's last step: its grid follows at once (JobRendered), and an edit sent
                    # now would only make that one wait for it.
                    continue
                if time.monotonic() - self._last_edit.get(job_id, 0.0) < EDIT_INTERVAL_S:
                    pending = event
                    continue
                pending = None
                await self._safely(self._update, job_id, event)
        finally:
            self._queues.pop(job_id, None)
            self._workers.pop(job_id, None)
            self._refs.pop(job_id, None)
            self._last_edit.pop(job_id, None)
            self._shown_position.pop(job_id, None)

    async def _safely(self, action: Any, *args: Any) -> None:
        try:
            await action(*args)
        except Exception:  # Discord trouble: progress is dropped, results are retried by the sweep
            log.exception("delivery step %s%r failed", getattr(action, "__name__", action), args)

    async def _wait_for_refs(self, job_id: int) -> None:
        job = await self.bot.services.db.jobs.get(job_id)
        if job is None or job.message_id is not None:
            return
        event = self._refs.setdefault(job_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REFS_WAIT_S):
                await event.wait()

    async def _update(self, job_id: int, event: JobEvent) -> None:
        """Show a non-final state (queued position, rendering progress with a preview)."""
        job = await self.bot.services.db.jobs.get(job_id)
        if job is None or job.finished or job.message_id is None:
            return
        if job.interaction_token is not None and not token_alive(job.token_expires_at):
            return  # progress after token expiry is not worth a channel message
        request = RenderRequest.from_json(job.request)
        if isinstance(event, JobQueued):
            if self._shown_position.get(job_id) == (event.position, event.paused):
                return
            self._shown_position[job_id] = (event.position, event.paused)
            shown = presenter.queued(request, job.user_id, event)
        elif isinstance(event, JobStarted):
            shown = presenter.rendering(request, job.user_id, 0, request.steps, None)
        elif isinstance(event, JobProgress):
            preview = None
            if event.preview is not None:
                preview = await asyncio.to_thread(presenter.encode_preview, event.preview)
            shown = presenter.rendering(request, job.user_id, event.step, event.total, preview)
        else:
            return
        self._last_edit[job_id] = time.monotonic()
        await self._edit_existing(job, shown)

    async def _show_rendered(self, job_id: int, event: JobRendered) -> None:
        """The grid as soon as the render ends: the fast JPEG, edited into the job's message. Nothing is
        written here (the job is not done until its files are stored); a message that cannot be edited
        now simply waits for the final delivery."""
        job = await self.bot.services.db.jobs.get(job_id)
        if job is None or job.finished or job.message_id is None:
            return
        if job.interaction_token is not None and not token_alive(job.token_expires_at):
            return
        request = RenderRequest.from_json(job.request)
        # The policy reads the guild's settings only when the image or the prompt is NSFW.
        channel = self.bot.get_channel(job.channel_id) if job.channel_id else None
        age_restricted = bool(channel is not None and getattr(channel, "is_nsfw", lambda: False)())
        how = await nsfw_presentation(self.bot.services, job.guild_id, age_restricted, request, event.nsfw)
        if how == "block":
            return  # the final delivery says it is hidden
        shown = presenter.rendered(job_id, request, job.user_id, event.grid, spoiler=how == "spoiler")
        self._last_edit[job_id] = time.monotonic()
        await self._edit_existing(job, shown)

    # -- final delivery --------------------------------------------------------------------------
    async def deliver(self, job_id: int) -> None:
        """Show a finished job's final state and mark it delivered (once)."""
        lock = self._deliver_lock.setdefault(job_id, asyncio.Lock())
        async with lock:
            try:
                db = self.bot.services.db
                job = await db.jobs.get(job_id)
                if job is None or not job.finished or job.delivered_at is not None:
                    return
                shown = await results.final_message(self.bot, job)
                while True:
                    try:
                        await self._show(job, shown)
                        break
                    except discord.HTTPException as exc:
                        # 40005: a file over the server's upload limit, which can be lower than what
                        # discord.py predicts from the boost tier. Halve what was refused and retry.
                        biggest = max((len(data) for _, data in shown.files), default=0)
                        if exc.code != UPLOAD_TOO_LARGE or biggest <= MIN_UPLOAD_BYTES:
                            raise
                        log.info("job %s: a %d-byte file was refused as too large; shrinking",
                                 job_id, biggest)
                        shown = await results.final_message(self.bot, job, upload_limit=biggest // 2)
                await db.jobs.mark_delivered(job_id)
                log.info("job %s delivered (%s); max event-loop lag since the previous delivery %.1f ms",
                         job_id, job.status, self.bot.loop_lag.take_max() * 1000)
            finally:
                self._deliver_lock.pop(job_id, None)

    async def _show(self, job: JobRow, shown: presenter.Shown) -> None:
        """Edit the job's message into `shown`; post a new channel message if that is impossible."""
        if job.message_id is not None and await self._edit_existing(job, shown):
            return
        if job.channel_id is None:
            log.warning("job %s has no channel to deliver to", job.id)
            return
        if job.private:
            # A private result never goes to the channel: it stays in the member's gallery and /job.
            log.info("private job %s finished after its token expired; kept for /job", job.id)
            return
        channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
        try:
            message = await channel.send(shown.content, files=shown.discord_files(),
                                         view=shown.view or discord.utils.MISSING)
        except (discord.NotFound, discord.Forbidden) as exc:
            # The channel was deleted, or the bot lost access to it (or left the server): no retry can
            # change that. The result stays in the owner's gallery and in /job.
            log.warning("job %s cannot be posted to channel %s (%s %s); kept for /job and /gallery",
                        job.id, job.channel_id, exc.status, exc.text)
            return
        # From now on this channel message is the job's message: a redelivery edits it, never reposts.
        await self.bot.services.db.jobs.set_message_refs(
            job.id, interaction_token=None, token_expires_at=None, message_id=message.id,
            channel_id=job.channel_id,
        )

    async def _edit_existing(self, job: JobRow, shown: presenter.Shown) -> bool:
        """Edit the job's existing message. False when it is gone or cannot be reached any more."""
        assert job.message_id is not None
        kwargs: dict[str, Any] = {"content": shown.content, "attachments": shown.discord_files()}
        if shown.view is not None:
            kwargs["view"] = shown.view
        try:
            if job.interaction_token is not None:
                if not token_alive(job.token_expires_at):
                    return False
                webhook = discord.Webhook.partial(self.bot.application_id or 0, job.interaction_token,
                                                  client=self.bot)
                await webhook.edit_message(job.message_id, **kwargs)
            else:
                if job.channel_id is None:
                    return False
                channel = self.bot.get_partial_messageable(job.channel_id, guild_id=job.guild_id)
                await channel.get_partial_message(job.message_id).edit(**kwargs)
            return True
        except discord.NotFound:
            log.info("message of job %s is gone (deleted or token expired)", job.id)
            return False

    async def _sweep(self) -> None:
        """Deliver whatever finished but was not delivered: after a restart, or after Discord errors."""
        while True:
            try:
                await self.deliver_pending()
            except Exception:
                log.exception("delivery sweep failed")
            await asyncio.sleep(SWEEP_INTERVAL_S)

    async def deliver_pending(self) -> None:
        for job in await self.bot.services.db.jobs.list_undelivered():
            if job.id in self._workers:
                continue  # its own worker is on it
            try:
                await self.deliver(job.id)
            except Exception:
                log.exception("delivering job %s failed; will retry", job.id)
