"""/admin: moderator tools. Discord hides the group from members without Manage Server
(default_permissions), and the bot checks the permission itself on every call, because default
permissions are only a UI default that a server can override. Every moderator action lands in the
audit log; refused calls change nothing."""

from __future__ import annotations

import asyncio
import io
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.access import is_moderator, load_job
from bot.interaction import AtelierInteraction
from bot.loras import family_label, library_text, lora_choices
from bot.policy import guild_config
from bot.presenter import short_prompt
from bot.remote_status import roster_text
from bot.reply import reply
from bot.settings_keys import GUILD, LIMIT_KEYS, NSFW_MODES, GuildSettings
from bot.wildcards import describe_lists, remove_list, server_wildcards, set_list
from generation.charts import ChartData, merge_days, stats_chart_png
from generation.errors import InvalidRequest
from generation.loras import LORA
from generation.moderation import normalise_phrase
from storage.blobs import disk_usage

AUDIT_SHOWN = 15
NSFW_LABELS = {
    "allow": "allowed everywhere",
    "spoiler": "allowed, shown behind a spoiler",
    "age_restricted": "allowed only in age-restricted channels",
    "block": "blocked",
}


async def audit(interaction: AtelierInteraction, action: str, target: str | None = None,
                details: dict[str, Any] | None = None) -> None:
    await interaction.client.services.db.audit.record(interaction.guild_id, interaction.user.id, action,
                                                      target, details or {})


def guild_id_of(interaction: AtelierInteraction) -> int:
    if interaction.guild_id is None:
        raise app_commands.NoPrivateMessage()
    return interaction.guild_id


def describe_limits(config: GuildSettings, default_queued: int) -> str:
    def show(value: Any, unit: str = "") -> str:
        return "no limit" if value is None else f"{value}{unit}"

    roles = ", ".join(f"<@&{r}> ×{p:g}" for r, p in config.role_priority.items()) or "none"
    return "\n".join([
        # A value saved before larger ones were refused still obeys the operator's cap (policy.py).
        f"• queued jobs per member: {min(config.max_queued or default_queued, default_queued)}",
        f"• steps: {show(config.max_steps)}",
        f"• size: {show(config.max_size, ' px per side')}",
        f"• images per job: {show(config.max_count)}",
        f"• cooldown: {config.cooldown_s:g} s",
        f"• role priority: {roles}",
    ])


@app_commands.default_permissions(manage_guild=True)
# Explicitly not in DMs: guild_only alone would inherit the tree's DM default when DMs are allowed.
@app_commands.allowed_contexts(guilds=True, dms=False, private_channels=False)
class Admin(commands.GroupCog, group_name="admin", group_description="Moderator tools"):
    words = app_commands.Group(name="words", description="Banned words and phrases")
    channels = app_commands.Group(name="channels", description="Where the bot may be used")
    queue = app_commands.Group(name="queue", description="The render queue")
    lora = app_commands.Group(name="lora", description="The LoRA and embedding library (every server's)")
    wildcards = app_commands.Group(name="wildcards", description="Lists behind __name__ in prompts")

    def __init__(self, bot: commands.Bot) -> None:
        self.bot = bot
        super().__init__()

    async def interaction_check(self, interaction: AtelierInteraction) -> bool:  # type: ignore[override]
        if not is_moderator(interaction):
            raise app_commands.MissingPermissions(["manage_guild"])
        return True

    # -- words ---------------------------------------------------------------------------------
    @words.command(name="add", description="Ban a word or phrase in prompts")
    async def words_add(self, interaction: AtelierInteraction,
                        word: app_commands.Range[str, 1, 100]) -> None:
        if not normalise_phrase(word):
            raise InvalidRequest("That has no letters or digits to match.")
        added = await interaction.client.services.db.moderation.add_banned_word(
            guild_id_of(interaction), word, added_by=interaction.user.id)
        await audit(interaction, "words.add", word.strip().lower(), {"new": added})
        await reply(interaction, f"Banned ||{discord.utils.escape_markdown(word)}||." if added
                    else "That was already banned.", ephemeral=True)

    @words.command(name="remove", description="Allow a banned word or phrase again")
    async def words_remove(self, interaction: AtelierInteraction,
                           word: app_commands.Range[str, 1, 100]) -> None:
        removed = await interaction.client.services.db.moderation.remove_banned_word(
            guild_id_of(interaction), word)
        await audit(interaction, "words.remove", word.strip().lower(), {"removed": removed})
        await reply(interaction, "Removed." if removed else "That word was not banned.", ephemeral=True)

    @words.command(name="list", description="The banned words and phrases")
    async def words_list(self, interaction: AtelierInteraction) -> None:
        words = await interaction.client.services.db.moderation.banned_words(guild_id_of(interaction))
        await audit(interaction, "words.list")
        if not words:
            await reply(interaction, "No banned words.", ephemeral=True)
            return
        # Spoilered: the list is offensive by construction.
        text = ", ".join(f"||{discord.utils.escape_markdown(w)}||" for w in words)
        await reply(interaction, f"{len(words)} banned: {text}"[:1990], ephemeral=True)

    # -- limits --------------------------------------------------------------------------------
    @app_commands.command(name="limits", description="Per-member limits; no options shows them")
    @app_commands.describe(
        max_queued="Queued jobs per member", max_steps="Most sampling steps",
        max_size="Longest image side in pixels", max_count="Most images per job",
        cooldown="Seconds between a member's jobs (0: none)", role="A role whose jobs go first (or later)",
        priority="That role's priority (1 is normal, 2 twice the share; 1 removes it)",
        reset="Clear every limit first",
    )
    async def limits(self, interaction: AtelierInteraction,
                     max_queued: app_commands.Range[int, 1, 100] | None = None,
                     max_steps: app_commands.Range[int, 1, 150] | None = None,
                     max_size: app_commands.Range[int, 64, 4096] | None = None,
                     max_count: app_commands.Range[int, 1, 4] | None = None,
                     cooldown: app_commands.Range[float, 0.0, 86400.0] | None = None,
                     role: discord.Role | None = None,
                     priority: app_commands.Range[float, 0.1, 10.0] | None = None,
                     reset: bool = False) -> None:
        guild_id = guild_id_of(interaction)
        services = interaction.client.services
        if (role is None) != (priority is None):
            raise InvalidRequest("Give both `role` and `priority` to set a role's priority.")
        cap = services.settings.queue_max_per_user
        if max_queued is not None and max_queued > cap:
            # A guild may lower the operator's limit, never raise it.
            raise InvalidRequest(f"`max_queued` can be at most {cap} here: the bot's operator set that "
                                 "limit for every server. Nothing was changed.")
        if reset:
            await GUILD.reset(services.db, guild_id, LIMIT_KEYS)
        changes: dict[str, Any] = {k: v for k, v in {
            "max_queued": max_queued, "max_steps": max_steps, "max_size": max_size,
            "max_count": max_count, "cooldown_s": cooldown}.items() if v is not None}
        if role is not None and priority is not None:
            # Stored as JSON, whose keys are strings.
            current = {str(r): p for r, p in (await guild_config(services, guild_id)).role_priority.items()}
            if abs(priority - 1.0) < 1e-9:
                current.pop(str(role.id), None)
            else:
                current[str(role.id)] = priority
            changes["role_priority"] = current
        if changes:
            await GUILD.set(services.db, guild_id, changes)
        if changes or reset:
            await audit(interaction, "limits", None, {**changes, "reset": reset})
        else:
            await audit(interaction, "limits.view")
        config = await guild_config(services, guild_id)
        head = "Saved. " if changes or reset else ""
        shown = describe_limits(config, services.settings.queue_max_per_user)
        await reply(interaction, f"{head}Limits here:\n{shown}", ephemeral=True)

    # -- channels ------------------------------------------------------------------------------
    async def _channels(self, interaction: AtelierInteraction, channel_id: int, allow: bool) -> None:
        guild_id = guild_id_of(interaction)
        db = interaction.client.services.db
        config = await guild_config(interaction.client.services, guild_id)
        allowed = [c for c in config.allowed_channels if c != channel_id]
        denied = [c for c in config.denied_channels if c != channel_id]
        (allowed if allow else denied).append(channel_id)
        await GUILD.set(db, guild_id, {"allowed_channels": allowed, "denied_channels": denied})
        await audit(interaction, "channels.allow" if allow else "channels.deny", f"channel:{channel_id}")
        note = (" Only the allowed channels can use the bot now." if allow
                else " The bot will refuse jobs there.")
        await reply(interaction, f"<#{channel_id}> {'allowed' if allow else 'denied'}.{note}", ephemeral=True)

    @channels.command(name="allow", description="Allow the bot in a channel (then only allowed ones)")
    async def channels_allow(self, interaction: AtelierInteraction,
                             channel: discord.TextChannel) -> None:
        await self._channels(interaction, channel.id, allow=True)

    @channels.command(name="deny", description="Keep the bot out of a channel")
    async def channels_deny(self, interaction: AtelierInteraction,
                            channel: discord.TextChannel) -> None:
        await self._channels(interaction, channel.id, allow=False)

    @channels.command(name="list", description="Where the bot may be used")
    async def channels_list(self, interaction: AtelierInteraction) -> None:
        config = await guild_config(interaction.client.services, guild_id_of(interaction))
        await audit(interaction, "channels.list")
        allowed = " ".join(f"<#{c}>" for c in config.allowed_channels) or "every channel"
        denied = " ".join(f"<#{c}>" for c in config.denied_channels) or "none"
        await reply(interaction, f"Allowed: {allowed}\nDenied: {denied}", ephemeral=True)

    # -- nsfw ----------------------------------------------------------------------------------
    @app_commands.command(name="nsfw", description="NSFW policy; no option shows it")
    @app_commands.describe(mode="block, spoiler, only in age-restricted channels, or allow")
    @app_commands.choices(mode=[app_commands.Choice(name=NSFW_LABELS[m], value=m) for m in NSFW_MODES])
    async def nsfw(self, interaction: AtelierInteraction, mode: str | None = None) -> None:
        guild_id = guild_id_of(interaction)
        services = interaction.client.services
        if mode is not None:
            if mode not in NSFW_MODES:
                raise InvalidRequest(f"Mode must be one of {', '.join(NSFW_MODES)}.")
            await GUILD.set(services.db, guild_id, {"nsfw": mode})
            await audit(interaction, "nsfw", mode)
        else:
            await audit(interaction, "nsfw.view")
        current = (await guild_config(services, guild_id)).nsfw
        await reply(interaction, f"NSFW: {NSFW_LABELS[current]}. Prompts are checked before rendering; "
                    "images too, where the model has a safety checker.", ephemeral=True)

    # -- bans ----------------------------------------------------------------------------------
    @app_commands.command(name="ban", description="Stop a member from making images here")
    async def ban(self, interaction: AtelierInteraction, user: discord.User,
                  reason: app_commands.Range[str, 1, 300] | None = None) -> None:
        guild_id = guild_id_of(interaction)
        services = interaction.client.services
        await services.db.moderation.ban(guild_id, user.id, reason=reason or "",
                                         banned_by=interaction.user.id)
        cancelled = await services.scheduler.cancel_all(user_id=user.id, guild_id=guild_id)
        await audit(interaction, "ban", f"user:{user.id}", {"reason": reason or "", "cancelled": cancelled})
        await reply(interaction, f"{user.mention} is banned from making images here"
                    f"{f' ({cancelled} queued jobs cancelled)' if cancelled else ''}.", ephemeral=True)

    @app_commands.command(name="unban", description="Let a banned member make images again")
    async def unban(self, interaction: AtelierInteraction, user: discord.User) -> None:
        removed = await interaction.client.services.db.moderation.unban(guild_id_of(interaction), user.id)
        await audit(interaction, "unban", f"user:{user.id}", {"was_banned": removed})
        state = "may make images again" if removed else "was not banned"
        await reply(interaction, f"{user.mention} {state}.", ephemeral=True)

    # -- workers -------------------------------------------------------------------------------
    @app_commands.command(name="workers", description="The remote render workers and what they do")
    async def workers(self, interaction: AtelierInteraction) -> None:
        remote = interaction.client.services.remote
        await audit(interaction, "workers.view")
        if remote is None:
            await reply(interaction, "This bot renders in its own process: it has no remote workers.",
                        ephemeral=True)
            return
        await reply(interaction, roster_text(remote), ephemeral=True)

    # -- queue ---------------------------------------------------------------------------------
    @queue.command(name="view", description="Queued and running jobs in this server")
    async def queue_view(self, interaction: AtelierInteraction) -> None:
        scheduler = interaction.client.services.scheduler
        entries = [e for e in scheduler.snapshot() if e.guild_id == interaction.guild_id]
        await audit(interaction, "queue.view")
        state = "paused" if scheduler.paused_in(interaction.guild_id) else "running"
        if not entries:
            await reply(interaction, f"The queue ({state}) has no jobs from this server.", ephemeral=True)
            return
        lines = [f"Queue ({state}), {len(entries)} jobs from this server:"]
        for e in entries[:20]:
            where = "rendering" if e.status == "running" else f"#{e.position}"
            prompt = short_prompt(str(e.request.get("prompt", "")))[:60]
            lines.append(f"`{e.job_id}` {where} <@{e.user_id}> **{prompt}**")
        await reply(interaction, "\n".join(lines)[:1990], ephemeral=True)

    @queue.command(name="pause", description="Hold this server's queued jobs (a running one finishes)")
    async def queue_pause(self, interaction: AtelierInteraction) -> None:
        # Per guild: one server's moderators must not stop the others. Kept across restarts.
        await interaction.client.services.scheduler.pause(guild_id_of(interaction))
        await audit(interaction, "queue.pause")
        await reply(interaction, "Queue paused for this server: a running job finishes, queued jobs wait "
                    "(members can still queue) until `/admin queue resume`.", ephemeral=True)

    @queue.command(name="resume", description="Start rendering this server's queued jobs again")
    async def queue_resume(self, interaction: AtelierInteraction) -> None:
        await interaction.client.services.scheduler.resume(guild_id_of(interaction))
        await audit(interaction, "queue.resume")
        await reply(interaction, "Queue resumed for this server.", ephemeral=True)

    @queue.command(name="cancel", description="Cancel one job")
    async def queue_cancel(self, interaction: AtelierInteraction,
                           job: app_commands.Range[int, 1]) -> None:
        services = interaction.client.services
        row = await load_job(interaction, job, moderating=True)
        cancelled = await services.scheduler.cancel(job)
        await audit(interaction, "queue.cancel", f"job:{job}", {"owner": row.user_id, "cancelled": cancelled})
        await reply(interaction, f"Job {job} cancelled." if cancelled else f"Job {job} already finished.",
                    ephemeral=True)

    @queue.command(name="purge", description="Cancel every queued and running job of a member")
    async def queue_purge(self, interaction: AtelierInteraction, user: discord.User) -> None:
        cancelled = await interaction.client.services.scheduler.cancel_all(
            user_id=user.id, guild_id=guild_id_of(interaction))
        await audit(interaction, "queue.purge", f"user:{user.id}", {"cancelled": cancelled})
        await reply(interaction, f"Cancelled {cancelled} jobs of {user.mention}.", ephemeral=True)

    # -- LoRA library ----------------------------------------------------------------------------
    @lora.command(name="add", description="Add a LoRA or embedding (.safetensors) to the library")
    @app_commands.describe(file="The .safetensors file; its name becomes the LoRA's name",
                           family="The model family, when its keys do not tell")
    async def lora_add(self, interaction: AtelierInteraction, file: discord.Attachment,
                       family: Literal["sd15", "sd2", "sdxl"] | None = None) -> None:
        library = interaction.client.services.registry.loras
        # What Discord says first: a wrong name or size is refused before a byte is downloaded.
        library.check_upload(file.filename, file.size, family)
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            data = await file.read()
        except discord.HTTPException as exc:
            raise InvalidRequest("I could not fetch that file from Discord; please attach it again.") from exc
        added = await asyncio.to_thread(library.add, data, file.filename, family)
        await audit(interaction, "lora.add", added.name,
                    {"family": added.family, "kind": added.kind, "sha256": added.short_hash})
        use = f"`--lora {added.name}:0.8`" if added.kind == LORA else f"the word `{added.name}` in a prompt"
        await reply(interaction, f"Added {added.kind} `{added.name}` ({family_label(added.family)}): use "
                    f"{use}.", ephemeral=True)

    @lora.command(name="remove", description="Remove a LoRA or embedding from the library")
    @app_commands.autocomplete(name=lora_choices)
    async def lora_remove(self, interaction: AtelierInteraction,
                          name: app_commands.Range[str, 1, 64]) -> None:
        removed = await asyncio.to_thread(interaction.client.services.registry.loras.remove, name)
        await audit(interaction, "lora.remove", removed.name, {"sha256": removed.short_hash})
        await reply(interaction, f"Removed `{removed.name}`.", ephemeral=True)

    @lora.command(name="list", description="The LoRAs and embeddings in the library")
    async def lora_list(self, interaction: AtelierInteraction) -> None:
        await audit(interaction, "lora.list")
        await reply(interaction, await library_text(interaction), ephemeral=True)

    # -- wildcards (bot/wildcards.py) ----------------------------------------------------------
    @wildcards.command(name="set", description="Create or replace a wildcard list")
    @app_commands.describe(name="Its name: members write __name__", values="Entries separated by commas")
    async def wildcards_set(self, interaction: AtelierInteraction, name: app_commands.Range[str, 1, 40],
                            values: app_commands.Range[str, 1, 4000]) -> None:
        db = interaction.client.services.db
        saved, entries = await set_list(db, guild_id_of(interaction), name, values)
        await audit(interaction, "wildcards.set", saved, {"entries": len(entries)})
        await reply(interaction, f"Saved `__{saved}__` with {len(entries)} entries.", ephemeral=True)

    @wildcards.command(name="remove", description="Delete a wildcard list")
    async def wildcards_remove(self, interaction: AtelierInteraction,
                               name: app_commands.Range[str, 1, 40]) -> None:
        removed = await remove_list(interaction.client.services.db, guild_id_of(interaction), name)
        await audit(interaction, "wildcards.remove", removed)
        await reply(interaction, f"Removed `__{removed}__`.", ephemeral=True)

    @wildcards.command(name="list", description="This server's wildcard lists")
    async def wildcards_list(self, interaction: AtelierInteraction) -> None:
        lists = await server_wildcards(interaction.client.services.db, guild_id_of(interaction))
        await audit(interaction, "wildcards.list")
        await reply(interaction, describe_lists(lists), ephemeral=True)

    # -- stats and audit -----------------------------------------------------------------------
    @app_commands.command(name="stats", description="Jobs, images, render time, failures and top users")
    @app_commands.describe(days="Period in days")
    async def stats(self, interaction: AtelierInteraction,
                    days: app_commands.Range[int, 1, 365] = 30) -> None:
        guild_id = guild_id_of(interaction)
        stats = interaction.client.services.db.stats
        await interaction.response.defer(ephemeral=True, thinking=True)
        summary = await stats.summary(guild_id, days=days)
        jobs = await stats.jobs_per_day(guild_id, days=days)
        images = await stats.images_per_day(guild_id, days=days)
        top = await stats.top_users(guild_id, days=days, limit=8)
        per_image = summary.render_seconds / summary.images if summary.images else 0.0
        headline = (f"{summary.jobs} jobs · {summary.images} images · {summary.failure_rate:.0%} failed · "
                    f"{summary.render_seconds:.0f} s rendering ({per_image:.1f} s/image)")
        day_list, job_counts, image_counts = merge_days(jobs, images)
        names = [(self._name(interaction, uid), n) for uid, n in top]
        png = await asyncio.to_thread(stats_chart_png, ChartData(
            f"Atelier - last {days} days", day_list, job_counts, image_counts, headline, names))
        await audit(interaction, "stats", None, {"days": days})
        tops = ", ".join(f"<@{uid}> {n}" for uid, n in top) or "nobody yet"
        size = await asyncio.to_thread(disk_usage, interaction.client.services.settings.data_dir)
        await interaction.followup.send(
            f"**Last {days} days:** {headline}\nTop users: {tops}\nData on disk: {size / 2**20:,.1f} MB",
            ephemeral=True,
            file=discord.File(io.BytesIO(png), filename="atelier_stats.png"))

    def _name(self, interaction: AtelierInteraction, user_id: int) -> str:
        member = interaction.guild.get_member(user_id) if interaction.guild else None
        user = member or self.bot.get_user(user_id)
        return user.display_name if user is not None else f"user {str(user_id)[-6:]}"

    @app_commands.command(name="audit", description="The latest moderator actions and rejected prompts")
    async def audit_log(self, interaction: AtelierInteraction,
                        action: Literal["all", "moderators", "rejected"] = "all") -> None:
        db = interaction.client.services.db
        entries = await db.audit.list(guild_id_of(interaction), limit=100)
        await audit(interaction, "audit.view")
        if action == "rejected":
            entries = [e for e in entries if e.action == "prompt.rejected"]
        elif action == "moderators":
            entries = [e for e in entries if e.action != "prompt.rejected"]
        if not entries:
            await reply(interaction, "The audit log is empty.", ephemeral=True)
            return
        lines = []
        for e in entries[:AUDIT_SHOWN]:
            details = ", ".join(f"{k}={short_prompt(str(v))[:80]}" for k, v in e.details.items() if v not in
                                (None, "", {}, []))
            target = f" {e.target}" if e.target else ""
            lines.append(f"<t:{int(e.created_at)}:f> <@{e.actor_id}> **{e.action}**{target}"
                         + (f" — {details}" if details else ""))
        await reply(interaction, "\n".join(lines)[:1990], ephemeral=True)


async def setup(bot: commands.Bot) -> None:
    await bot.add_cog(Admin(bot))
