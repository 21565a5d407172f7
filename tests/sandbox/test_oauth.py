"""The sandbox's Discord OAuth2: a code is exchanged once, by the application with its secret and the same
redirect_uri, for a Bearer token that reads the member and their guilds (and nothing with a bad token)."""

from __future__ import annotations

import aiohttp
from yarl import URL

from sandbox import Sandbox


async def test_code_flow_as_discord_does_it() -> None:
    sb = Sandbox()
    await sb.start()
    try:
        alice = sb.users["alice"]
        other = sb.add_guild("Other")
        redirect = "http://127.0.0.1:9/cb"
        form = {"client_id": str(sb.application_id), "redirect_uri": redirect, "response_type": "code",
                "scope": "identify guilds", "state": "s1"}
        async with aiohttp.ClientSession() as http:
            page = await http.get(f"{sb.base_url}/oauth2/authorize", params=form)
            assert page.status == 200 and "alice" in await page.text()
            wrong_app = await http.get(f"{sb.base_url}/oauth2/authorize", params={**form, "client_id": "1"})
            assert wrong_app.status == 400
            picked = await http.post(f"{sb.base_url}/oauth2/authorize", data={**form, "user": str(alice.id)},
                                     allow_redirects=False)
            back = URL(picked.headers["Location"])
            assert back.with_query(None) == URL(redirect) and back.query["state"] == "s1"
            code = back.query["code"]

            token_url = f"{sb.api_base}/oauth2/token"
            auth = aiohttp.BasicAuth(str(sb.application_id), sb.oauth.client_secret)
            exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect}
            bad_secret = await http.post(token_url, data=exchange,
                                         auth=aiohttp.BasicAuth(str(sb.application_id), "nope"))
            assert bad_secret.status == 401
            elsewhere = await http.post(token_url, data={**exchange, "redirect_uri": "http://evil/cb"},
                                        auth=auth)
            assert elsewhere.status == 400  # and the code is spent: a code is tried once
            assert (await http.post(token_url, data=exchange, auth=auth)).status == 400

            picked = await http.post(f"{sb.base_url}/oauth2/authorize", data={**form, "user": str(alice.id)},
                                     allow_redirects=False)
            exchange["code"] = URL(picked.headers["Location"]).query["code"]
            granted = await http.post(token_url, data=exchange, auth=auth)
            assert granted.status == 200
            token = (await granted.json())["access_token"]
            bearer = {"Authorization": f"Bearer {token}"}
            me = await (await http.get(f"{sb.api_base}/users/@me", headers=bearer)).json()
            assert me["id"] == str(alice.id)
            guilds = await (await http.get(f"{sb.api_base}/users/@me/guilds", headers=bearer)).json()
            assert [g["id"] for g in guilds] == [str(sb.guild.id)]  # not "Other": she is not in it
            assert other.id not in {int(g["id"]) for g in guilds}
            forged = {"Authorization": "Bearer forged"}
            assert (await http.get(f"{sb.api_base}/users/@me/guilds", headers=forged)).status == 401
            assert (await http.get(f"{sb.api_base}/users/@me", headers=forged)).status == 401
            bot = await (await http.get(f"{sb.api_base}/users/@me",
                                        headers={"Authorization": f"Bot {sb.bot_token}"})).json()
            assert bot["id"] == str(sb.bot_user.id)
    finally:
        await sb.stop()
