"""The fair order of queued jobs: a pure data structure, no I/O, no clock.

Fair order: round-robin across users, in rounds, with optional weights.

Users wait in a *round*: `_current` holds the users still to be served this round (in turn
order), `_next` those already served (they go again next round). A user's oldest job is their
turn. A newcomer joins the end of the current round unless they were already served in it, so:
a user with one job waits behind at most one job of each other user (round-robin).

Weights (priority per role) are deficit round-robin credits: each round a user gains `weight`
credits and each job costs one, so weight 2 means two jobs per round and 0.5 one every second
round. With weights a user waits behind at most ceil(weight) jobs of each other user.

Batching: the picked job may take companions with the same batch key from the *current round*
only (the other users' turns at the front of the queue), each spending its user's turn, and a
companion never passes a user who started waiting after that companion was last served. Nobody
is served twice in one round and nobody jumps a returning user twice, so batching keeps the
guarantee above (checked by the hypothesis tests in tests/generation/test_fair_queue.py). The batch
is capped in images (`max_images`), not jobs, since images are what a pipeline call must hold in memory.

Capacity (several renderers, each serving some models): `take(runnable=...)` serves the first user of
the current round whose next job can start now. A user whose job cannot (no free renderer for its
model) keeps its turn: it stays at the front of the round, and when only such users are left the next
round begins behind them, so a model without capacity never blocks the others. A held turn banks no
extra credit, so once its model has capacity again that user still goes at most once per round.
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Ticket:
    """What the fair order needs to know about one queued job."""

    job_id: int
    user_id: int
    batch_key: str
    images: int = 1
    weight: float = 1.0


MIN_WEIGHT = 0.1
MAX_WEIGHT = 10.0


class FairQueue:
    def __init__(self) -> None:
        self._jobs: dict[int, deque[Ticket]] = {}
        self._current: list[int] = []
        self._next: list[int] = []
        self._credit: dict[int, float] = {}
        self._served_round: dict[int, int] = {}
        # A logical clock orders "started waiting" and "was served" events across users.
        self._clock = 0
        self._waiting_since: dict[int, int] = {}
        self._last_served: dict[int, int] = {}
        self._round = 0
        self._where: dict[int, Ticket] = {}

    # -- membership -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._where

    def get(self, job_id: int) -> Ticket | None:
        return self._where.get(job_id)

    def count_for(self, user_id: int) -> int:
        return len(self._jobs.get(user_id, ()))

    def add(self, ticket: Ticket) -> None:
        """Jobs of one user must be added oldest first."""
        if ticket.job_id in self._where:
            return
        self._where[ticket.job_id] = ticket
        user = ticket.user_id
        queue = self._jobs.get(user)
        if queue is not None:
            queue.append(ticket)
            return
        self._jobs[user] = deque([ticket])
        self._waiting_since[user] = self._tick()
        if self._served_round.get(user) == self._round:
            self._next.append(user)
        else:
            self._current.append(user)
            self._credit[user] = self._credit.get(user, 0.0) + _weight(ticket)

    def remove(self, job_id: int) -> bool:
        ticket = self._where.pop(job_id, None)
        if ticket is None:
            return False
        queue = self._jobs[ticket.user_id]
        queue.remove(ticket)
        if not queue:
            self._drop_user(ticket.user_id)
        return True

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    def _drop_user(self, user: int) -> None:
        del self._jobs[user]
        del self._waiting_since[user]
        if user in self._current:
            self._current.remove(user)
        if user in self._next:
            self._next.remove(user)
        # Idle users do not bank credit.
        self._credit.pop(user, None)

    # -- picking --------------------------------------------------------------------------------

    def _ensure_round(self) -> bool:
        """Make sure the current round has a user with a credit to spend; False when empty."""
        while True:
            while self._current and self._credit.get(self._current[0], 0.0) < 1.0 - 1e-9:
                # Not enough credit this round (weight < 1): wait for the next one.
                self._next.append(self._current.pop(0))
            if self._current:
                return True
            if not self._next:
                return False
            self._new_round()

    def _new_round(self) -> None:
        """Start the next round. Users still in the current one (their jobs could not start: held turns)
        stay in front; one with a credit to spend gains none, so a held turn is kept, never banked."""
        held = self._current
        self._round += 1
        # Nobody has been served in the new round yet.
        self._served_round.clear()
        # Service older than every waiting user can no longer matter (see take()).
        oldest = min(self._waiting_since.values(), default=self._clock)
        self._last_served = {u: t for u, t in self._last_served.items() if t >= oldest}
        self._current, self._next = held + self._next, []
        for user in self._current:
            if user in held and self._has_credit(user):
                continue
            self._credit[user] = self._credit.get(user, 0.0) + _weight(self._jobs[user][0])

    def _has_credit(self, user: int) -> bool:
        return self._credit.get(user, 0.0) >= 1.0 - 1e-9

    def _first_runnable(self, runnable: Callable[[Ticket], bool] | None) -> int | None:
        """The user whose turn it is among those whose next job can start; None if nobody's can."""
        if runnable is None:
            return self._current[0]
        # Rounds needed to give a runnable user a credit: each round adds at least MIN_WEIGHT.
        for _ in range(math.ceil(1 / MIN_WEIGHT) + 1):
            for user in self._current:
                if self._has_credit(user) and runnable(self._jobs[user][0]):
                    return user
            if not any(runnable(self._jobs[u][0]) for u in (*self._current, *self._next)):
                return None
            self._new_round()
        return None

    def _serve(self, user: int) -> Ticket:
        ticket = self._jobs[user].popleft()
        del self._where[ticket.job_id]
        self._credit[user] = self._credit.get(user, 0.0) - 1.0
        self._served_round[user] = self._round
        self._last_served[user] = self._tick()
        if not self._jobs[user]:
            self._drop_user(user)
        elif self._credit[user] < 1.0 - 1e-9:
            self._current.remove(user)
            self._next.append(user)
        return ticket

    def take(self, max_images: int = 0, runnable: Callable[[Ticket], bool] | None = None) -> list[Ticket]:
        """Remove and return the next batch: the next turn's job first, then companions with the
        same batch key from other users' turns this round while the batch holds at most
        `max_images` images (the first job always runs, whatever its size). With `runnable`, only a
        job it accepts can start a batch (see the module docstring); [] when none can."""
        if runnable is not None and not any(runnable(mine[0]) for mine in self._jobs.values()):
            # Nothing changes while nothing can start: the round goes on exactly as it would have.
            return []
        if not self._ensure_round():
            return []
        first_user = self._first_runnable(runnable)
        if first_user is None:
            return []
        first = self._serve(first_user)
        batch = [first]
        images = first.images
        # A companion passes the users it skips. It may do so only if it has not been served since
        # each of them started waiting: otherwise someone who came back this round would see the
        # same user go ahead of them twice (once last round, once now as a companion).
        skipped_since = math.inf
        for user in list(self._current):
            if user == first_user or user not in self._current:
                continue
            head = self._jobs[user][0]
            fits = head.batch_key == first.batch_key and images + head.images <= max_images
            if (
                fits
                and self._credit.get(user, 0.0) >= 1.0 - 1e-9
                and self._last_served.get(user, 0) < skipped_since
            ):
                batch.append(self._serve(user))
                images += head.images
            else:
                skipped_since = min(skipped_since, self._waiting_since[user])
        return batch

    def order(self) -> list[Ticket]:
        """Every queued job in the order it will start if nothing else arrives (batches ignored)."""
        shadow = copy.deepcopy(self)
        out: list[Ticket] = []
        while True:
            batch = shadow.take(0)
            if not batch:
                return out
            out.extend(batch)


def _weight(ticket: Ticket) -> float:
    w = ticket.weight
    if not math.isfinite(w):
        return 1.0
    return min(MAX_WEIGHT, max(MIN_WEIGHT, w))
