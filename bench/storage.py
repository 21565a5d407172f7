"""Gallery and prompt-search latency at scale.

Fills a fresh database (the real schema, migrations and FTS triggers) with synthetic jobs and
images (default 1,000,000 images; realistic prompts; a few heavy users as in real guilds), then
times the real GalleryStore calls the bot makes, side by side, and prints p50 / p99.

    .venv/bin/python bench/storage.py [--images 1000000] [--db PATH] [--queries 2000]

Goals: gallery page p99 <= 5 ms, prompt search p99 <= 50 ms at 1 M images.
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
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage import Database

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
    picks = rnd.choices(range(USERS), weights=weights, k=jobs)
    for job_id in range(1, jobs + 1):
        guild, user = owners[picks[job_id - 1]]
        text = prompt(rnd)
        created = now + job_id * 30
        request = json.dumps({"prompt": text, "seeds": [job_id * 4 + i for i in range(IMAGES_PER_JOB)]})
        batch_jobs.append(
            (job_id, guild, 1, user, "txt2img", request, "k", "done", 1, created, created, created + 5, 5.0)
        )
        for i in range(IMAGES_PER_JOB):
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
                )
            )
        counts[(guild, user)] = counts.get((guild, user), 0) + IMAGES_PER_JOB
        if len(batch_jobs) >= 20_000:
            _flush(conn, batch_jobs, batch_images)
    _flush(conn, batch_jobs, batch_images)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.execute("INSERT INTO images_fts(images_fts) VALUES ('optimize')")
    conn.close()
    return time.perf_counter() - started, [(g, u, n) for (g, u), n in counts.items()]


def _flush(
    conn: sqlite3.Connection, jobs: list[tuple[object, ...]], images: list[tuple[object, ...]]
) -> None:
    conn.executemany(
        """INSERT INTO jobs (id, guild_id, channel_id, user_id, kind, request, batch_key, status, attempts,
               created_at, started_at, finished_at, render_seconds) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)""",
        jobs,
    )
    conn.executemany(
        """INSERT INTO images (job_id, idx, seed, blob, width, height, nsfw, created_at, guild_id, user_id,
               prompt) VALUES (?,?,?,?,?,?,?,?,?,?,?)""",
        images,
    )
    jobs.clear()
    images.clear()


async def timed(n: int, make: Callable[[int], Awaitable[object]]) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, mean rows) over n calls."""
    samples, rows = [], []
    for i in range(n):
        t = time.perf_counter()
        result = await make(i)
        samples.append((time.perf_counter() - t) * 1000)
        rows.append(len(result) if isinstance(result, list) else 0)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))], sum(rows) / n


async def measure(path: Path, owners: list[tuple[int, int, int]], queries: int) -> None:
    rnd = random.Random(3)
    db = await Database.open(path)
    total = sum(n for _, _, n in owners)
    heavy = sorted(owners, key=lambda o: -o[2])[:20]
    # Whom to ask about: owners picked by activity (active users browse most), plus the heaviest.
    picks = rnd.choices(owners, weights=[n for _, _, n in owners], k=queries)
    words = [w for s in SUBJECTS + ADJECTIVES + STYLES for w in s.split() if len(w) > 3]
    max_id = total

    async def first_page(i: int) -> object:
        g, u, _ = picks[i]
        return await db.gallery.page(g, u, limit=24)

    async def deep_page(i: int) -> object:
        g, u, _ = picks[i]
        return await db.gallery.page(g, u, limit=24, before_id=rnd.randint(1, max_id))

    async def favourites(i: int) -> object:
        g, u, _ = heavy[i % len(heavy)]
        return await db.gallery.page(g, u, limit=24, favourites=True)

    async def search_one(i: int) -> object:
        g, u, _ = picks[i]
        return await db.gallery.search(g, u, rnd.choice(words), limit=24)

    async def search_two(i: int) -> object:
        g, u, _ = picks[i]
        return await db.gallery.search(g, u, f"{rnd.choice(words)} {rnd.choice(words)[:4]}", limit=24)

    async def search_heavy(i: int) -> object:
        g, u, _ = heavy[i % len(heavy)]
        return await db.gallery.search(g, u, rnd.choice(words), limit=24)

    async def search_guild(i: int) -> object:
        g, _, _ = picks[i]
        return await db.gallery.search(g, None, rnd.choice(words), limit=24)

    # Some favourites, so that query has something to find.
    await db.connection.write("UPDATE images SET favourite = 1 WHERE id % 50 = 0")
    async def floor(i: int) -> object:
        return await db.connection.fetchall("SELECT 1")

    print(f"{'query':44} {'p50 ms':>8} {'p99 ms':>8} {'rows':>6}")
    for name, fn in [
        ("floor: one aiosqlite round trip (SELECT 1)", floor),
        ("gallery first page (24, newest first)", first_page),
        ("gallery deep page (keyset, random point)", deep_page),
        ("gallery favourites (heaviest users)", favourites),
        ("search one word (user)", search_one),
        ("search two words, prefix (user)", search_two),
        ("search one word (heaviest users)", search_heavy),
        ("search one word (whole guild)", search_guild),
    ]:
        p50, p99, rows = await timed(queries, fn)
        print(f"{name:44} {p50:8.3f} {p99:8.3f} {rows:6.1f}")
    await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--db", type=Path, default=None, help="reuse/keep this database file")
    args = parser.parse_args()
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory()
        args.db = Path(tmp.name) / "bench.db"
    fresh = not args.db.exists()

    async def prepare() -> None:
        db = await Database.open(args.db)  # migrations: the real schema and triggers
        await db.close()

    asyncio.run(prepare())
    if fresh:
        seconds, owners = fill(args.db, args.images)
        print(
            f"filled {args.images:,} images in {seconds:.1f} s ({args.images / seconds:,.0f} images/s), "
            f"{args.db.stat().st_size / 1e6:.0f} MB"
        )
    else:
        conn = sqlite3.connect(args.db)
        owners = list(conn.execute("SELECT guild_id, user_id, count(*) FROM images GROUP BY 1, 2"))
        conn.close()
    print(f"{len(owners)} owners; heaviest has {max(n for _, _, n in owners):,} images; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    asyncio.run(measure(args.db, owners, args.queries))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
