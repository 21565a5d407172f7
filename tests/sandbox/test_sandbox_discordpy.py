"""The real discord.py client against the sandbox, over real sockets."""

from __future__ import annotations

import io

import aiohttp
import discord
import pytest

from sandbox import Message, Sandbox, SandboxError
from tests.sandbox.conftest import SandboxBot


async def test_ready_and_sync(sandbox: Sandbox, bot: SandboxBot) -> None:
    guild = bot.get_guild(sandbox.guild.id)
    assert guild is not None and guild.name == "Atelier Test"
    assert {c.name for c in guild.text_channels} == {"general", "art", "nsfw-art"}
    assert guild.get_channel(sandbox.channel("nsfw-art").id).nsfw  # type: ignore[union-attr]
    assert guild.member_count == len(sandbox.guild.members)
    synced = {c["name"] for c in sandbox.commands(sandbox.guild)}
    assert {"echo", "whoami", "panel", "ask", "pick", "Quote"} <= synced
    assert [c.method for c in sandbox.calls if c.path.endswith("/commands")][-1] == "PUT"


async def test_slash_with_attachment_defer_and_followup_file(sandbox: Sandbox, bot: SandboxBot) -> None:
    alice, art = sandbox.users["alice"], sandbox.channel("art")
    inter = await sandbox.slash(alice, art, "echo", {"text": "hi", "count": 3},
                                attachments={"image": ("in.png", b"\x89PNG-data")})
    assert await inter.wait_ack() == 5
    msg: Message = await sandbox.wait_for(lambda: inter.followups and inter.followups[0])
    assert msg.content == "hi x3"
    assert [a.filename for a in msg.attachments] == ["echo.bin"]
    assert msg.attachments[0].data == b"\x89PNG-data"[::-1]
    # The first followup after a thinking defer replaced the loading message.
    assert inter.original is msg
    assert not msg.flags & 128
    assert msg in sandbox.messages(art) and not msg.ephemeral
    # The file is served from the CDN, as discord.py reads it back.
    async with aiohttp.ClientSession() as http, http.get(msg.attachments[0].url) as resp:
        assert await resp.read() == b"\x89PNG-data"[::-1]
    callback = [c for c in sandbox.calls if c.path.endswith("/callback")][-1]
    assert callback.query.get("with_response") == "1" and callback.status == 200


async def test_permissions_are_computed_from_roles(sandbox: Sandbox, bot: SandboxBot) -> None:
    nsfw = sandbox.channel("nsfw-art")
    replies = {}
    for name in ("mod", "alice"):
        inter = await sandbox.slash(sandbox.users[name], nsfw, "whoami")
        await inter.wait_ack()
        replies[name] = inter.original
    assert replies["mod"] is not None and replies["alice"] is not None
    assert replies["mod"].content == "mod manage_guild=True nsfw=True"
    assert replies["alice"].content == "alice manage_guild=False nsfw=True"
    assert replies["alice"].ephemeral
    # Ephemeral messages are only visible to their user, and not through channel routes.
    assert replies["alice"] in sandbox.messages(nsfw, viewer=sandbox.users["alice"])
    assert replies["alice"] not in sandbox.messages(nsfw, viewer=sandbox.users["bob"])
    channel = bot.get_channel(nsfw.id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(replies["alice"].id)


async def test_button_click_updates_message(sandbox: Sandbox, bot: SandboxBot) -> None:
    art = sandbox.channel("art")
    inter = await sandbox.slash(sandbox.users["alice"], art, "panel")
    assert await inter.wait_ack() == 4
    msg = inter.original
    assert msg is not None
    assert [b["custom_id"] for b in msg.buttons()] == ["panel:go", "panel:slow"]
    assert msg.buttons()[0]["label"] == "Go" and msg.buttons()[0]["emoji"]["name"] == "🔄"
    click = await sandbox.click(sandbox.users["bob"], msg, "panel:go")
    assert await click.wait_ack() == 7
    assert msg.content == "clicked by bob" and msg.edits == 1
    assert msg.history[0]["content"] == "panel"
    pick = await sandbox.select(sandbox.users["bob"], msg, "panel:size", ["M"])
    assert await pick.wait_ack() == 4
    assert pick.original is not None and pick.original.content == "size M" and pick.original.ephemeral


async def test_modal_round_trip(sandbox: Sandbox, bot: SandboxBot) -> None:
    art, alice = sandbox.channel("art"), sandbox.users["alice"]
    inter = await sandbox.slash(alice, art, "ask")
    assert await inter.wait_ack() == 9
    assert inter.modal is not None and inter.modal["title"] == "Ask"
    submit = await sandbox.submit_modal(alice, art, inter.modal["custom_id"], {"answer": "forty-two"})
    assert await submit.wait_ack() == 4
    assert submit.original is not None and submit.original.content == "got forty-two"
    assert submit.ephemeral_messages == [submit.original]


async def test_autocomplete(sandbox: Sandbox, bot: SandboxBot) -> None:
    choices = await sandbox.autocomplete(sandbox.users["bob"], sandbox.channel("art"), "pick",
                                         {"model": "sd"}, focused="model")
    assert [c["value"] for c in choices] == ["sd15", "sdxl"]


async def test_message_context_menu(sandbox: Sandbox, bot: SandboxBot) -> None:
    general = sandbox.channel("general")
    target = await sandbox.post_message(sandbox.users["bob"], general, "quotable")
    inter = await sandbox.message_command(sandbox.users["alice"], general, "Quote", target)
    assert await inter.wait_ack() == 4
    assert inter.original is not None and inter.original.content == "> quotable"


async def test_429_with_retry_after_then_success(sandbox: Sandbox, bot: SandboxBot) -> None:
    general = sandbox.channel("general")
    channel = bot.get_channel(general.id)
    assert isinstance(channel, discord.TextChannel)
    sandbox.set_fault_rate(1.0, statuses=(429,))
    sent = await channel.send("through the storm")
    path = f"/channels/{general.id}/messages"
    statuses = [c.status for c in sandbox.calls if c.method == "POST" and c.path == path]
    assert statuses[-3:] == [429, 429, 200]
    assert sandbox.messages(general)[-1].id == sent.id
    # The ack callback is faulted at most once, so the 3 s deadline still holds.
    inter = await sandbox.slash(sandbox.users["alice"], general, "panel")
    assert await inter.wait_ack() == 4
    cb = [c.status for c in sandbox.calls if c.path == f"/interactions/{inter.id}/{inter.token}/callback"]
    assert cb == [429, 200]


async def test_5xx_is_retried(sandbox: Sandbox, bot: SandboxBot) -> None:
    general = sandbox.channel("general")
    channel = bot.get_channel(general.id)
    assert isinstance(channel, discord.TextChannel)
    sandbox.faults.max_consecutive = 1
    sandbox.set_fault_rate(1.0, statuses=(502,))
    sent = await channel.send("after a 502")
    path = f"/channels/{general.id}/messages"
    statuses = [c.status for c in sandbox.calls if c.method == "POST" and c.path == path]
    assert statuses[-2:] == [502, 200]
    assert sandbox.message(sent.id) is not None


async def test_expired_token_gives_unknown_webhook(sandbox: Sandbox, bot: SandboxBot) -> None:
    inter = await sandbox.slash(sandbox.users["alice"], sandbox.channel("art"), "panel")
    await inter.wait_ack()
    live = bot.last["panel"]
    await live.edit_original_response(content="edited in time")
    assert inter.original is not None and inter.original.content == "edited in time"
    sandbox.token_ttl = 0.0
    with pytest.raises(discord.NotFound) as err:
        await live.edit_original_response(content="too late")
    assert err.value.code == 10015
    with pytest.raises(discord.NotFound):
        await live.followup.send("too late")
    assert inter.original.content == "edited in time"


async def test_patch_keeps_and_drops_attachments(sandbox: Sandbox, bot: SandboxBot) -> None:
    general = sandbox.channel("general")
    channel = bot.get_channel(general.id)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("two files", files=[discord.File(io.BytesIO(b"a"), "a.txt"),
                                                  discord.File(io.BytesIO(b"b"), "b.txt")])
    keep = sent.attachments[1]
    edited = await sent.edit(attachments=[keep, discord.File(io.BytesIO(b"c"), "c.txt")])
    assert [a.filename for a in edited.attachments] == ["b.txt", "c.txt"]
    stored = sandbox.message(sent.id)
    assert stored is not None and [a.data for a in stored.attachments] == [b"b", b"c"]
    await sent.delete()
    assert stored.deleted and stored not in sandbox.messages(general)


async def test_dropped_socket_resumes_and_replays(sandbox: Sandbox, bot: SandboxBot) -> None:
    general = sandbox.channel("general")
    resumes = sandbox.gateway.resumes
    await sandbox.drop_gateway()
    # Sent while the bot is disconnected: replayed on RESUME.
    missed = await sandbox.post_message(sandbox.users["bob"], general, "while you were away")
    await sandbox.wait_for(lambda: sandbox.gateway.resumes > resumes)
    await sandbox.wait_for(lambda: any(m.id == missed.id for m in bot.seen_messages))
    inter = await sandbox.slash(sandbox.users["alice"], general, "panel")
    assert await inter.wait_ack() == 4
    assert sum(1 for m in bot.seen_messages if m.id == missed.id) == 1


async def test_wrong_token_fails_login(sandbox: Sandbox) -> None:
    client = discord.Client(intents=discord.Intents.default())
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    await client.close()
    async with aiohttp.ClientSession() as http, http.ws_connect(sandbox.gateway_url) as ws:
        hello = await ws.receive_json()
        assert hello["op"] == 10
        await ws.send_json({"op": 2, "d": {"token": "nope", "intents": 0, "properties": {}}})
        closing = await ws.receive()
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 4004


async def test_followups_edit_delete_and_ephemeral(sandbox: Sandbox, bot: SandboxBot) -> None:
    art, alice = sandbox.channel("art"), sandbox.users["alice"]
    inter = await sandbox.slash(alice, art, "multi")
    assert await inter.wait_ack() == 4
    await sandbox.wait_for(lambda: inter.original is not None and inter.original.deleted)
    assert [m.content for m in inter.followups] == ["two edited", "secret"]
    two, secret = inter.followups
    assert two.edits == 1 and not two.ephemeral and two in sandbox.messages(art)
    assert secret.ephemeral and secret not in sandbox.messages(art, viewer=sandbox.users["bob"])
    assert inter.ephemeral_messages == [secret]
    assert inter.original is not None and inter.original not in sandbox.messages(art)


async def test_deferred_update_then_edit_original(sandbox: Sandbox, bot: SandboxBot) -> None:
    art = sandbox.channel("art")
    inter = await sandbox.slash(sandbox.users["alice"], art, "panel")
    await inter.wait_ack()
    panel = inter.original
    assert panel is not None
    click = await sandbox.click(sandbox.users["bob"], panel, "panel:slow")
    assert await click.wait_ack() == 6
    await sandbox.wait_for(lambda: click.followups)
    assert panel.content == "slow done" and panel.components == [] and click.original is panel
    assert click.followups[0].content == "slow finished" and click.followups[0].id != panel.id


async def test_late_ack_is_refused(sandbox: Sandbox, bot: SandboxBot) -> None:
    sandbox.ack_deadline = 0.0
    inter = await sandbox.slash(sandbox.users["alice"], sandbox.channel("art"), "whoami")
    path = f"/interactions/{inter.id}/{inter.token}/callback"
    call = await sandbox.wait_for(lambda: next((c for c in sandbox.calls if c.path == path), None))
    assert call.status == 404
    assert inter.response_type is None and inter.original is None


async def test_slow_responses_still_succeed(sandbox: Sandbox, bot: SandboxBot) -> None:
    general = sandbox.channel("general")
    channel = bot.get_channel(general.id)
    assert isinstance(channel, discord.TextChannel)
    sandbox.set_latency(0.2)
    sent = await channel.send("slowly")
    stored = sandbox.message(sent.id)
    assert stored is not None and stored.content == "slowly"


async def test_message_content_needs_the_intent(sandbox: Sandbox, bot: SandboxBot) -> None:
    general = sandbox.channel("general")
    plain = await sandbox.post_message(sandbox.users["bob"], general, "hello there",
                                       attachments=[("x.txt", b"x")])
    mention = await sandbox.post_message(sandbox.users["bob"], general, f"<@{sandbox.bot_user.id}> hi")

    def both() -> dict[int, discord.Message] | None:
        seen = {m.id: m for m in bot.seen_messages if m.id in (plain.id, mention.id)}
        return seen if len(seen) == 2 else None

    got = await sandbox.wait_for(both)
    assert got[plain.id].content == "" and got[plain.id].attachments == []
    assert got[mention.id].content.endswith("hi")


async def test_invalid_session_reidentifies(sandbox: Sandbox, bot: SandboxBot) -> None:
    identifies = sandbox.gateway.identifies
    await sandbox.invalidate_session(resumable=False)
    await sandbox.wait_for(lambda: sandbox.gateway.identifies > identifies and sandbox.gateway.connected)
    inter = await sandbox.slash(sandbox.users["alice"], sandbox.channel("general"), "panel")
    assert await inter.wait_ack() == 4


async def test_file_in_response_then_replaced_by_update(sandbox: Sandbox, bot: SandboxBot) -> None:
    art = sandbox.channel("art")
    inter = await sandbox.slash(sandbox.users["alice"], art, "card")
    assert await inter.wait_ack() == 4
    card = inter.original
    assert card is not None and [(a.filename, a.data) for a in card.attachments] == [("front.png", b"front")]
    assert card.attachments[0].content_type == "image/png"
    flip = await sandbox.click(sandbox.users["alice"], card, "card:flip")
    assert await flip.wait_ack() == 7
    assert [(a.filename, a.data) for a in card.attachments] == [("back.png", b"back")]
    assert card.content == "back" and card.buttons() == [] and card.history[0]["attachments"] == ["front.png"]
    callback = [c for c in sandbox.calls if c.path == f"/interactions/{flip.id}/{flip.token}/callback"][-1]
    assert callback.files == [("back.png", b"back")]


async def test_reply_to_a_deleted_message_is_refused(sandbox: Sandbox, bot: SandboxBot) -> None:
    general = sandbox.channel("general")
    channel = bot.get_channel(general.id)
    assert isinstance(channel, discord.TextChannel)
    target = await channel.send("to be deleted")
    reply = await channel.send("a reply", reference=target)
    stored = sandbox.message(reply.id)
    assert stored is not None and stored.reference_id == target.id
    await sandbox.delete_message(sandbox.message(target.id))  # type: ignore[arg-type]
    with pytest.raises(discord.HTTPException) as err:
        await channel.send("late reply", reference=target)
    assert err.value.status == 400
    ref = target.to_reference(fail_if_not_exists=False)
    posted = await channel.send("posted anew", reference=ref)
    assert sandbox.message(posted.id) is not None


async def test_interaction_sent_while_disconnected_is_replayed(sandbox: Sandbox, bot: SandboxBot) -> None:
    resumes = sandbox.gateway.resumes
    await sandbox.drop_gateway()
    inter = await sandbox.slash(sandbox.users["bob"], sandbox.channel("art"), "panel")
    assert await inter.wait_ack() == 4
    assert sandbox.gateway.resumes == resumes + 1
    assert inter.original is not None and inter.original.content == "panel"


async def test_modal_opened_from_a_button_updates_that_message(sandbox: Sandbox, bot: SandboxBot) -> None:
    art, alice = sandbox.channel("art"), sandbox.users["alice"]
    inter = await sandbox.slash(alice, art, "card")
    await inter.wait_ack()
    card = inter.original
    assert card is not None
    opened = await sandbox.click(alice, card, "card:rename")
    assert await opened.wait_ack() == 9 and opened.modal is not None
    with pytest.raises(SandboxError):
        await sandbox.submit_modal(alice, art, opened.modal["custom_id"], {"nope": "x"})
    with pytest.raises(SandboxError):
        await sandbox.submit_modal(alice, art, opened.modal["custom_id"], {"note": "only the optional one"})
    submit = await sandbox.submit_modal(alice, art, opened.modal["custom_id"], {"name": "Ace"})
    assert await submit.wait_ack() == 7
    assert card.content == "renamed Ace (none)" and submit.original is card


async def test_reconnect_request_resumes(sandbox: Sandbox, bot: SandboxBot) -> None:
    resumes = sandbox.gateway.resumes
    await sandbox.request_reconnect()
    await sandbox.wait_for(lambda: sandbox.gateway.resumes > resumes and sandbox.gateway.connected)
    inter = await sandbox.slash(sandbox.users["alice"], sandbox.channel("general"), "panel")
    assert await inter.wait_ack() == 4


async def test_files_over_the_upload_limit_are_refused_and_change_nothing(sandbox: Sandbox,
                                                                          bot: SandboxBot) -> None:
    general = sandbox.channel("general")
    channel = bot.get_channel(general.id)
    assert isinstance(channel, discord.TextChannel)
    assert channel.guild.filesize_limit == sandbox.guild.upload_limit == 10 * 1024 * 1024
    sent = await channel.send("small", file=discord.File(io.BytesIO(b"x" * 1000), "small.bin"))
    before = [m.id for m in sandbox.messages(general)]
    sandbox.guild.upload_limit_override = 500
    try:
        with pytest.raises(discord.HTTPException) as refused:
            await channel.send("big", file=discord.File(io.BytesIO(b"x" * 501), "big.bin"))
        assert (refused.value.status, refused.value.code) == (413, 40005)
        with pytest.raises(discord.HTTPException):
            await sent.edit(content="edited", attachments=[discord.File(io.BytesIO(b"y" * 501), "big.bin")])
    finally:
        sandbox.guild.upload_limit_override = None
    stored = sandbox.message(sent.id)
    assert stored is not None and stored.content == "small"
    assert [a.filename for a in stored.attachments] == ["small.bin"]
    assert [m.id for m in sandbox.messages(general)] == before


async def test_dm_interactions_carry_user_and_no_guild(sandbox: Sandbox, bot: SandboxBot) -> None:
    # DMs have global commands only: sync them once, as a bot does without a dev guild.
    await bot.tree.sync()
    alice = sandbox.users["alice"]
    dm = sandbox.dm_channel(alice)
    assert sandbox.dm_channel(alice) is dm  # one DM channel per user
    inter = await sandbox.slash(alice, dm, "whoami")
    await inter.wait_ack()
    payload = inter.payload
    assert "member" not in payload and "guild_id" not in payload and payload["user"]["id"] == str(alice.id)
    assert payload["channel"]["type"] == 1 and payload["context"] == 1
    assert payload["authorizing_integration_owners"] == {"0": "0"}
    assert inter.original is not None and inter.original.guild_id is None
    assert inter.original.content.startswith("alice manage_guild=False")
    assert sandbox.messages(dm, viewer=alice) == [inter.original]
    # A command whose contexts exclude DMs is not offered there, and guild commands never are.
    with pytest.raises(SandboxError, match="not offered in DMs"):
        await sandbox.slash(alice, dm, "serveronly")
    with pytest.raises(SandboxError, match="is not in DM channel"):
        await sandbox.slash(sandbox.users["bob"], dm, "whoami")
    # The same command still works in a server.
    shown = await sandbox.slash(alice, sandbox.channel("art"), "serveronly")
    await shown.wait_ack()
    assert shown.original is not None and shown.original.content == "in a server"


async def test_components_v2_messages_are_checked_as_discord_does(sandbox: Sandbox, bot: SandboxBot) -> None:
    """A LayoutView (IS_COMPONENTS_V2) may hold more than 5 rows, up to 40 components in all (nested ones
    counted) and no content beside it; the sandbox refuses what Discord refuses."""
    general = sandbox.channel("general")
    url = f"{sandbox.api_base}/channels/{general.id}/messages"
    headers = {"Authorization": f"Bot {sandbox.bot_token}"}

    def rows(n: int) -> list[dict[str, object]]:
        return [{"type": 1, "components": [{"type": 2, "style": 2, "label": "x", "custom_id": f"b{i}"}]}
                for i in range(n)]

    async with aiohttp.ClientSession() as http:
        async def post(body: dict[str, object]) -> int:
            async with http.post(url, json=body, headers=headers) as resp:
                return resp.status

        assert await post({"flags": 1 << 15, "components": rows(20)}) == 200  # 40 components, 20 rows
        assert await post({"flags": 1 << 15, "components": rows(21)}) == 400  # 42
        assert await post({"flags": 1 << 15, "content": "hi", "components": rows(1)}) == 400
        assert await post({"components": rows(6)}) == 400  # without the flag: 5 rows at most
