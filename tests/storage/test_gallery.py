from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import Database, NewImage


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "gallery.db")
    yield database
    await database.close()


async def _done_job(db: Database, user_id: int, guild_id: int | None, prompt: str, n: int = 2) -> list[int]:
    job = await db.jobs.create(
        user_id=user_id,
        guild_id=guild_id,
        kind="txt2img",
        request={"prompt": prompt, "seeds": list(range(n))},
        batch_key="k",
    )
    await db.jobs.claim([job.id], lease_owner="w", lease_seconds=60)
    images = [NewImage(i, i, f"{job.id:064x}.png", 64, 64) for i in range(n)]
    _, rows = await db.jobs.complete(job.id, images)
    return [r.id for r in rows]


async def test_pages_are_newest_first_with_keyset_pagination(db: Database) -> None:
    ids = []
    for i in range(7):
        ids += await _done_job(db, 1, 10, f"prompt {i}")
    await _done_job(db, 2, 10, "someone else")
    await _done_job(db, 1, 11, "other guild")

    seen: list[int] = []
    before = None
    while True:
        page = await db.gallery.page(10, 1, limit=4, before_id=before)
        if not page:
            break
        seen += [r.id for r in page]
        before = page[-1].id
    assert seen == sorted(ids, reverse=True)
    assert await db.gallery.count(10, 1) == 14
    assert all(r.guild_id == 10 and r.user_id == 1 for r in await db.gallery.page(10, 1, limit=100))


async def test_favourites_and_deleted(db: Database) -> None:
    a, b = await _done_job(db, 1, 10, "castle")
    assert await db.images.set_favourite(a, True)
    assert [r.id for r in await db.gallery.page(10, 1, favourites=True)] == [a]
    assert await db.images.set_deleted(b)
    assert [r.id for r in await db.gallery.page(10, 1)] == [a]
    image = await db.images.get(b)
    assert image is not None and image.deleted
    assert await db.images.set_deleted_for_job(image.job_id, True) == 1
    assert await db.gallery.page(10, 1) == []
    assert await db.gallery.count(10, 1, favourites=True) == 0


async def test_dm_images_live_in_their_own_gallery(db: Database) -> None:
    ids = await _done_job(db, 1, None, "private sketch")
    assert [r.id for r in await db.gallery.page(None, 1)] == sorted(ids, reverse=True)
    assert await db.gallery.page(10, 1) == []
    assert [r.id for r in await db.gallery.search(None, 1, "sketch")] == sorted(ids, reverse=True)


async def test_prompt_search_matches_words_and_prefix_per_guild_and_user(db: Database) -> None:
    lighthouse = await _done_job(db, 1, 10, "A lighthouse at dusk, oil painting")
    fox = await _done_job(db, 1, 10, "a red fox in the snow")
    other_user = await _done_job(db, 2, 10, "lighthouse in fog")
    other_guild = await _done_job(db, 1, 11, "lighthouse by the sea")

    def ids(rows: list) -> set[int]:
        return {r.id for r in rows}

    assert ids(await db.gallery.search(10, 1, "lighthouse")) == set(lighthouse)
    assert ids(await db.gallery.search(10, 1, "ligh")) == set(lighthouse)  # prefix of the last word
    assert ids(await db.gallery.search(10, 1, "DUSK oil")) == set(lighthouse)
    assert ids(await db.gallery.search(10, 1, "fox snow")) == set(fox)
    assert await db.gallery.search(10, 1, "fox lighthouse") == []
    assert ids(await db.gallery.search(10, None, "lighthouse")) == set(lighthouse + other_user)
    assert ids(await db.gallery.search(11, 1, "lighthouse")) == set(other_guild)
    # Keyset pagination on search too.
    first = await db.gallery.search(10, None, "lighthouse", limit=3)
    rest = await db.gallery.search(10, None, "lighthouse", limit=3, before_id=first[-1].id)
    assert [r.id for r in first + rest] == sorted(lighthouse + other_user, reverse=True)
    # Deleted images leave the index; restored ones come back.
    await db.images.set_deleted(lighthouse[0])
    assert ids(await db.gallery.search(10, 1, "lighthouse")) == {lighthouse[1]}
    await db.images.set_deleted(lighthouse[0], False)
    assert ids(await db.gallery.search(10, 1, "lighthouse")) == set(lighthouse)


@pytest.mark.parametrize("text", ['"', "owner:g10", "fox OR", "NEAR(", "*", "a AND (b", "-fox", "ü ö"])
async def test_search_input_cannot_inject_fts_syntax(db: Database, text: str) -> None:
    await _done_job(db, 1, 10, "a red fox")
    await _done_job(db, 2, 10, "owner g10 fox")
    rows = await db.gallery.search(10, 1, text)
    assert all(r.user_id == 1 for r in rows)


async def test_stars_are_per_member_and_respect_privacy(db: Database) -> None:
    from storage.gallery_views import GalleryFilter, GalleryViews

    mine = await _done_job(db, 1, 10, "my castle")
    theirs = await _done_job(db, 2, 10, "their bridge")
    elsewhere = await _done_job(db, 2, 11, "other guild")
    views = GalleryViews(db.connection)

    def favourites(viewer: int, owner: int | None = None, search: str = "") -> GalleryFilter:
        owner = viewer if owner is None else owner
        return GalleryFilter(10, owner, owner != viewer, favourites=True, search=search, viewer_id=viewer)

    # Member 1 stars one own image and both of member 2's: toggling twice returns to none.
    assert await db.images.toggle_favourite(1, [mine[0], *theirs, *elsewhere]) is True
    assert await db.images.toggle_favourite(1, theirs) is False
    assert await db.images.toggle_favourite(1, theirs) is True
    assert await db.images.starred(1, [*mine, *theirs]) == {mine[0], *theirs}
    # The owner's own star is mirrored in images.favourite; a star from someone else is not.
    assert [(await db.images.get(i)).favourite for i in (*mine, *theirs)] == [True, False, False, False]  # type: ignore[union-attr]

    assert [r.id for r in await views.page(favourites(1))] == sorted([mine[0], *theirs], reverse=True)
    assert await views.count(favourites(2)) == 0  # member 2 starred nothing
    assert [r.id for r in await views.page(favourites(1, owner=2))] == sorted(theirs, reverse=True)
    assert [r.id for r in await views.page(favourites(1, search="bridge"))] == sorted(theirs, reverse=True)
    # Member 2's job turns private: it leaves member 1's favourites.
    await db.connection.write("UPDATE jobs SET private = 1 WHERE user_id = 2")
    assert [r.id for r in await views.page(favourites(1))] == [mine[0]]
    # A deleted image leaves every gallery, and its stars go with its row.
    assert await db.images.set_deleted(mine[0])
    assert await views.count(favourites(1)) == 0


async def test_migration_3_carries_existing_stars_over(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = await Database.open(path)
    try:
        ids = await _done_job(db, 1, 10, "old favourite")
        await db.connection.write("UPDATE images SET favourite = 1 WHERE id = ?", (ids[0],))
    finally:
        await db.close()
    # Back to the schema before stars per member (version 2, the star only in images.favourite), then
    # open again so migration 3 runs: the star is now member 1's favourite.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TABLE favourites")
    conn.execute("ALTER TABLE images DROP COLUMN deleted_at")  # and before migration 4
    conn.execute("DROP INDEX audit_actor")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    db = await Database.open(path)
    try:
        assert await db.images.starred(1, ids) == {ids[0]}
    finally:
        await db.close()
