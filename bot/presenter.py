"""Job state -> Discord message. Pure functions: the same job gives the same message, so a result that
is delivered twice (after a restart) only edits the same message into the same thing."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import discord
from PIL import Image

from generation.references import describe
from generation.request import Kind, RenderRequest
from generation.samplers import sampler_label

if TYPE_CHECKING:
    from storage.jobs import JobRow

PROMPT_CHARS = 300
BAR_CELLS = 12


@dataclass
class Shown:
    """A message to show: text, attachments as (filename, bytes) and an optional view."""

    content: str
    files: list[tuple[str, bytes]] = field(default_factory=list)
    view: discord.ui.View | None = None
    embed: discord.Embed | None = None

    def discord_files(self) -> list[discord.File]:
        # discord.File is a one-shot stream: build fresh ones for every attempt.
        return [discord.File(io.BytesIO(data), filename=name) for name, data in self.files]


def short_prompt(prompt: str) -> str:
    prompt = " ".join(prompt.split())
    if len(prompt) > PROMPT_CHARS:
        prompt = prompt[: PROMPT_CHARS - 1] + "…"
    # Prompts are shown in bold; stray markdown in them must not break the message.
    return discord.utils.escape_markdown(discord.utils.escape_mentions(prompt))


# What a canvas job did (its extra["canvas"], from generation/canvas.py), in the headline.
_CANVAS_WORDS = {"zoom": "zoomed out", "square": "made square", "pan_left": "panned ⬅️",
                 "pan_right": "panned ➡️", "pan_up": "panned ⬆️", "pan_down": "panned ⬇️",
                 "region": "region varied"}


def headline(request: RenderRequest, user_id: int) -> str:
    what = {
        Kind.TXT2IMG: "",
        Kind.VARIATION: " (variation)",
        Kind.UPSCALE: " (upscaled ×2)",
        Kind.IMG2IMG: " (from image)",
        Kind.CANVAS: f" ({_CANVAS_WORDS.get(str(request.extra.get('canvas')), 'canvas')})",
    }[request.kind]
    return f"**{short_prompt(request.prompt)}**{what} — <@{user_id}>"


def notes_line(request: RenderRequest) -> str:
    """The request's notes (e.g. "the prompt was cut after 180 words") as a small last line, or ""."""
    return f"\n-# ⚠️ {'; '.join(request.notes)}" if request.notes else ""


def format_eta(seconds: float) -> str:
    if seconds < 60:
        return f"about {max(1, round(seconds))} s"
    return f"about {round(seconds / 60)} min"


class QueuePlace(Protocol):
    """Where a queued job stands: a JobQueued event or a scheduler QueueEntry."""

    @property
    def position(self) -> int: ...
    @property
    def eta_s(self) -> float: ...
    @property
    def paused(self) -> bool: ...


def queued(request: RenderRequest, user_id: int, where: QueuePlace | None) -> Shown:
    if where is None:
        status = "queued"
    elif where.paused:
        status = "queued — the queue is paused by this server's moderators"
    else:
        status = f"queued — position {where.position}, {format_eta(where.eta_s)}"
    return Shown(f"{headline(request, user_id)} ({status}){notes_line(request)}")


def progress_bar(step: int, total: int) -> str:
    total = max(total, 1)
    filled = round(BAR_CELLS * min(step, total) / total)
    return "▰" * filled + "▱" * (BAR_CELLS - filled) + f" {round(100 * step / total)}%"


def rendering(request: RenderRequest, user_id: int, step: int, total: int,
              preview_png: bytes | None) -> Shown:
    files = [("preview.png", preview_png)] if preview_png else []
    bar = progress_bar(step, total)
    return Shown(f"{headline(request, user_id)} (rendering)\n{bar}{notes_line(request)}", files)


def fit_upload(png: bytes, limit: int) -> tuple[bytes, str]:
    """The image as it can be uploaded to a server whose per-file limit is `limit` bytes: the PNG itself
    when it fits, else a high-quality JPEG, shrunk until it fits. Returns (bytes, file extension).

    Discord refuses a larger file outright (413), and a result that cannot be uploaded would never
    reach its channel. Big grids and 2x upscales of SDXL-sized images pass 10 MiB."""
    if len(png) <= limit:
        return png, "png"
    image = Image.open(io.BytesIO(png)).convert("RGB")
    while True:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90, optimize=True)
        if buf.tell() <= limit or min(image.size) <= 64:
            return buf.getvalue(), "jpg"
        image = image.resize((image.width * 3 // 4, image.height * 3 // 4), Image.Resampling.LANCZOS)


def result(job_id: int, request: RenderRequest, user_id: int, image: bytes, view: discord.ui.View, *,
           spoiler: bool = False, ext: str = "png") -> Shown:
    """A finished job: its image and `view`, the buttons under it (bot.buttons.result_view)."""
    # Discord blurs attachments whose filename starts with SPOILER_ until clicked.
    name = f"{'SPOILER_' if spoiler else ''}atelier_{job_id}.{ext}"
    note = "" if ext == "png" else " · JPEG: the PNG is over this server's upload limit"
    return Shown(
        f"{headline(request, user_id)} · job `{job_id}` · seed {request.seeds[0]}{note}{notes_line(request)}",
        [(name, image)],
        view,
    )


def rendered(job_id: int, request: RenderRequest, user_id: int, jpeg: bytes, *,
             spoiler: bool = False) -> Shown:
    """The grid the moment the render ends (JPEG), without buttons: they come with the final message,
    once the lossless files they work on are stored."""
    name = f"{'SPOILER_' if spoiler else ''}atelier_{job_id}.jpg"
    return Shown(
        f"{headline(request, user_id)} · job `{job_id}` · seed {request.seeds[0]} (saving)"
        f"{notes_line(request)}",
        [(name, jpeg)],
    )


def blocked(job_id: int, request: RenderRequest, user_id: int) -> Shown:
    return Shown(f"{headline(request, user_id)} · job `{job_id}` (hidden: this server does not allow "
                 "NSFW images in this channel)")


def missing(job_id: int, request: RenderRequest, user_id: int) -> Shown:
    return Shown(f"{headline(request, user_id)} · job `{job_id}` (the image file of this job is missing "
                 "or damaged on the server; run the prompt again to get a new one)")


def failed(request: RenderRequest, user_id: int, reason: str) -> Shown:
    return Shown(f"{headline(request, user_id)} (failed: {reason})")


def cancelled(request: RenderRequest, user_id: int) -> Shown:
    return Shown(f"{headline(request, user_id)} (cancelled)")


def details(job_id: int, request: RenderRequest, extra: dict[str, Any] | None = None) -> discord.Embed:
    # The whole prompt, in a code block so it can be copied as typed (an embed description holds 4096
    # characters; prompts are at most 1500). Result messages show it shortened.
    embed = discord.Embed(title=f"Job {job_id}", description=_code_block(request.prompt, 4000))
    if request.negative:
        embed.add_field(name="Negative", value=_code_block(request.negative, 1000), inline=False)
    seeds = ", ".join(str(s) for s in request.seeds)
    embed.add_field(name="Seeds", value=seeds)
    embed.add_field(name="Model", value=request.model)
    embed.add_field(name="Size", value=f"{request.width}×{request.height}")
    embed.add_field(name="Steps", value=str(request.steps))
    embed.add_field(name="Guidance", value=f"{request.guidance:g}")
    embed.add_field(name="Sampler", value=sampler_label(request.sampler))
    if request.strength is not None:
        embed.add_field(name="Strength", value=f"{request.strength:g}")
    embed.add_field(name="Kind", value=str(request.kind))
    if request.kind == Kind.CANVAS:
        canvas = str(request.extra.get("canvas"))
        embed.add_field(name="Canvas", value="Vary (Region), custom mask" if request.mask is not None
                        else _CANVAS_WORDS.get(canvas, canvas))
        if request.feather:
            embed.add_field(name="Feather", value=f"{request.feather} px")
    if request.loras:
        embed.add_field(name="LoRAs", value=" ".join(f"`<lora:{n}:{w:g}>`" for n, w in request.loras))
    if request.references:
        # By the images' hashes: the weights as the flags took them.
        embed.add_field(name="Image references", value=f"`{describe(request.references)}`"[:1024],
                        inline=False)
    for key, value in (extra or {}).items():
        embed.add_field(name=key, value=str(value))
    return embed


_PANS = {"pan_left": "Pan ⬅️", "pan_right": "Pan ➡️", "pan_up": "Pan ⬆️", "pan_down": "Pan ⬇️"}


def action_label(job: JobRow, parent: JobRow | None) -> str:
    """The button or command that made `job` from `parent`, as the member clicked it."""
    request = RenderRequest.from_json(job.request)
    if parent is not None and job.parent_index is None:
        # 🔄 and 🖋 act on a whole job (no image index) and keep its kind: a reroll of a variation varies.
        same = RenderRequest.from_json(parent.request).prompt == request.prompt
        return "🔄" if same else "🖋 Remix"
    index = job.parent_index or 0
    grid = parent is not None and RenderRequest.from_json(parent.request).count > 1
    if job.kind == Kind.UPSCALE:
        return f"U{index + 1}" if grid else "Upscale"
    if job.kind == Kind.VARIATION:
        if grid:
            return f"V{index + 1}"
        return "Vary (Subtle)" if (request.strength or 0) < 0.5 else "Vary (Strong)"
    if job.kind == Kind.CANVAS:
        # `canvas` is inherited by a canvas job's own children: read it only on canvas jobs.
        canvas = str(request.extra.get("canvas", ""))
        if canvas == "zoom" and request.box is not None and request.box[2]:
            return f"Zoom Out {request.width / request.box[2]:.2g}x"
        return {"square": "Make Square", "region": "Vary (Region)"}.get(canvas) or _PANS.get(canvas, "Canvas")
    return "/imagine with an image" if job.kind == Kind.IMG2IMG else "/imagine"


def _code_block(text: str, limit: int) -> str:
    # A backtick run would close the block early: break it with a zero-width space.
    body = text.replace("```", "`\u200b``")[: limit - 8]
    return f"```\n{body}\n```"


def encode_preview(image: Image.Image, max_side: int = 256) -> bytes:
    image = image.copy()
    image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()
