"""The one visibility rule (storage/access.py) as the web uses it: a member stands in each guild they share
with the bot and in their own DMs, and sees there exactly what /gallery and /job show."""

from __future__ import annotations

from dataclasses import dataclass

from storage.access import Member, Viewer, can_see, member_can_see

OWNER, OTHER = 1, 2
HERE, ELSEWHERE = 10, 20


@dataclass(frozen=True)
class Job:
    user_id: int
    guild_id: int | None
    private: bool = False


def test_member_sees_what_they_would_see_in_one_of_their_places() -> None:
    owner = Member.of(OWNER, [HERE])
    neighbour = Member.of(OTHER, [HERE])
    stranger = Member.of(OTHER, [ELSEWHERE])
    public, private, dm = Job(OWNER, HERE), Job(OWNER, HERE, private=True), Job(OWNER, None)

    assert all(member_can_see(job, owner) for job in (public, private, dm))
    assert member_can_see(public, neighbour)
    assert not member_can_see(private, neighbour)
    assert not member_can_see(dm, neighbour)
    assert not any(member_can_see(job, stranger) for job in (public, private, dm))
    # Deleted: gone for everyone, the owner included.
    assert not member_can_see(public, owner, deleted=True)
    # A guild the owner no longer shares with the bot: not even their own images there.
    assert not member_can_see(public, Member.of(OWNER, [ELSEWHERE]))


def test_the_places_agree_with_the_discord_rule() -> None:
    member = Member.of(OTHER, [HERE, ELSEWHERE])
    assert list(member.places()) == [Viewer(OTHER, HERE), Viewer(OTHER, ELSEWHERE), Viewer(OTHER, None)]
    for job in (Job(OWNER, HERE), Job(OWNER, ELSEWHERE, True), Job(OTHER, None), Job(OWNER, None),
                Job(OTHER, 30)):
        assert member_can_see(job, member) == any(can_see(job, v) for v in member.places())
