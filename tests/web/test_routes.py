"""The web gallery's routes over real sockets: login through the sandbox's OAuth2, the same privacy matrix
as /gallery and /job (owner, member of the same guild, member of another guild, private job, DM job,
deleted image), and the refusals: CSRF, open redirects, path traversal, rate limits, secrets in logs."""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

import pytest
from yarl import URL

from tests.web.conftest import SiteFactory, done_job


async def world(s: Any) -> dict[str, Any]:
    """alice makes a public, a private, a DM and a deleted image in the test guild; carol is in another
    guild only; bob shares the test guild with alice."""
    sb = s.sandbox
    other = sb.add_guild("Elsewhere")
    carol = sb.add_user("carol", other)
    alice, bob = sb.users["alice"], sb.users["bob"]
    g = sb.guild.id
    public = (await done_job(s.db, s.blobs, alice.id, g, "a public lighthouse", colours=[(200, 10, 10)]))[0]
    private = (await done_job(s.db, s.blobs, alice.id, g, "a secret lighthouse", colours=[(10, 200, 10)],
                              private=True))[0]
    dm = (await done_job(s.db, s.blobs, alice.id, None, "a diary lighthouse", colours=[(10, 10, 200)]))[0]
    gone = (await done_job(s.db, s.blobs, alice.id, g, "a deleted lighthouse", colours=[(90, 90, 90)]))[0]
    await s.db.images.set_deleted(gone.id)
    theirs = (await done_job(s.db, s.blobs, carol.id, other.id, "carol the lighthouse keeper",
                             colours=[(5, 5, 5)]))[0]
    return {"alice": alice, "bob": bob, "carol": carol, "g": g, "other": other.id, "public": public,
            "private": private, "dm": dm, "gone": gone, "theirs": theirs}


def shown_ids(html: str) -> set[int]:
    return {int(i) for i in re.findall(r'data-id="(\d+)"', html)}


async def test_privacy_matrix_matches_gallery_and_job(site: SiteFactory) -> None:
    s = await site()
    w = await world(s)
    public, private, dm, gone, theirs = (w[k] for k in ("public", "private", "dm", "gone", "theirs"))
    every = [public, private, dm, gone, theirs]
    # Who sees which image, on its page, as its file and as its thumbnail.
    expected = {
        "alice": {public.id, private.id, dm.id},  # the owner: all of hers but the deleted one
        "bob": {public.id},  # same guild: the public one only
        "carol": {theirs.id},  # another guild: none of alice's
    }
    for name, visible in expected.items():
        async with s.http() as http:
            landed = await s.login(http, w[name])
            assert landed.status == 302 and landed.headers["Location"] == "/me"
            for image in every:
                page = await http.get(s.url / "image" / str(image.id))
                file = await http.get(s.url / "file" / image.blob)
                thumb = await http.get(s.url / "thumb" / image.blob)
                want = 200 if image.id in visible else 404
                assert (page.status, file.status, thumb.status) == (want, want, want), (name, image.prompt)
                if want == 200:
                    data = await file.read()
                    assert hashlib.sha256(data).hexdigest() == image.blob.split(".")[0]
                    assert image.prompt in await page.text()
                else:
                    assert image.prompt not in await page.text()

            # The grids: alice's own per place, alice's public ones as another member sees them.
            mine = await (await http.get(s.url / "me", params={"guild": str(w["g"])})).text()
            alice_there = await http.get(s.url / "u" / str(w["alice"].id), params={"guild": str(w["g"])})
            if name == "alice":
                assert shown_ids(mine) == {public.id, private.id}
                dms = await (await http.get(s.url / "me", params={"guild": "dm"})).text()
                assert shown_ids(dms) == {dm.id}
                assert alice_there.status == 200  # her own: sent to /me
            elif name == "bob":
                assert shown_ids(mine) == set()
                assert shown_ids(await alice_there.text()) == {public.id}
                assert "secret" not in await alice_there.text()
            else:
                assert alice_there.status == 400  # not a guild carol shares with the bot
                assert "secret" not in await alice_there.text() and not shown_ids(await alice_there.text())
            # Another member's DMs never show.
            dm_view = await http.get(s.url / "u" / str(w["alice"].id), params={"guild": "dm"})
            if name != "alice":
                assert dm_view.status == 404 and not shown_ids(await dm_view.text())

    # Logged out: nothing but the way to log in.
    async with s.http() as http:
        anon = await http.get(s.url / "file" / public.blob)
        assert anon.status == 404
        page = await http.get(s.url / "image" / str(public.id), allow_redirects=False)
        assert page.status == 302 and page.headers["Location"].startswith("/login")


async def test_search_filters_paging_and_the_image_page(site: SiteFactory) -> None:
    s = await site()
    alice = s.sandbox.users["alice"]
    g = s.sandbox.guild.id
    ids = []
    for i in range(35):  # more than a page (30)
        rows = await done_job(s.db, s.blobs, alice.id, g, f"harbour number{i}", colours=[(i, 50, 50)],
                              size=(96, 64) if i % 2 else (64, 64))
        ids.append(rows[0].id)
    parent = ids[-1]
    parent_row = await s.db.images.get(parent)
    assert parent_row is not None
    child = (await done_job(s.db, s.blobs, alice.id, g, "harbour upscaled", colours=[(1, 2, 3)],
                            kind="upscale", parent=(parent_row.job_id, 0)))[0]
    async with s.http() as http:
        await s.login(http, alice)
        first = await (await http.get(s.url / "me")).text()
        page1 = shown_ids(first)
        assert len(page1) == 30 and max(page1) == child.id
        more = re.search(r'data-more href="([^"]+)"', first)
        assert more is not None
        older = s.url.join(URL(more.group(1).replace("&amp;", "&")))
        rest = await (await http.get(older.update_query(fragment="1"))).text()
        assert not page1 & shown_ids(rest) and page1 | shown_ids(rest) == {*ids, child.id}
        assert "<html" not in rest  # a fragment, appended by app.js

        found = await (await http.get(s.url / "me", params={"q": "number7 harbour"})).text()
        assert shown_ids(found) == {ids[7]}
        prefix = await (await http.get(s.url / "me", params={"q": "numb"})).text()
        assert len(shown_ids(prefix)) == 30
        wide = await (await http.get(s.url / "me", params={"aspect": "landscape"})).text()
        assert shown_ids(wide) == {ids[i] for i in range(35) if i % 2}
        upscales = await (await http.get(s.url / "me", params={"kind": "upscale"})).text()
        assert shown_ids(upscales) == {child.id}
        past = await (await http.get(s.url / "me", params={"until": "2001-01-01"})).text()
        assert shown_ids(past) == set()
        bad = await http.get(s.url / "me", params={"aspect": "round"})
        assert bad.status == 400 and "Aspect" in await bad.text()

        # The image page: parameters, lineage, star / unstar (with the form's CSRF token), download.
        html = await (await http.get(s.url / "image" / str(parent))).text()
        assert "harbour number34" in html and "blurry" in html and 'id="seed">100<' in html
        assert f"/image/{child.id}" in html  # made from this
        token = re.search(r'name="csrf" value="([^"]+)"', html)
        assert token is not None
        starred = await http.post(s.url / "image" / str(parent) / "star",
                                  data={"csrf": token.group(1), "star": "1"}, allow_redirects=False)
        assert starred.status == 303
        assert await s.db.images.starred(alice.id, [parent]) == {parent}
        favs = await (await http.get(s.url / "me", params={"fav": "1"})).text()
        assert shown_ids(favs) == {parent}
        await http.post(s.url / "image" / str(parent) / "star", data={"csrf": token.group(1), "star": "0"})
        assert await s.db.images.starred(alice.id, [parent]) == set()

        image = await s.db.images.get(parent)
        assert image is not None
        download = await http.get(s.url / "file" / image.blob, params={"download": "1"})
        assert download.headers["Content-Disposition"].startswith("attachment")
        assert download.headers["ETag"] == f'"{image.blob[:64]}"' and "immutable" in download.headers[
            "Cache-Control"]
        etag = download.headers["ETag"]
        again = await http.get(s.url / "thumb" / image.blob, headers={"If-None-Match": etag})
        assert again.status == 304


async def test_flagged_images_are_blurred_and_kept_to_their_maker(site: SiteFactory) -> None:
    s = await site()
    alice, bob = s.sandbox.users["alice"], s.sandbox.users["bob"]
    flagged = (await done_job(s.db, s.blobs, alice.id, s.sandbox.guild.id, "a flagged dune",
                              colours=[(250, 200, 160)]))[0]
    await s.db.images.set_nsfw(flagged.id, True)
    clear = s.blobs.thumbnail(flagged.blob, 320)
    for user, file_status in ((alice, 200), (bob, 404)):
        async with s.http() as http:
            await s.login(http, user)
            thumb = await http.get(s.url / "thumb" / flagged.blob)
            assert thumb.status == 200 and await thumb.read() != clear
            assert (await http.get(s.url / "file" / flagged.blob)).status == file_status
            page = await (await http.get(s.url / "image" / str(flagged.id))).text()
            assert f"/file/{flagged.blob}" not in page or user is alice
            assert "Flagged" in page


async def test_csrf_redirects_traversal_cookies(site: SiteFactory) -> None:
    s = await site(login_limit=(100, 60.0))
    alice = s.sandbox.users["alice"]
    image = (await done_job(s.db, s.blobs, alice.id, s.sandbox.guild.id, "a kite", colours=[(1, 1, 1)]))[0]
    async with s.http() as http:
        landed = await s.login(http, alice, next_="//evil.example/steal")
        assert landed.headers["Location"] == "/"
        cookie = landed.headers.getall("Set-Cookie")
        session_cookie = next(c for c in cookie if c.startswith("atelier_session="))
        assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie
        for evil in ("https://evil.example/", "/\\evil.example", "javascript:alert(1)", "http:/x"):
            again = await s.login(http, alice, next_=evil)
            assert again.headers["Location"] == "/", evil

        star = s.url / "image" / str(image.id) / "star"
        assert (await http.post(star, data={"star": "1"})).status == 403  # no token
        assert (await http.post(star, data={"star": "1", "csrf": "guess"})).status == 403
        html = await (await http.get(s.url / "image" / str(image.id))).text()
        token = re.search(r'name="csrf" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
        other_site = await http.post(star, data={"star": "1", "csrf": token},
                                     headers={"Origin": "https://evil.example"})
        assert other_site.status == 403
        assert await s.db.images.starred(alice.id, [image.id]) == set()  # nothing changed

        for path in ("/file/..%2F..%2Fweb.db", "/file/../web.db", f"/file/{image.blob[:64]}",
                     f"/thumb/{'0' * 64}.png", "/file/%2e%2e%2fweb.db", f"/file/{image.blob.upper()}"):
            answer = await http.get(str(s.url) + path)
            assert answer.status == 404, path
            assert b"SQLite" not in await answer.read()

    # A forged or tampered cookie is no session.
    async with s.http() as http:
        http.cookie_jar.update_cookies({"atelier_session": "eyJ1IjoiMSJ9.forged.sig"}, s.url)
        assert (await http.get(s.url / "me", allow_redirects=False)).status == 302
        # A login whose state this browser never got is refused.
        bad = await http.get(s.url / "oauth" / "callback", params={"code": "x", "state": "y"})
        assert bad.status == 400


async def test_rate_limits_and_no_secrets_in_logs(site: SiteFactory,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    s = await site(login_limit=(3, 60.0), search_limit=(2, 60.0))
    caplog.set_level(logging.DEBUG)
    alice = s.sandbox.users["alice"]
    async with s.http() as http:
        await s.login(http, alice)
        assert (await http.get(s.url / "me", params={"q": "one"})).status == 200
        assert (await http.get(s.url / "me", params={"q": "two"})).status == 200
        refused = await http.get(s.url / "me", params={"q": "three"})
        assert refused.status == 429 and "Too many searches" in await refused.text()
        assert (await http.get(s.url / "me")).status == 200  # browsing is not searching
        # Login 1 was the login above (its callback is a second hit): the next /login is the 3rd, then 429.
        assert (await http.get(s.url / "login", allow_redirects=False)).status == 302
        assert (await http.get(s.url / "login", allow_redirects=False)).status == 429
    tokens = list(s.sandbox.oauth.tokens)
    assert tokens
    for secret in (s.config.client_secret, *tokens):
        assert secret not in caplog.text
