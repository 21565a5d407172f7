"""The web gallery's server time at scale: a grid page and a prompt search at 1 M images.

Serves the real app (web.server.build_app) on a real socket over the bench database of bench/storage.py
(the real schema and triggers; 1,000,000 images by default, a few heavy members, 10 % private), logs a
member in with a real signed session cookie, and times real HTTP requests as browsers make them. The
figure is the server's own time for each request (the Server-Timing header the app sets around every
handler: session, rule, query, template), printed beside the store call alone, so the web layer's share is
a ratio measured in the same run.

    .venv/bin/python bench/web.py [--images 1000000] [--queries 300] [--cache DIR]

Goals at 1 M images: a grid page p99 <= 20 ms, a search page p99 <= 60 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.storage import ADJECTIVES, FILL_VERSION, SUBJECTS, build
from storage import Database
from storage.blobs import BlobStore
from storage.gallery import GalleryFilter
from storage.migrations import SCHEMA_VERSION
from web.config import WebConfig
from web.server import PER_PAGE, build_app
from web.session import SESSION_COOKIE, Sessions


def database(cache: Path, images: int) -> Path:
    """The bench database at this schema: built by bench/storage.py's fill, or an older build of it copied
    and migrated (the migrations only add what the web needs)."""
    path = cache / f"web-{images}-schema{SCHEMA_VERSION}-fill{FILL_VERSION}.db"
    if path.exists():
        return path
    older = sorted(cache.glob(f"storage-{images}-schema*-fill{FILL_VERSION}.db"))
    if older:
        shutil.copyfile(older[-1], path.with_suffix(".building"))
        path.with_suffix(".building").replace(path)
        print(f"copied {older[-1].name}; migrating")
    else:
        build(path, images)
    return path


def p99(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * 0.99))]


async def measure(path: Path, queries: int) -> None:
    rnd = random.Random(5)
    db = await Database.open(path)  # migrates an older copy
    conn = db.connection
    owners = [(r[0], r[1], r[2]) for r in await conn.fetchall(
        "SELECT guild_id, user_id, visible FROM gallery_counts WHERE visible > 0")]
    heavy = sorted(owners, key=lambda o: -o[2])[:20]
    picks = rnd.choices(owners, weights=[n for _, _, n in owners], k=queries)
    words = [w for s in SUBJECTS + ADJECTIVES for w in s.split() if len(w) > 3]
    print(f"{len(owners)} owners; heaviest has {heavy[0][2]:,} images; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    config = WebConfig(public_url="http://127.0.0.1:1", client_id="1", client_secret="x",
                       secret_key=b"b" * 32, search_limit=(10**9, 1.0))
    runner = web.AppRunner(build_app(config, db, BlobStore(path.parent / "bench-blobs")))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}"
    sessions = Sessions(config)
    guilds = {g for g, _, _ in owners}

    def cookie(user_id: int) -> dict[str, str]:
        response = web.Response()
        sessions.start(response, user_id, "bench", {g: f"guild {g}" for g in guilds})
        return {"Cookie": f"{SESSION_COOKIE}={response.cookies[SESSION_COOKIE].value}"}

    cookies = {o[1]: cookie(o[1]) for o in {*picks, *heavy}}
    results: list[tuple[str, list[float], list[float]]] = []

    async with aiohttp.ClientSession() as http:
        async def get(url: str, headers: dict[str, str], **params: str) -> float:
            async with http.get(base + url, params=params, headers=headers) as resp:
                await resp.read()
                assert resp.status == 200, (url, params, resp.status)
                return float(resp.headers["Server-Timing"].split("dur=")[1])

        async def run(label: str, make: Callable[[int], Awaitable[float]],
                      store: Callable[[int], Awaitable[object]]) -> None:
            server, alone = [], []
            for i in range(queries):
                server.append(await make(i))
                t = time.perf_counter()
                await store(i)
                alone.append((time.perf_counter() - t) * 1000)
            results.append((label, server, alone))

        def own(o: tuple[int, int, int], **kw: object) -> GalleryFilter:
            return GalleryFilter(o[0], o[1], False, viewer_id=o[1], **kw)  # type: ignore[arg-type]

        await run("grid page: my images, first page (members by activity)",
                  lambda i: get("/me", cookies[picks[i][1]], guild=str(picks[i][0])),
                  lambda i: db.gallery.page(own(picks[i]), limit=PER_PAGE))
        cursors = []
        for o in heavy:
            rows = await db.gallery.page(own(o), offset=o[2] // 2, limit=1)
            cursors.append(rows[0].id)
        await run("grid page: heaviest members, a page mid-way (keyset cursor)",
                  lambda i: get("/me", cookies[heavy[i % 20][1]], guild=str(heavy[i % 20][0]),
                                before=str(cursors[i % 20])),
                  lambda i: db.gallery.page(own(heavy[i % 20]), limit=PER_PAGE, before=cursors[i % 20]))
        other = heavy[0][1] + 1
        cookies[other] = cookie(other)
        await run("grid page: a heavy member's public images, seen by another",
                  lambda i: get(f"/u/{heavy[i % 20][1]}", cookies[other], guild=str(heavy[i % 20][0])),
                  lambda i: db.gallery.page(GalleryFilter(heavy[i % 20][0], heavy[i % 20][1], True,
                                                          viewer_id=other), limit=PER_PAGE))
        terms = [rnd.choice(words) for _ in range(queries)]
        await run("search page: one word in a heavy member's images",
                  lambda i: get("/me", cookies[heavy[i % 20][1]], guild=str(heavy[i % 20][0]), q=terms[i]),
                  lambda i: db.gallery.page(own(heavy[i % 20], search=terms[i]), limit=PER_PAGE))
        terms2 = [f"{rnd.choice(words)} {rnd.choice(words)[:3]}" for _ in range(queries)]
        await run("search page: a word and a prefix, members by activity",
                  lambda i: get("/me", cookies[picks[i][1]], guild=str(picks[i][0]), q=terms2[i]),
                  lambda i: db.gallery.page(own(picks[i], search=terms2[i]), limit=PER_PAGE))
        image_ids = [(await db.gallery.page(own(o), limit=1))[0].id for o in picks[:50]]
        await run("image page (parameters, lineage, star state)",
                  lambda i: get(f"/image/{image_ids[i % 50]}", cookies[picks[i % 50][1]]),
                  lambda i: db.images.get(image_ids[i % 50]))

    print(f"\n{'':62} {'server p50':>10} {'p99':>7} {'store p99':>10} {'server/store':>13}  (ms)")
    for label, server, alone in results:
        print(f"{label:62} {statistics.median(server):10.2f} {p99(server):7.2f} {p99(alone):10.2f} "
              f"{statistics.median(server) / max(statistics.median(alone), 1e-6):12.1f}x")
    await runner.cleanup()
    await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=300)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "atelier" / "bench"
    parser.add_argument("--cache", type=Path, default=cache, help="where built databases are kept and reused")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    asyncio.run(measure(database(args.cache, args.images), args.queries))


if __name__ == "__main__":
    main()
