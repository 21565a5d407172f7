"""Gallery sheets and prompt search at scale, timing exactly what /gallery does for one contact sheet.

Builds a database once (the real schema, migrations and triggers; default 1,000,000 images from
realistic prompts, a few heavy members as in real guilds, 10 % private jobs, stars per member) into a
cache file that later runs reuse, then times the store call the bot makes for one sheet,
`GalleryStore.sheet` (the page's rows plus its total), for the views a member can open: their own
gallery, another member's public view, their favourites and a prompt search, at the first, middle
and last sheet (reached the way the bot does: ◀ ▶ carry the cursor of the page they came from).

    .venv/bin/python bench/storage.py [--images 1000000] [--queries 1000] [--cache DIR]
    .venv/bin/python bench/storage.py --images 50000        # a quick run

Goals at 1 M images: a sheet p99 <= 5 ms, a search sheet p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import Database
from storage.gallery import GalleryFilter, GalleryStore
from storage.migrations import SCHEMA_VERSION

PER_PAGE = 9  # bot/extensions/gallery.py PER_PAGE (not imported: that would import discord)
FILL_VERSION = 4  # bump when fill() changes what it writes, so a stale cache is not reused

SUBJECTS = [
    "lighthouse",
    "fox",
    "castle",
    "astronaut",
    "dragon",
    "cat",
    "city",
    "forest",
    "robot",
    "ship",
    "mountain",
    "samurai",
    "garden",
    "owl",
    "train",
    "portrait of a woman",
    "old man",
    "waterfall",
    "cottage",
    "whale",
    "knight",
    "desert",
    "library",
    "market",
    "temple",
    "bridge",
    "wolf",
    "tiger",
]
ADJECTIVES = [
    "ancient",
    "tiny",
    "glowing",
    "misty",
    "cyberpunk",
    "cozy",
    "ruined",
    "floating",
    "golden",
    "frozen",
    "overgrown",
    "neon",
    "haunted",
    "serene",
    "giant",
    "steampunk",
]
PLACES = [
    "at dusk",
    "in the rain",
    "under the stars",
    "by the sea",
    "in a snowstorm",
    "at sunrise",
    "in a misty valley",
    "on mars",
    "in tokyo",
    "in the jungle",
    "underwater",
    "in autumn",
]
STYLES = [
    "oil painting",
    "watercolor",
    "35mm photo",
    "digital art",
    "studio ghibli style",
    "ukiyo-e",
    "concept art",
    "pencil sketch",
    "octane render",
    "art nouveau",
    "pixel art",
    "cinematic",
]
EXTRAS = [
    "highly detailed",
    "8k",
    "volumetric lighting",
    "trending on artstation",
    "soft light",
    "dramatic lighting",
    "bokeh",
    "wide angle",
    "sharp focus",
    "pastel colors",
]

GUILDS = 20
USERS = 4000
IMAGES_PER_JOB = 4


def prompt(rnd: random.Random) -> str:
    words = [rnd.choice(ADJECTIVES), rnd.choice(SUBJECTS), rnd.choice(PLACES)]
    words += [rnd.choice(STYLES), *rnd.sample(EXTRAS, rnd.randint(0, 3))]
    return "a " + " ".join(words[:3]) + ", " + ", ".join(words[3:])


def fill(path: Path, images: int, seed: int = 7) -> tuple[float, list[tuple[int, int, int]]]:
    """Bulk insert through plain sqlite3 (executemany, one transaction). Returns seconds taken and
    (guild, user, images) per owner."""
    rnd = random.Random(seed)
    # Activity is heavy-tailed: a few users make most images (Zipf-like weights).
    weights = [1.0 / (i + 1) ** 0.9 for i in range(USERS)]
    owners = [(1000 + (u % GUILDS), 10_000 + u) for u in range(USERS)]
    counts: dict[tuple[int, int], int] = {}
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    started = time.perf_counter()
    conn.execute("BEGIN")
    jobs = images // IMAGES_PER_JOB
    now = time.time() - 86400 * 365
    batch_jobs: list[tuple[object, ...]] = []
    batch_images: list[tuple[object, ...]] = []
    batch_stars: list[tuple[object, ...]] = []
    picks = rnd.choices(range(USERS), weights=weights, k=jobs)
    for job_id in range(1, jobs + 1):
        guild, user = owners[picks[job_id - 1]]
        text = prompt(rnd)
        created = now + job_id * 30
        request = json.dumps({"prompt": text, "seeds": [job_id * 4 + i for i in range(IMAGES_PER_JOB)]})
        private = int(rnd.random() < 0.1)
        batch_jobs.append(
            (job_id, guild, 1, user, "txt2img", request, "k", "done", 1, created, created, created + 5, 5.0,
             private)
        )
        for i in range(IMAGES_PER_JOB):
            image_id = (job_id - 1) * IMAGES_PER_JOB + i + 1  # images are inserted in this order
            # Stars: owners star ~2 % of their own images; ~1 % of public images get a star from a
            # member of the same guild (active members star most).
            if rnd.random() < 0.02:
                batch_stars.append((user, image_id, created))
            if not private and rnd.random() < 0.01:
                fan = owners[picks[rnd.randrange(jobs)]]
                if fan[0] == guild and fan[1] != user:
                    batch_stars.append((fan[1], image_id, created))
            blob = f"{job_id * 4 + i:064x}.png"
            batch_images.append(
                (
                    job_id,
                    i,
                    job_id * 4 + i,
                    blob,
                    512,
                    512,
                    int(rnd.random() < 0.02),
                    created,
                    guild,
                    user,
                    text,
                    private,
                )
            )
        counts[(guild, user)] = counts.get((guild, user), 0) + IMAGES_PER_JOB
        if len(batch_jobs) >= 20_000:
            _flush(conn, batch_jobs, batch_images, batch_stars)
    _flush(conn, batch_jobs, batch_images, batch_stars)
    # The owner's own star is mirrored in images.favourite (as ImageStore.toggle_favourite does).
    conn.execute("UPDATE images SET favourite = 1 WHERE id IN (SELECT image_id FROM favourites"
                 " JOIN images ON images.id = favourites.image_id AND images.user_id = favourites.user_id)")
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("INSERT INTO images_fts(images_fts) VALUES ('optimize')")
    conn.close()
    return time.perf_counter() - started, [(g, u, n) for (g, u), n in counts.items()]


def _flush(
    conn: sqlite3.Connection, jobs: list[tuple[object, ...]], images: list[tuple[object, ...]],
    stars: list[tuple[object, ...]],
) -> None:
    conn.executemany(
        """INSERT INTO jobs (id, guild_id, channel_id, user_id, kind, request, batch_key, status, attempts,
               created_at, started_at, finished_at, render_seconds, private)
           VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
        jobs,
    )
    conn.executemany(
        """INSERT INTO images (job_id, idx, seed, blob, width, height, nsfw, created_at, guild_id, user_id,
               prompt, private) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)""",
        images,
    )
    conn.executemany("INSERT OR IGNORE INTO favourites (user_id, image_id, created_at) VALUES (?,?,?)", stars)
    jobs.clear()
    images.clear()
    stars.clear()


Scenario = tuple[GalleryFilter, int, int | None]  # (view, page, cursor: the id the page comes after)


async def scenarios(store: GalleryStore, views: list[GalleryFilter], where: str) -> list[Scenario]:
    """For each view, the sheet a member reaches at `where` (first / middle / last) and the cursor the
    ▶ button of the sheet before it carries (read outside the timing, as the bot had it already)."""
    out: list[Scenario] = []
    for f in views:
        pages = (await store.count(f) + PER_PAGE - 1) // PER_PAGE
        page = {"first": 0, "middle": (pages - 1) // 2, "last": pages - 1}[where]
        cursor = None
        if page > 0:
            edge = await store.page(f, offset=page * PER_PAGE - 1, limit=1)
            cursor = edge[0].id
        out.append((f, page, cursor))
    return out


async def timed(n: int, make: Callable[[int], Awaitable[object]]) -> tuple[float, float, float, float]:
    """(p50 ms, p99 ms, p99 CPU ms, mean rows) over n calls. CPU time (this process, both threads) is
    what a call costs; wall time adds waiting for a core, which on a busy machine dominates the p99."""
    samples, cpu, rows = [], [], []
    for i in range(n):
        c, t = time.process_time(), time.perf_counter()
        result = await make(i)
        samples.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
        rows.append(len(getattr(result, "rows", result)) if not isinstance(result, int) else 0)
    samples.sort()
    cpu.sort()

    def p99(xs: list[float]) -> float:
        return xs[min(len(xs) - 1, int(len(xs) * 0.99))]

    return statistics.median(samples), p99(samples), p99(cpu), sum(rows) / n


async def measure(path: Path, queries: int) -> None:
    rnd = random.Random(3)
    db = await Database.open(path)
    store = db.gallery
    conn = db.connection
    owners = [(r[0], r[1], r[2]) for r in await conn.fetchall(
        "SELECT guild_id, user_id, visible FROM gallery_counts WHERE visible > 0")]
    heavy = sorted(owners, key=lambda o: -o[2])[:20]
    stars = await conn.fetchall(
        "SELECT user_id, count(*) FROM favourites GROUP BY user_id ORDER BY 2 DESC LIMIT 20")
    star_guild = {u: g for g, u, _ in owners}
    print(f"{len(owners)} owners; heaviest has {heavy[0][2]:,} images; most stars {stars[0][1]:,}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    # Members asking about themselves, picked by activity (active members browse most).
    picks = rnd.choices(owners, weights=[n for _, _, n in owners], k=queries)
    words = [w for s in SUBJECTS + ADJECTIVES + STYLES for w in s.split() if len(w) > 3]

    def mine(o: tuple[int, int, int], **kw: object) -> GalleryFilter:
        return GalleryFilter(o[0], o[1], False, viewer_id=o[1], **kw)  # type: ignore[arg-type]

    def theirs(o: tuple[int, int, int], **kw: object) -> GalleryFilter:
        return GalleryFilter(o[0], o[1], True, viewer_id=1, **kw)  # type: ignore[arg-type]

    heavy_own = [mine(o) for o in heavy]
    heavy_public = [theirs(o) for o in heavy]
    favourite = [GalleryFilter(star_guild.get(u, 0), u, False, favourites=True, viewer_id=u)
                 for u, _ in stars]
    rows_out: list[tuple[str, Callable[[int], Awaitable[object]]]] = []

    async def floor(i: int) -> object:
        return await conn.fetchall("SELECT 1")

    rows_out.append(("floor: one aiosqlite round trip (SELECT 1)", floor))

    def sheets(label: str, cases: list[Scenario]) -> None:
        async def run(i: int) -> object:
            f, page, cursor = cases[i % len(cases)]
            return await store.sheet(f, page, per_page=PER_PAGE, before=cursor)
        rows_out.append((label, run))

    sheets("own, first sheet (members by activity)", [(mine(o), 0, None) for o in picks])
    for where in ("first", "middle", "last"):
        sheets(f"own, {where} sheet (20 heaviest)", await scenarios(store, heavy_own, where))
    for where in ("first", "middle", "last"):
        sheets(f"another's public, {where} (20 heaviest)", await scenarios(store, heavy_public, where))
    for where in ("first", "middle", "last"):
        sheets(f"favourites, {where} (20 most stars)", await scenarios(store, favourite, where))
    sheets("search 1 word, own (by activity)",
           [(mine(o, search=rnd.choice(words)), 0, None) for o in picks])
    sheets("search 2 words + prefix, own (by activity)",
           [(mine(o, search=f"{rnd.choice(words)} {rnd.choice(words)[:4]}"), 0, None) for o in picks])
    sheets("search 1 word, own (20 heaviest)",
           [(mine(o, search=rnd.choice(words)), 0, None) for o in heavy for _ in range(5)])
    sheets("search 1 word, another's public (heaviest)",
           [(theirs(o, search=rnd.choice(words)), 0, None) for o in heavy for _ in range(5)])
    sheets("search 1 word, my favourites (most stars)",
           [(GalleryFilter(f.guild_id, f.owner_id, False, favourites=True, search=rnd.choice(words),
                           viewer_id=f.viewer_id), 0, None) for f in favourite for _ in range(5)])
    last_search = await scenarios(store, [mine(o, search=rnd.choice(words)) for o in heavy], "last")
    sheets("search 1 word, own, last sheet (heaviest)", last_search)
    # A ◀ ▶ made before cursors existed pages by offset: how that fallback fares at the far end.
    sheets("own, last sheet by offset, no cursor", [(f, p, None) for f, p, _ in
                                                    await scenarios(store, heavy_own, "last")])

    # The previous /gallery for comparison: a count and an OFFSET page, both joining jobs for privacy.
    old_cases = await scenarios(store, heavy_public, "last")

    async def old_sheet(i: int) -> object:
        f, page, _ = old_cases[i % len(old_cases)]
        where = (" FROM images JOIN jobs ON jobs.id = images.job_id WHERE images.guild_id = ?"
                 " AND images.deleted = 0 AND images.user_id = ? AND jobs.private = 0")
        args = (f.guild_id, f.owner_id)
        await conn.fetchone(f"SELECT count(*){where}", args)
        return await conn.fetchall(f"SELECT images.*{where} ORDER BY images.id DESC LIMIT ? OFFSET ?",
                                   (*args, PER_PAGE, page * PER_PAGE))

    rows_out.append(("before: public, last (count + OFFSET + join)", old_sheet))

    print(f"{'one /gallery sheet: GalleryStore.sheet':46} {'p50 ms':>8} {'p99 ms':>8} {'CPU p99':>8} "
          f"{'rows':>6}")
    for name, fn in rows_out:
        p50, p99, cpu99, rows = await timed(queries, fn)
        print(f"{name:46} {p50:8.3f} {p99:8.3f} {cpu99:8.3f} {rows:6.1f}", flush=True)
    await db.close()


def build(path: Path, images: int) -> None:
    """Fill a new database at `path`, written beside it first so an interrupted build is never reused."""
    tmp = path.with_suffix(".building")
    tmp.unlink(missing_ok=True)
    for extra in ("-wal", "-shm"):
        Path(str(tmp) + extra).unlink(missing_ok=True)

    async def prepare() -> None:
        db = await Database.open(tmp)  # migrations: the real schema and triggers
        await db.close()

    asyncio.run(prepare())
    seconds, _ = fill(tmp, images)
    conn = sqlite3.connect(tmp)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    tmp.replace(path)
    print(f"built {images:,} images in {seconds:.1f} s ({images / seconds:,.0f} images/s), "
          f"{path.stat().st_size / 1e6:.0f} MB -> {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "atelier" / "bench"
    parser.add_argument("--cache", type=Path, default=cache, help="where built databases are kept and reused")
    parser.add_argument("--rebuild", action="store_true", help="build the database again")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    path = args.cache / f"storage-{args.images}-schema{SCHEMA_VERSION}-fill{FILL_VERSION}.db"
    if args.rebuild or not path.exists():
        build(path, args.images)
    else:
        print(f"reusing {path} ({path.stat().st_size / 1e6:.0f} MB)")
    asyncio.run(measure(path, args.queries))


if __name__ == "__main__":
    main()
