from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import Database, NewImage
from storage.gallery import GalleryFilter, GalleryStore
from storage.images import ImageRow
from tests.storage.old_schema import old_job, old_schema


def own(guild_id: int | None, user_id: int, *, favourites: bool = False, search: str = "") -> GalleryFilter:
    """The owner's own view; favourites without a viewer are the owner's own stars."""
    return GalleryFilter(guild_id, user_id, False, favourites=favourites, search=search)


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
        page = await db.gallery.page(own(10, 1), limit=4, before=before)
        if not page:
            break
        seen += [r.id for r in page]
        before = page[-1].id
    assert seen == sorted(ids, reverse=True)
    assert await db.gallery.count(own(10, 1)) == 14
    assert all(r.guild_id == 10 and r.user_id == 1 for r in await db.gallery.page(own(10, 1), limit=100))


async def test_favourites_and_deleted(db: Database) -> None:
    a, b = await _done_job(db, 1, 10, "castle")
    assert await db.images.set_favourite(a, True)
    assert [r.id for r in await db.gallery.page(own(10, 1, favourites=True))] == [a]
    assert await db.images.set_deleted(b)
    assert [r.id for r in await db.gallery.page(own(10, 1))] == [a]
    image = await db.images.get(b)
    assert image is not None and image.deleted
    assert await db.images.set_deleted_for_job(image.job_id, True) == 1
    assert await db.gallery.page(own(10, 1)) == []
    assert await db.gallery.count(own(10, 1, favourites=True)) == 0


async def test_dm_images_live_in_their_own_gallery(db: Database) -> None:
    ids = await _done_job(db, 1, None, "private sketch")
    assert [r.id for r in await db.gallery.page(own(None, 1))] == sorted(ids, reverse=True)
    assert await db.gallery.page(own(10, 1)) == []
    assert [r.id for r in await db.gallery.page(own(None, 1, search="sketch"))] == sorted(ids, reverse=True)


async def test_prompt_search_matches_words_and_prefix_per_guild_and_user(db: Database) -> None:
    lighthouse = await _done_job(db, 1, 10, "A lighthouse at dusk, oil painting")
    fox = await _done_job(db, 1, 10, "a red fox in the snow")
    other_user = await _done_job(db, 2, 10, "lighthouse in fog")
    other_guild = await _done_job(db, 1, 11, "lighthouse by the sea")

    async def ids(guild_id: int, user_id: int, text: str) -> set[int]:
        return {r.id for r in await db.gallery.page(own(guild_id, user_id, search=text), limit=100)}

    assert await ids(10, 1, "lighthouse") == set(lighthouse)
    assert await ids(10, 1, "ligh") == set(lighthouse)  # prefix of the last word
    assert await ids(10, 1, "DUSK oil") == set(lighthouse)
    assert await ids(10, 1, "fox snow") == set(fox)
    assert await ids(10, 1, "fox lighthouse") == set()
    assert await ids(10, 2, "lighthouse") == set(other_user)
    assert await ids(11, 1, "lighthouse") == set(other_guild)
    assert await db.gallery.count(own(10, 1, search="lighthouse")) == 2
    # Keyset pagination on search too, both ways.
    more = await _done_job(db, 1, 10, "lighthouse again", n=3)
    mine = sorted(lighthouse + more, reverse=True)
    first = await db.gallery.page(own(10, 1, search="lighthouse"), limit=3)
    rest = await db.gallery.page(own(10, 1, search="lighthouse"), limit=3, before=first[-1].id)
    assert [r.id for r in first + rest] == mine
    back = await db.gallery.page(own(10, 1, search="lighthouse"), limit=3, after=rest[0].id)
    assert back == first
    # Deleted images leave the index; restored ones come back.
    await db.images.set_deleted(lighthouse[0])
    assert await ids(10, 1, "dusk") == {lighthouse[1]}
    await db.images.set_deleted(lighthouse[0], False)
    assert await ids(10, 1, "dusk") == set(lighthouse)


@pytest.mark.parametrize("text", ['"', "owner:g10", "fox OR", "NEAR(", "*", "a AND (b", "-fox", "ü ö"])
async def test_search_input_cannot_inject_fts_syntax(db: Database, text: str) -> None:
    await _done_job(db, 1, 10, "a red fox")
    await _done_job(db, 2, 10, "owner g10 fox")
    rows = await db.gallery.page(own(10, 1, search=text))
    assert all(r.user_id == 1 for r in rows)


async def test_stars_are_per_member_and_respect_privacy(db: Database) -> None:
    mine = await _done_job(db, 1, 10, "my castle")
    theirs = await _done_job(db, 2, 10, "their bridge")
    elsewhere = await _done_job(db, 2, 11, "other guild")
    views = db.gallery

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
    # A database at the schema before stars per member (version 2, the star only in images.favourite);
    # opening it runs migration 3 (and the later ones): the star is now member 1's favourite.
    path = tmp_path / "old.db"
    with old_schema(path, 2) as conn:
        ids = old_job(conn, 1, 10, "old favourite", private=False, favourite=[True, False])
    db = await Database.open(path)
    try:
        assert await db.images.starred(1, ids) == {ids[0]}
    finally:
        await db.close()


async def _recount(db: Database) -> dict[tuple[int, int], tuple[int, int]]:
    """What the counter table must hold, counted the slow way (with the join the counters replace)."""
    rows = await db.connection.fetchall(
        """SELECT images.guild_id, images.user_id, sum(images.deleted = 0),
                  sum(images.deleted = 0 AND jobs.private = 0)
           FROM images JOIN jobs ON jobs.id = images.job_id GROUP BY 1, 2""")
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


async def _counters(db: Database) -> dict[tuple[int, int], tuple[int, int]]:
    """The counter table; and every star's copy of its image's guild, owner, privacy and deletion
    must equal the image's, checked here too as it follows the same changes."""
    stale = await db.connection.fetchone(
        """SELECT count(*) FROM favourites JOIN images ON images.id = favourites.image_id
           WHERE (favourites.guild_id, favourites.owner_id, favourites.private, favourites.deleted)
                 IS NOT (images.guild_id, images.user_id, images.private, images.deleted)""")
    assert stale is not None and stale[0] == 0, "a star's copy of its image differs from the image"
    rows = await db.connection.fetchall("SELECT guild_id, user_id, visible, public FROM gallery_counts")
    return {(r[0], r[1]): (r[2], r[3]) for r in rows if r[2] or r[3]}


async def test_counters_and_privacy_follow_every_change(db: Database) -> None:
    """The per-owner counters and the privacy copied onto image rows stay equal to a recount through
    jobs after inserts, private jobs, soft deletes and restores, privacy changes and hard deletes."""
    a = await _done_job(db, 1, 10, "one", n=4)
    secret = await db.jobs.create(user_id=1, guild_id=10, kind="txt2img", request={"prompt": "secret"},
                                  batch_key="k", private=True)
    await db.jobs.claim([secret.id], lease_owner="w", lease_seconds=60)
    _, hidden = await db.jobs.complete(secret.id, [NewImage(i, i, f"{i:064x}.png", 64, 64) for i in range(2)])
    await _done_job(db, 2, 10, "two", n=3)
    await _done_job(db, 1, None, "dm", n=1)
    await db.images.toggle_favourite(2, [*a, hidden[1].id])  # member 2 stars what they can see and more
    await db.images.toggle_favourite(1, [a[1], hidden[1].id])
    assert await _counters(db) == await _recount(db) == {(10, 1): (6, 4), (10, 2): (3, 3), (0, 1): (1, 1)}

    theirs = GalleryFilter(10, 1, True, viewer_id=2)
    assert {r.id for r in await db.gallery.page(theirs)} == set(a)  # never the private job's images
    assert await db.gallery.visible(hidden[0].id, 10, 2) is None
    assert await db.gallery.visible(hidden[0].id, 10, 1) is not None

    async def found(text: str, public: bool) -> tuple[int, set[int]]:
        """What a search shows: its count, and its rows."""
        f = GalleryFilter(10, 1, public, search=text, viewer_id=2 if public else 1)
        return await db.gallery.count(f), {r.id for r in await db.gallery.page(f, limit=100)}

    assert await found("secret", True) == (0, set())
    assert await found("secret", False) == (2, {r.id for r in hidden})
    assert await found("one", True) == (4, set(a))

    await db.images.set_deleted(a[0])
    await db.images.set_deleted(hidden[0].id)
    await db.images.set_deleted(a[0])  # a repeat changes nothing
    assert await _counters(db) == await _recount(db)
    first = await db.images.get(a[1])
    assert first is not None
    await db.connection.write("UPDATE jobs SET private = 1 WHERE id = ?", (first.job_id,))
    assert await _counters(db) == await _recount(db) == {(10, 1): (4, 0), (10, 2): (3, 3), (0, 1): (1, 1)}
    assert await db.gallery.page(theirs) == [] and await db.gallery.count(theirs) == 0
    assert await found("one", True) == (0, set()) and await found("one", False) == (3, set(a[1:]))
    await db.connection.write("UPDATE jobs SET private = 0")
    await db.images.set_deleted(a[0], False)
    assert await _counters(db) == await _recount(db) == {(10, 1): (5, 5), (10, 2): (3, 3), (0, 1): (1, 1)}
    assert await db.gallery.count(theirs) == 5
    assert await found("secret", True) == (1, {hidden[1].id})
    assert await found("one", True) == (4, set(a))
    await db.connection.write("DELETE FROM jobs WHERE id = ?", (secret.id,))  # cascades to its images
    assert await _counters(db) == await _recount(db) == {(10, 1): (4, 4), (10, 2): (3, 3), (0, 1): (1, 1)}


async def test_sheets_seek_by_cursor_and_fall_back_to_offset(db: Database) -> None:
    """Walking a gallery sheet by sheet with the cursors the ◀ ▶ buttons carry shows the same pages as
    numbered offsets, in every view; a cursor made stale by a deletion still lands on the right page."""
    store: GalleryStore = db.gallery
    ids: list[int] = []
    for i in range(8):
        ids += await _done_job(db, 1, 10, f"a {'red' if i % 2 else 'blue'} boat {i}", n=3)
    starred = ids[::2]
    await db.images.toggle_favourite(2, starred)
    views = [own(10, 1), GalleryFilter(10, 1, True, viewer_id=2),
             GalleryFilter(10, 1, True, favourites=True, viewer_id=2), own(10, 1, search="red boat"),
             GalleryFilter(10, 2, False, favourites=True, viewer_id=2)]
    for f in views:
        total = await store.count(f)
        pages = (total + 3) // 4
        by_offset = [await store.page(f, offset=p * 4, limit=4) for p in range(pages)]
        assert sum(len(p) for p in by_offset) == total > 4, f
        sheet = await store.sheet(f, 0, per_page=4)
        walked = [sheet.rows]
        while sheet.page < sheet.pages - 1:
            sheet = await store.sheet(f, sheet.page + 1, per_page=4, before=sheet.rows[-1].id)
            walked.append(sheet.rows)
        assert walked == by_offset, f
        back = [sheet.rows]
        while sheet.page > 0:
            sheet = await store.sheet(f, sheet.page - 1, per_page=4, after=sheet.rows[0].id)
            back.append(sheet.rows)
        assert back[::-1] == by_offset, f

    def id_list(rows: list[ImageRow]) -> list[int]:
        return [r.id for r in rows]

    newest = sorted(ids, reverse=True)
    second = await store.sheet(own(10, 1), 1, per_page=4, before=newest[3])
    assert id_list(second.rows) == newest[4:8] and (second.page, second.pages, second.total) == (1, 6, 24)
    # An image the member saw on page 2 is deleted before they press ▶: the seek continues right after
    # what they saw (no image skipped, as an offset would).
    await db.images.set_deleted(newest[5])
    third = await store.sheet(own(10, 1), 2, per_page=4, before=newest[7])
    assert id_list(third.rows) == newest[8:12] and third.total == 23
    # New images arrive while a member sits on what was the last page: a seek past its end finds
    # nothing though the numbers say page 6 is full now, so the page is read by number instead.
    added = await _done_job(db, 1, 10, "new", n=6)
    now = [*added[::-1], *(i for i in newest if i != newest[5])]
    sixth = await store.sheet(own(10, 1), 5, per_page=4, before=newest[-1])
    assert id_list(sixth.rows) == now[20:24] and (sixth.pages, sixth.total) == (8, 29)
    # A page past the end (images removed meanwhile) is clamped to the last one.
    last = await store.sheet(own(10, 1), 9, per_page=4, before=newest[0])
    assert (last.page, id_list(last.rows)) == (7, now[28:])
    assert (await store.sheet(own(10, 3), 0)).total == 0


async def test_migration_5_copies_privacy_and_counts_existing_images(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with old_schema(path, 4) as conn:  # privacy lives only on the job
        public = old_job(conn, 1, 10, "a public boat", private=False, favourite=[False] * 3, deleted=0)
        private = old_job(conn, 1, 10, "a private boat", private=True, favourite=[False] * 2)
        for image_id in (*public, private[0]):
            conn.execute("INSERT INTO favourites (user_id, image_id, created_at) VALUES (2, ?, 0)",
                         (image_id,))
    db = await Database.open(path)
    try:
        assert await _counters(db) == await _recount(db) == {(10, 1): (4, 2)}
        theirs = GalleryFilter(10, 1, True, viewer_id=2)
        assert [r.id for r in await db.gallery.page(theirs)] == public[:0:-1]
        # The search index was rebuilt with the public token: another member finds only public images.
        found = GalleryFilter(10, 1, True, search="boat", viewer_id=2)
        assert [r.id for r in await db.gallery.page(found)] == public[:0:-1]
        assert await db.gallery.count(found) == 2
        assert await db.gallery.count(own(10, 1, search="boat")) == 4
        # Member 2's stars: only the public images that are not deleted, also searched.
        stars = GalleryFilter(10, 2, False, favourites=True, viewer_id=2)
        assert [r.id for r in await db.gallery.page(stars)] == public[:0:-1]
        assert await db.gallery.count(stars) == 2
        searched = GalleryFilter(10, 2, False, favourites=True, search="boat", viewer_id=2)
        assert await db.gallery.count(searched) == 2
        # The triggers work on the migrated file too.
        await db.connection.write("UPDATE jobs SET private = 0")
        assert await _counters(db) == await _recount(db) == {(10, 1): (4, 4)}
        assert await db.gallery.count(found) == 4
        assert await db.gallery.count(stars) == 3
        await db.images.set_deleted(private[0])
        assert await db.gallery.count(found) == 3 == await db.gallery.count(own(10, 1, search="boat"))
    finally:
        await db.close()
