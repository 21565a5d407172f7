"""Fairness of the fair order as properties of the pure structure: for any arrival pattern (hypothesis).

The scheduler-level properties (caps through the database) are in test_scheduler_fairness.py."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise

from hypothesis import example, given, settings
from hypothesis import strategies as st

from generation.fair_queue import FairQueue, Ticket

# An op is either a submission (user, batch key, images) or a dispatch of the next batch.
submit_op = st.tuples(st.just("submit"), st.integers(0, 4), st.sampled_from("ab"), st.integers(1, 3))
take_op = st.tuples(st.just("take"), st.just(0), st.just(""), st.just(0))
ops_strategy = st.lists(st.one_of(submit_op, submit_op, take_op), max_size=80)


def _drive(
    ops: list[tuple[str, int, str, int]], max_images: int, weights: Sequence[float] = (1.0,) * 5,
    blocked_at: list[set[str]] | None = None,
) -> tuple[list[list[Ticket]], dict[int, int], list[tuple[set[int], set[int]]]]:
    """Run the ops, then drain. Returns the batches; for each job submitted while its user had
    nothing else queued, the index of the batch that was current at its arrival; and for each batch,
    the users with a job queued just before it was taken and just after.

    ("block", 0, key, 0) / ("unblock", 0, key, 0): from then on jobs with that batch key have no free
    renderer (the capacity a take is given). The drain unblocks everything. When `blocked_at` is given
    it receives, per batch, the keys that were blocked at any moment since the batch before."""
    fair = FairQueue()
    batches: list[list[Ticket]] = []
    lonely: dict[int, int] = {}
    queued: list[tuple[set[int], set[int]]] = []
    blocked: set[str] = set()
    since_last: set[str] = set()
    heads: dict[int, list[Ticket]] = {}

    def take() -> list[Ticket]:
        nonlocal since_last
        before = {u for u in range(len(weights)) if fair.count_for(u)}
        batch = fair.take(max_images, runnable=lambda t: t.batch_key not in blocked)
        if batch:
            assert all(t.batch_key not in blocked for t in batch)  # only what can start now
            batches.append(batch)
            queued.append((before, {u for u in range(len(weights)) if fair.count_for(u)}))
            if blocked_at is not None:
                blocked_at.append(since_last | blocked)
            since_last = set(blocked)
            for t in batch:
                heads[t.user_id].remove(t)
        else:
            # A model without capacity never blocks the others: nothing was taken only because no
            # member's next job can start.
            assert all(mine[0].batch_key in blocked for mine in heads.values() if mine), (heads, blocked)
        return batch

    next_id = 1
    for op, user, key, images in ops:
        if op == "submit":
            if fair.count_for(user) == 0:
                lonely[next_id] = len(batches)
            ticket = Ticket(next_id, user, key, images, weights[user])
            fair.add(ticket)
            heads.setdefault(user, []).append(ticket)
            next_id += 1
        elif op == "block":
            blocked.add(key)
            since_last.add(key)
        elif op == "unblock":
            blocked.discard(key)
        else:
            take()
    blocked.clear()
    while take():
        pass
    assert len(fair) == 0
    return batches, lonely, queued


# A user served this round who submits again must wait for the next round, even as a companion.
REJOIN = [
    ("submit", 0, "a", 2),
    ("submit", 1, "a", 3),
    ("submit", 2, "b", 1),
    ("submit", 3, "a", 1),
    ("take", 0, "", 0),
    ("submit", 3, "a", 1),
]


@settings(max_examples=1500, deadline=None)
@given(ops=ops_strategy, max_images=st.integers(0, 6))
@example(ops=REJOIN, max_images=4)
def test_a_lonely_job_waits_behind_at_most_one_job_of_each_other_user(
    ops: list[tuple[str, int, str, int]], max_images: int
) -> None:
    batches, lonely, _ = _drive(ops, max_images)
    batch_of = {t.job_id: i for i, batch in enumerate(batches) for t in batch}
    owner = {t.job_id: t.user_id for batch in batches for t in batch}
    for job_id, arrived in lonely.items():
        ahead = Counter(
            t.user_id
            for batch in batches[arrived : batch_of[job_id]]
            for t in batch
            if t.user_id != owner[job_id]
        )
        assert all(n <= 1 for n in ahead.values()), (job_id, ahead)


# Per-user weights, as role priorities give them (MIN_WEIGHT 0.1 up to well above 1).
weights_strategy = st.lists(st.sampled_from([0.1, 0.25, 0.5, 1.0, 1.0, 1.0, 1.5, 2.0, 3.0]), min_size=5,
                            max_size=5)


@settings(max_examples=1500, deadline=None)
@given(ops=ops_strategy, max_images=st.integers(0, 6), weights=weights_strategy)
@example(ops=[("submit", u, "ab"[u % 2], 1) for u in (0, 0, 0, 1, 1, 2, 3, 3, 4)], max_images=2,
         weights=[0.25, 3.0, 1.0, 1.5, 1.0])
def test_no_member_is_starved_whatever_the_weights(
    ops: list[tuple[str, int, str, int]], max_images: int, weights: list[float]
) -> None:
    """Starvation bound, for members with one job or several queued: from the moment a member u
    (weight w_u) waits, on arrival or with jobs left after being served, until their next job starts,
    each other member v starts at most ceil(w_v * R) jobs, R = ceil(1 / w_u) being the rounds u may
    need to earn a turn; so at most the sum of those over the members active meanwhile dispatches go
    by (with weights 1: one job each, at most active members - 1 dispatches). Batching only merges
    dispatches, so it cannot make this worse."""
    batches, lonely, queued = _drive(ops, max_images, weights)
    _check_starvation_bound(batches, lonely, queued, weights)


def _check_starvation_bound(
    batches: list[list[Ticket]], lonely: dict[int, int], queued: list[tuple[set[int], set[int]]],
    weights: Sequence[float], blocked_at: list[set[str]] | None = None,
) -> None:
    batch_of = {t.job_id: i for i, batch in enumerate(batches) for t in batch}
    ticket = {t.job_id: t for batch in batches for t in batch}
    # (member, first batch they waited through, the batch that served them)
    waits = [(ticket[job_id].user_id, arrived, batch_of[job_id]) for job_id, arrived in lonely.items()]
    for u in range(len(weights)):
        served = [i for i, batch in enumerate(batches) if any(t.user_id == u for t in batch)]
        waits += [(u, b1 + 1, b2) for b1, b2 in pairwise(served) if u in queued[b1][1]]
    for u, start, end in waits:
        if blocked_at is not None:
            # While their job had no free renderer the member waits as long as that lasts; the bound
            # counts from the first batch taken after its model had capacity again (a kept turn).
            key = next(t.batch_key for t in batches[end] if t.user_id == u)
            held = [i for i in range(start, end + 1) if key in blocked_at[i]]
            if held:
                start = held[-1] + 1
                if start > end:
                    continue
        rounds = math.ceil(1 / weights[u])
        active = set().union(*(queued[b][0] for b in range(start, end + 1))) - {u}
        passed = Counter(t.user_id for batch in batches[start:end] for t in batch if t.user_id != u)
        assert set(passed) <= active
        for v in active:
            assert passed[v] <= math.ceil(weights[v] * rounds), (u, v, passed, weights)
        assert end - start <= sum(math.ceil(weights[v] * rounds) for v in active), (u, start, end, weights)


@settings(max_examples=300, deadline=None)
@given(ops=ops_strategy, max_images=st.integers(0, 8))
def test_batches_are_well_formed_and_every_job_runs_once_in_user_order(
    ops: list[tuple[str, int, str, int]], max_images: int
) -> None:
    batches, _, _ = _drive(ops, max_images)
    submitted = sum(1 for op in ops if op[0] == "submit")
    taken = [t for batch in batches for t in batch]
    assert sorted(t.job_id for t in taken) == list(range(1, submitted + 1))
    for batch in batches:
        assert len({t.batch_key for t in batch}) == 1
        assert len({t.user_id for t in batch}) == len(batch)  # companions come from other users
        if len(batch) > 1:
            assert sum(t.images for t in batch) <= max_images
    per_user: dict[int, list[int]] = {}
    for t in taken:
        per_user.setdefault(t.user_id, []).append(t.job_id)
    assert all(ids == sorted(ids) for ids in per_user.values())  # each user's oldest job first


@settings(max_examples=200, deadline=None)
@given(ops=ops_strategy, removals=st.lists(st.integers(1, 60), max_size=10))
def test_order_predicts_unbatched_dispatch(ops: list[tuple[str, int, str, int]], removals: list[int]) -> None:
    fair = FairQueue()
    next_id = 1
    for op, user, key, images in ops:
        if op == "submit":
            fair.add(Ticket(next_id, user, key, images))
            next_id += 1
        else:
            fair.take(4)
    for job_id in removals:
        fair.remove(job_id)
    predicted = [t.job_id for t in fair.order()]
    actual = []
    while batch := fair.take(0):
        actual += [t.job_id for t in batch]
    assert predicted == actual


def test_round_robin_example_and_weights() -> None:
    fair = FairQueue()
    for job_id, user in enumerate([1, 1, 1, 2, 3, 3], start=1):
        fair.add(Ticket(job_id, user, "k"))
    assert [t.job_id for t in fair.order()] == [1, 4, 5, 2, 6, 3]

    weighted = FairQueue()
    for job_id in range(1, 5):
        weighted.add(Ticket(job_id, 1, "k", weight=2.0))
    for job_id in range(5, 9):
        weighted.add(Ticket(job_id, 2, "k"))
    # Weight 2: two turns per round.
    assert [t.user_id for t in weighted.order()] == [1, 1, 2, 1, 1, 2, 2, 2]


def test_batch_takes_companions_from_this_round_only() -> None:
    fair = FairQueue()
    fair.add(Ticket(1, 1, "a"))
    fair.add(Ticket(2, 2, "b"))
    fair.add(Ticket(3, 3, "a"))
    fair.add(Ticket(4, 1, "a"))  # user 1's second job: next round, cannot ride along
    assert [t.job_id for t in fair.take(4)] == [1, 3]
    assert [t.job_id for t in fair.take(4)] == [2]
    assert [t.job_id for t in fair.take(4)] == [4]


# Capacity changes between dispatches: a model's renderers all busy (block) or free again (unblock).
block_op = st.tuples(st.sampled_from(["block", "unblock"]), st.just(0), st.sampled_from("ab"), st.just(0))
capacity_ops = st.lists(st.one_of(submit_op, submit_op, take_op, take_op, block_op), max_size=80)


@settings(max_examples=1500, deadline=None)
@given(ops=capacity_ops, max_images=st.integers(0, 6), weights=weights_strategy)
@example(ops=[("submit", 0, "a", 1), ("submit", 1, "b", 1), ("submit", 1, "b", 1), ("block", 0, "a", 0),
              ("take", 0, "", 0), ("take", 0, "", 0), ("unblock", 0, "a", 0), ("submit", 2, "b", 1)],
         max_images=0, weights=[1.0] * 5)
# Held for two rounds, then free again: the held turn must not have banked a second one.
@example(ops=[*[("submit", 0, "a", 1)] * 3, *[("submit", 1, "b", 1)] * 3, ("block", 0, "a", 0),
              ("take", 0, "", 0), ("take", 0, "", 0), ("unblock", 0, "a", 0), ("submit", 2, "b", 1)],
         max_images=0, weights=[1.0] * 5)
def test_with_per_model_capacity_no_member_is_starved_and_no_model_blocks_another(
    ops: list[tuple[str, int, str, int]], max_images: int, weights: list[float]
) -> None:
    """Several renderers, each model with its own capacity: a take starts only a job whose model has a
    free renderer, and takes nothing only when no member's next job can start (asserted in _drive). A
    member whose model had capacity all along keeps the starvation bound above; one whose model had
    none keeps their turn: once it has capacity again, the same bound holds from there."""
    blocked_at: list[set[str]] = []
    batches, lonely, queued = _drive(ops, max_images, weights, blocked_at)
    _check_starvation_bound(batches, lonely, queued, weights, blocked_at)


@settings(max_examples=300, deadline=None)
@given(ops=capacity_ops, max_images=st.integers(0, 8))
def test_with_per_model_capacity_every_job_runs_once_in_user_order(
    ops: list[tuple[str, int, str, int]], max_images: int
) -> None:
    batches, _, _ = _drive(ops, max_images)
    taken = [t for batch in batches for t in batch]
    assert sorted(t.job_id for t in taken) == list(range(1, sum(op[0] == "submit" for op in ops) + 1))
    for batch in batches:
        assert len({t.batch_key for t in batch}) == 1 and len({t.user_id for t in batch}) == len(batch)
    per_user: dict[int, list[int]] = {}
    for t in taken:
        per_user.setdefault(t.user_id, []).append(t.job_id)
    assert all(ids == sorted(ids) for ids in per_user.values())


def test_a_held_turn_is_kept_not_skipped() -> None:
    fair = FairQueue()
    fair.add(Ticket(1, 1, "xl"))
    for job_id, user in [(2, 2), (3, 3), (4, 2), (5, 3)]:
        fair.add(Ticket(job_id, user, "sd"))
    no_xl = lambda t: t.batch_key != "xl"  # noqa: E731
    assert [t.job_id for t in fair.take(0, no_xl)] == [2]  # user 1 cannot start: user 2 goes
    assert [t.job_id for t in fair.take(0, no_xl)] == [3]
    assert [t.job_id for t in fair.take(0, no_xl)] == [4]  # the next round starts behind user 1
    # The xl model has a renderer again: user 1's kept turn comes before user 3's second job.
    assert [t.job_id for t in fair.take(0)] == [1]
    assert [t.job_id for t in fair.take(0)] == [5]


def test_nothing_starts_while_no_job_can_and_nothing_is_lost() -> None:
    fair = FairQueue()
    fair.add(Ticket(1, 1, "xl"))
    fair.add(Ticket(2, 2, "xl"))
    assert fair.take(4, lambda t: False) == []
    assert len(fair) == 2
    assert [t.job_id for t in fair.take(4)] == [1, 2]
