"""The diffusers engine: one batch of compatible requests -> images, with previews and cancel.

Synchronous on purpose: callers run it on the engine's one torch thread (`Engine.call`): a pipeline is not
thread-safe, torch must never run on the event loop, and on CPU a second thread running torch's parallel
ops slows every render in the process (generation/threads.py). Warm-up, renders and their safety checks
run there, and so does model work for commands (captions, upload checks): between two steps of the render
running there, or at once when none runs (`Engine.side_call`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import logging
import math
import os
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from PIL import Image

from generation import knobs
from generation.canvas import canvas_inputs, overlay
from generation.errors import InvalidRequest, RenderCancelled, RenderError
from generation.families import Family, family_of
from generation.loras import expand_embeddings
from generation.models import VAE_TILE_PIXELS, ModelRegistry, ModelSpec, fit_vae, is_oom
from generation.previews import PreviewThrottle, latent_to_preview, placeholder, x0_estimate
from generation.prompts import MAX_CHUNKS, call_arguments, chunk_count
from generation.references import AdapterState, EmbeddingCache, call_embeds
from generation.request import Kind, RenderRequest
from generation.safety import SafetyChecker
from generation.threads import use_threads
from generation.validate import ASPECTS, Limits, size_for, upscale_of

if TYPE_CHECKING:
    from storage.blobs import BlobStore

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

# (step 1-based, total, one small preview per request); called on the render thread.
ProgressFn = Callable[[int, int, list[Image.Image]], None]


@dataclass(frozen=True)
class _Slot:
    """One image to make: which request it belongs to and its own seed."""

    request: int
    seed: int


# Test-only: `atelier run` as a subprocess holds its renders while the file at this path exists.
HOLD_FILE_ENV = "ATELIER_TEST_HOLD_FILE"


class StepGate:
    """A deterministic hold for tests that need a job still rendering (GPUs make any "long" render
    short). While closed, a render waits at the end of its current step; a stop or cancel still ends
    it. Open unless a test closes it: production pays one flag check per step. In-process tests call
    close() / open(); a test driving a bot process sets ATELIER_TEST_HOLD_FILE (read once, here)."""

    POLL_S = 0.05

    def __init__(self, hold_file: str | None = None) -> None:
        self._open = threading.Event()
        self._open.set()
        self._hold_file = hold_file
        self.holding = threading.Event()  # set while a render waits here

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    def _closed(self) -> bool:
        return not self._open.is_set() or (self._hold_file is not None and os.path.exists(self._hold_file))

    def hold(self, should_stop: Callable[[], bool] | None, idle: Callable[[], bool] | None = None) -> bool:
        """Wait while closed, running `idle()` meanwhile (the engine's waiting command calls: a held render
        is between two steps). True when told to stop meanwhile (the caller cancels the render)."""
        if not self._closed():
            return False
        self.holding.set()
        try:
            while self._closed():
                if should_stop is not None and should_stop():
                    return True
                if idle is None or not idle():
                    time.sleep(self.POLL_S)
            return False
        finally:
            self.holding.clear()


class Engine:
    def __init__(
        self,
        registry: ModelRegistry,
        max_images_per_call: int | None = None,
        vae_tile_pixels: int = VAE_TILE_PIXELS,
        preview_interval_s: float = 1.5,
        blobs: BlobStore | None = None,
        threads: int | None = None,
    ) -> None:
        self.registry = registry
        # Intra-op threads of the torch thread (None: torch's default, every core).
        self.threads = threads
        # Reference images come from the blob store; their embeddings are cached there (references.py).
        self.embeddings = EmbeddingCache(blobs)
        # A memory ceiling known in advance (e.g. a small GPU); out-of-memory splits further on its own.
        self.max_images_per_call = max_images_per_call
        # Images larger than this are decoded in tiles (see fit_vae).
        self.vae_tile_pixels = vae_tile_pixels
        # Least wall-clock time between two live previews of a render (first and last steps always get one).
        self.preview_interval_s = preview_interval_s
        self._lock = threading.Lock()
        self.step_gate = StepGate(os.environ.get(HOLD_FILE_ENV) or None)
        self._thread: ThreadPoolExecutor | None = None
        self._thread_lock = threading.Lock()
        # Command work waiting for the torch thread (side_call): run between two steps of a render, or by
        # the thread's own queue when no render runs.
        self._between: collections.deque[Callable[[], None]] = collections.deque()

    @property
    def thread(self) -> ThreadPoolExecutor:
        """The one thread that runs this engine's torch work (see the module's note)."""
        with self._thread_lock:
            if self._thread is None:
                threads = self.threads
                self._thread = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="atelier-torch",
                    initializer=None if threads is None else functools.partial(use_threads, threads))
            return self._thread

    async def call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`fn(*args, **kwargs)` on the torch thread, after what was handed to it before."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.thread, functools.partial(fn, *args, **kwargs))

    async def side_call(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Model work for a command (a caption, an upload's safety check, /shorten) that must not wait for a
        whole render: on the torch thread between two steps of the render running there (one such call
        per step), or at once when none runs. A second thread would share the render's cores and slow it
        far more than the call's own time (bench/describe.py); here the render pauses for just that time."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not future.done():  # the command may have given up waiting
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

        def job() -> None:
            if future.done():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # the command's failure, never the render's
                loop.call_soon_threadsafe(settle, False, exc)
            else:
                loop.call_soon_threadsafe(settle, True, result)

        self._between.append(job)
        # Each call also queues one turn on the thread: if no step took the job by then, that turn runs it.
        self.thread.submit(self.run_between_steps)
        return await future

    def run_between_steps(self) -> bool:
        """On the torch thread: run the oldest waiting command call, if any. True when one ran."""
        try:
            job = self._between.popleft()
        except IndexError:
            return False
        job()
        return True

    def close(self) -> None:
        """End the torch thread (after its work): a process that opened the engine and stops, or fails to
        start, must not keep a thread of it. Used again, the engine makes a new one."""
        with self._thread_lock:
            pool, self._thread = self._thread, None
        if pool is not None:
            pool.shutdown(wait=True)

    def settle(self) -> None:
        """Wait until everything handed to the torch thread so far has ended (a worker closing)."""
        if self._thread is not None:
            self._thread.submit(lambda: None).result()

    def safety_checker(self, model: str) -> SafetyChecker | None:
        """The NSFW checker for `model`'s images (loads the model if needed)."""
        return self.registry.safety_checker(model)

    def warm_up(
        self, model: str | None = None, *, max_batch: int = 1, every_size: bool | None = None
    ) -> None:
        """Before the bot takes work: load `model` (default: the default one) and render once, so the first
        member does not pay for loading it.

        With ATELIER_COMPILE (or `every_size`) each model that stays loaded renders every size and batch
        its jobs will use (warm_up_plan): a compiled denoiser compiles again for each new input shape, and
        that takes minutes a member would otherwise wait through, holding the queue."""
        registry = self.registry
        every_size = registry.compile if every_size is None else every_size
        names = [registry.spec(model).name]
        if every_size and model is None:
            names = registry.names()[: registry.max_loaded]
            if len(registry.names()) > len(names):
                log.warning(
                    "models %s are not warmed up: only %d stay loaded (ATELIER_MAX_LOADED_MODELS), so each "
                    "compiles again, during its first jobs, whenever it is loaded",
                    ", ".join(registry.names()[len(names):]), registry.max_loaded,
                )
        for name in names:
            if not registry.mark_warm(name):
                continue
            spec = registry.spec(name)
            started = time.perf_counter()
            plan = (warm_up_plan(spec, max_batch, self.max_images_per_call) if every_size
                    else [_warm_request(spec)])
            for request in plan:
                # An upscale starts from an image of its parent's size; a flat grey one will do.
                parent = Image.new("RGB", (request.width // 2, request.height // 2), (128, 128, 128))
                # The denoiser is what compiles; a VAE decode at each size would cost as much again.
                self.render([request], None if request.kind == Kind.TXT2IMG else [parent],
                            decode=not every_size)
            log.info("model %r is warm (%d sizes and batches, %.0f s)", spec.name, len(plan),
                     time.perf_counter() - started)

    def render(
        self,
        requests: Sequence[RenderRequest],
        sources: Sequence[Image.Image | None] | None = None,
        *,
        on_progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None,
        decode: bool = True,
    ) -> list[list[Image.Image]]:
        """Render compatible requests in one pipeline call (split only on out-of-memory).

        Returns one list of images per request, in seed order. Raises RenderCancelled when
        `should_stop()` turns true at a step boundary, RenderError when even one image does not fit.
        `decode=False` stops at the latents and returns empty lists (the warm-up's renders).
        """
        if not requests:
            return []
        key = requests[0].batch_key
        if any(r.batch_key != key for r in requests):
            raise ValueError("requests in one render must share a batch_key")
        first = requests[0]
        img2img = first.kind != Kind.TXT2IMG
        if img2img:
            if sources is None or len(sources) != len(requests) or any(s is None for s in sources):
                raise ValueError(f"{first.kind} requests need one source image each")
        if should_stop is not None and should_stop():
            raise RenderCancelled()

        spec = self.registry.spec(first.model)
        with self._lock:
            canvas = first.kind == Kind.CANVAS
            if canvas:
                pipe = self.registry.inpaint(spec.name)
            else:
                pipe = self.registry.img2img(spec.name) if img2img else self.registry.pipeline(spec.name)
            requests = self._use_adapters(spec.name, pipe, requests)
            adapter = self._use_references(spec.name, first)
            # SDXL's refiner finishes txt2img renders only (a variation or upscale is already refined).
            refiner = refiner_config = None
            if not img2img and spec.refiner is not None:
                refiner = self.registry.img2img(spec.refiner)
                refiner_config = self.registry.scheduler_config(spec.refiner)
            slots = [_Slot(i, seed) for i, r in enumerate(requests) for seed in r.seeds]
            masks: list[Image.Image] | None = None
            prepared: list[Image.Image] | None
            if canvas:
                assert sources is not None
                laid = [canvas_inputs(r, s) for r, s in zip(requests, sources, strict=True)]
                prepared, masks = [image for image, _ in laid], [mask for _, mask in laid]
            else:
                prepared = self._prepare_sources(requests, sources) if img2img else None
            family = family_of(spec.family)
            groups = self._groups(requests, slots, family)
            # Prompts of different lengths (in 77-token chunks) go in separate calls: padding the shorter
            # with empty chunks to share a call would change its pixels from its solo render.
            lengths = [chunk_count(pipe, r.prompt, r.negative) for r in requests]
            groups = [[s for s in g if lengths[s.request] == n] for g in groups
                      for n in sorted({lengths[s.request] for s in g})]
            if self.max_images_per_call:
                size = max(1, self.max_images_per_call)
                groups = [g[i : i + size] for g in groups for i in range(0, len(g), size)]
            results: dict[_Slot, Image.Image] = {}
            run = _Run(
                engine=self,
                pipe=pipe,
                family=family,
                refiner=refiner,
                refiner_config=refiner_config,
                refine_at=spec.refiner_at,
                requests=requests,
                sources=prepared,
                masks=masks,
                on_progress=on_progress,
                should_stop=should_stop,
                chunks=[list(g) for g in groups],
                decode=decode,
                adapter=adapter,
            )
            run.execute(results)
            if canvas and prepared is not None and masks is not None:
                # The untouched pixels go back exactly as they were (the VAE round trip blurs them).
                for slot in results:
                    results[slot] = overlay(results[slot], prepared[slot.request], masks[slot.request],
                                            requests[slot.request].feather)
        return [[results[s] for s in slots if s.request == i and s in results] for i in range(len(requests))]

    # -- helpers ------------------------------------------------------------------------------

    def _use_adapters(self, model: str, pipe: Any,
                      requests: Sequence[RenderRequest]) -> Sequence[RenderRequest]:
        """Switch the model to the batch's LoRA set and add the embeddings its prompts name; returns the
        requests with multi-vector embedding words expanded for the prompt encoder."""
        self.registry.use_loras(model, requests[0].loras)
        if not self.registry.use_embeddings(model, [t for r in requests for t in (r.prompt, r.negative)]):
            return requests
        return [replace(r, prompt=expand_embeddings(pipe, r.prompt),
                        negative=expand_embeddings(pipe, r.negative)) for r in requests]

    def _use_references(self, model: str, first: RenderRequest) -> AdapterState | None:
        """Switch the UNet that renders this batch to its image references (or off them): model `model`'s
        own, or for a canvas job its `?inpaint=` checkpoint's, which keeps no references unless it has an
        IP-Adapter of its own (Zoom Out of a referenced job still works, guided by its prompt alone)."""
        spec = self.registry.spec(model)
        references = first.references
        if first.kind == Kind.CANVAS and spec.inpaint is not None:
            model = spec.inpaint
            if self.registry.spec(model).ip_adapter is None:
                references = ()
        adapter = self.registry.use_references(model, references)
        return adapter if references else None

    @staticmethod
    def _prepare_sources(
        requests: Sequence[RenderRequest], sources: Sequence[Image.Image | None] | None
    ) -> list[Image.Image]:
        # img2img keeps the input's size, so the request's output size is reached by resizing first:
        # for an upscale this Lanczos resize is the first half of the hires fix.
        assert sources is not None
        out = []
        for request, source in zip(requests, sources, strict=True):
            assert source is not None
            image = source.convert("RGB")
            if image.size != (request.width, request.height):
                image = image.resize((request.width, request.height), Image.Resampling.LANCZOS)
            out.append(image)
        return out

    @staticmethod
    def _groups(requests: Sequence[RenderRequest], slots: list[_Slot], family: Family) -> list[list[_Slot]]:
        # SDXL zeroes the negative embedding only when no negative prompt is passed at all, so
        # images with and without a negative go in separate calls to match their solo renders.
        if not family.split_negative:
            return [slots]
        with_neg = [s for s in slots if requests[s.request].negative]
        without = [s for s in slots if not requests[s.request].negative]
        return [g for g in (without, with_neg) if g]


def _warm_request(spec: ModelSpec, width: int = 64, height: int = 64, images: int = 1,
                  chunks: int = 1) -> RenderRequest:
    return RenderRequest(
        prompt=" BREAK ".join(["warm up"] * chunks),  # BREAK starts a new 75-token chunk
        model=spec.name,
        width=width,
        height=height,
        steps=1,
        guidance=spec.default_guidance,
        sampler=spec.default_sampler,
        seeds=tuple(range(images)),
    )


def warm_up_plan(spec: ModelSpec, max_batch: int, per_call: int | None = None) -> list[RenderRequest]:
    """One-step renders at every denoiser input shape the model's jobs will use: each aspect's size with each
    number of images a call may hold, the 2x upscale of each aspect (one image), and prompts of two and
    three 75-token chunks (longer text embeddings). Uploads for img2img keep their own aspect: those
    shapes cannot be listed, and rely on torch.compile's dynamic shapes, which the varied sizes here
    turn on."""
    # The scheduler fills a call up to max_batch images, but a job's own images always run together, so
    # one job of the largest count goes past a smaller max_batch; `per_call` is the engine's own ceiling.
    max_images = max(max_batch, Limits().max_count)
    if per_call:
        max_images = min(max_images, per_call)
    plan: list[RenderRequest] = []
    upscales: list[RenderRequest] = []
    for aspect in ASPECTS:
        width, height = size_for(aspect, spec.family, spec.size)
        plan += [_warm_request(spec, width, height, n) for n in range(1, max_images + 1)]
        with contextlib.suppress(InvalidRequest):  # a size this model cannot upscale is never asked for
            upscales.append(upscale_of(_warm_request(spec, width, height), 0, source="warm-up",
                                       family=spec.family))
    if family_of(spec.family).t5:
        return plan + upscales  # T5 embeddings are padded to one length whatever the prompt
    width, height = size_for(ASPECTS[0], spec.family, spec.size)
    long_prompts = [_warm_request(spec, width, height, chunks=n) for n in range(2, MAX_CHUNKS + 1)]
    return plan + upscales + long_prompts


def stop_early(pipe: Any, step_index: int, stop: int, captured: dict[str, Any], kwargs: dict[str, Any]
               ) -> dict[str, Any]:
    """--stop: once `stop` percent of the call's steps are done, end the loop (diffusers skips the steps
    left once `_interrupt` is set) and hand back the denoised estimate of this step as the latents the
    pipeline decodes: the picture so far, not its noisy latent."""
    total = int(getattr(pipe, "_num_timesteps", 0) or 0)
    if not total or step_index + 1 < math.ceil(total * stop / 100) or "x0" not in captured:
        return kwargs
    sched, model_output, ts, sample, out = captured["x0"]
    pipe._interrupt = True
    latents = kwargs.get("latents")
    if latents is not None:
        kwargs["latents"] = x0_estimate(sched, model_output, ts, sample, out).to(latents.dtype)
    return kwargs


class _Run:
    """State of one render() call: pending chunks, progress accounting, previews."""

    def __init__(
        self,
        *,
        engine: Engine,
        pipe: Any,
        family: Family,
        requests: Sequence[RenderRequest],
        sources: list[Image.Image] | None,
        masks: list[Image.Image] | None = None,
        refiner: Any = None,
        refiner_config: Any = None,
        refine_at: float = 1.0,
        on_progress: ProgressFn | None,
        should_stop: Callable[[], bool] | None,
        chunks: list[list[_Slot]],
        decode: bool = True,
        adapter: AdapterState | None = None,
    ) -> None:
        self.engine = engine
        # The IP-Adapter switched on for this batch's references (None: a plain render).
        self.adapter = adapter
        self.pipe = pipe
        self.scheduler_config = engine.registry.scheduler_config(requests[0].model)
        self.spec = engine.registry.spec(requests[0].model)
        self.family = family
        # The second stage (an SDXL refiner img2img pipeline) and the fraction of the steps the base runs.
        self.refiner = refiner
        self.refiner_config = refiner_config
        self.refine_at = refine_at
        self.requests = requests
        self.sources = sources
        self.masks = masks
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.pending = chunks
        self.decode = decode
        self.chunks_done = 0
        self.previews: list[Image.Image] = [placeholder(r.width, r.height) for r in requests]

    def execute(self, results: dict[_Slot, Image.Image]) -> None:
        registry = self.engine.registry
        evicted = False
        while self.pending:
            chunk = self.pending.pop(0)
            try:
                images = self._call(chunk)
            except RenderCancelled:
                raise
            except Exception as exc:
                if not is_oom(exc):
                    raise
                # The traceback's frames still hold the failed call's activations: release them, or
                # the memory cannot come back before the retry.
                traceback.clear_frames(exc.__traceback__)
                if not evicted:
                    # Other resident models are the cheapest memory to win back: drop them and retry the
                    # same chunk before paying for smaller batches.
                    evicted = True
                    if registry.evict_others(self.requests[0].model):
                        log.warning("out of memory for %d images; unloaded the other models", len(chunk))
                        self.pending.insert(0, chunk)
                        continue
                registry._free_memory()
                if len(chunk) == 1:
                    r = self.requests[chunk[0].request]
                    raise RenderError(
                        f"Out of GPU memory even for a single {r.width}x{r.height} image. "
                        "Try a smaller size or fewer steps."
                    ) from exc
                half = len(chunk) // 2
                log.warning("out of memory for %d images; retrying in halves", len(chunk))
                # Later chunks are split too so the same batch size is not tried again.
                rest = [part for c in self.pending for part in (c[:half], c[half:]) if part] if half else []
                self.pending = [chunk[:half], chunk[half:], *rest]
                continue
            if self.decode:
                for slot, image in zip(chunk, images, strict=True):
                    results[slot] = image
            self.chunks_done += 1

    def _image_embeds(self, pipe: Any, rows: int) -> list[Any]:
        """The references' embeddings for a call of `rows` images (encoded once per image and encoder, then
        read from the cache), with the unconditional half when the pipeline runs classifier-free guidance."""
        assert self.adapter is not None
        first = self.requests[0]
        cfg = first.guidance > 1 and pipe.unet.config.time_cond_proj_dim is None
        return call_embeds(self.adapter, self.engine.embeddings, first.references, rows, cfg,
                           pipe.unet.dtype, pipe.unet.device)

    def _total_chunks(self) -> int:
        return self.chunks_done + 1 + len(self.pending)

    # Over the complexity limit for now: one call with every model option; split it in its own change.
    def _call(self, chunk: list[_Slot]) -> list[Image.Image]:  # noqa: C901
        import torch

        first = self.requests[0]
        pipe = self.pipe
        captured: dict[str, Any] = {}

        def fresh_scheduler(target: Any, config: Any, model_options: dict[str, Any] | None = None) -> Any:
            # A fresh scheduler per call: schedulers keep per-run state and the sampler may differ per batch.
            scheduler = self.family.make_scheduler(first.sampler, config, model_options,
                                                   seeds=[s.seed for s in chunk])
            original_step = scheduler.step

            def step(model_output: Any, timestep: Any, sample: Any, *args: Any, **kwargs: Any) -> Any:
                out = original_step(model_output, timestep, sample, *args, **kwargs)
                if self.on_progress is not None or first.stop < 100:
                    captured["x0"] = (scheduler, model_output, timestep, sample, out)
                return out

            scheduler.step = step  # type: ignore[method-assign]
            target.scheduler = scheduler
            return scheduler

        scheduler = fresh_scheduler(pipe, self.scheduler_config, self.spec.scheduler_options)
        # Steps the base stage took, when a refiner finishes the render: its steps count on from there.
        phase = {"offset": 0}

        # Index of each request's first image inside this chunk (the one previewed).
        preview_rows: dict[int, int] = {}
        for row, slot in enumerate(chunk):
            preview_rows.setdefault(slot.request, row)

        throttle = PreviewThrottle(self.engine.preview_interval_s)

        def on_step_end(p: Any, step_index: int, timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            if self.should_stop is not None and self.should_stop():
                raise RenderCancelled()
            if first.stop < 100:
                kwargs = stop_early(p, step_index, first.stop, captured, kwargs)
            if self.on_progress is not None:
                total_steps = int(getattr(p, "_num_timesteps", 0) or first.steps)
                if self.refiner is not None:
                    # Base and refiner share the base's full schedule between them (2 per step for Heun).
                    total_steps = len(scheduler.timesteps)
                index = phase["offset"] + step_index
                # Steps between previews report progress with the last preview again: no device sync.
                if "x0" in captured and throttle.due(index, total_steps):
                    sched, model_output, ts, sample, out = captured["x0"]
                    x0 = x0_estimate(sched, model_output, ts, sample, out)
                    for req, row in preview_rows.items():
                        self.previews[req] = latent_to_preview(x0[row], self.family, first.width,
                                                               first.height)
                captured.clear()
                done = self.chunks_done * total_steps + min(index + 1, total_steps)
                self.on_progress(done, total_steps * self._total_chunks(), list(self.previews))
            self.engine.run_between_steps()  # a command's model call waiting for this thread, if any
            if self.engine.step_gate.hold(self.should_stop, self.engine.run_between_steps):
                raise RenderCancelled()
            return kwargs

        prompts = [self.requests[s.request].prompt for s in chunk]
        negatives = [self.requests[s.request].negative for s in chunk]
        generators = [torch.Generator("cpu").manual_seed(s.seed) for s in chunk]
        call: dict[str, Any] = {
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "generator": generators,
            "callback_on_step_end": on_step_end,
            "output_type": "pil" if self.decode else "latent",
            # Per-model settings (clip_skip, guidance_rescale): the model name in the batch key covers them.
            **self.spec.call_options(inspect.signature(pipe.__call__).parameters),
        }
        if self.family.t5:
            # T5 reads up to this many tokens (its default would cut Flux-dev at 512 and pad schnell to it).
            call["max_sequence_length"] = self.family.max_prompt_tokens
        fit_vae(pipe, first.width, first.height, len(chunk), self.engine.vae_tile_pixels)
        if self.sources is not None:
            call["image"] = [self.sources[s.request] for s in chunk]
            call["strength"] = first.strength
            # img2img runs int(steps * strength) steps; never let that round down to none.
            strength = first.strength or 1.0
            steps = max(first.steps, math.ceil(1 / strength))
            while int(steps * strength) < 1:
                steps += 1
            call["num_inference_steps"] = steps
        if self.masks is not None:
            call["mask_image"] = [self.masks[s.request] for s in chunk]
        if self.adapter is not None:
            call["ip_adapter_image_embeds"] = self._image_embeds(pipe, len(chunk))
        if self.sources is None or self.family.flow or self.masks is not None:
            # SD3 / Flux img2img and every inpaint pipeline render at the model's native size unless told
            # (the source is already laid out at the request's size).
            call["width"] = first.width
            call["height"] = first.height
        refiner_scheduler = None
        try:
            # Prompts go in as embeddings: chunked past 77 tokens and weighted (generation/prompts.py). A
            # clip_skip in the call must reach that encoding: the pipeline ignores it beside embeddings.
            clip_skip = call.pop("clip_skip", None)
            prompt_args = call_arguments(pipe, prompts, negatives, clip_skip=clip_skip)
            prompt_args = knobs.chaos_jitter(prompt_args, [(s.seed, self.requests[s.request].chaos)
                                                           for s in chunk])
            call.update(prompt_args)
            with torch.inference_mode(), knobs.applied(pipe, first, self.family.name), \
                    knobs.applied(self.refiner, first, self.family.name):
                if self.refiner is None:
                    result = pipe(**call)
                else:
                    # Base for the first `refine_at` of the noise schedule, handing over latents (no decode);
                    # the refiner denoises the rest from there, with fresh generators of the same seeds.
                    latents = pipe(**{**call, "output_type": "latent"}, denoising_end=self.refine_at).images
                    phase["offset"] = int(getattr(pipe, "_num_timesteps", 0))
                    refiner_scheduler = fresh_scheduler(self.refiner, self.refiner_config)
                    fit_vae(self.refiner, first.width, first.height, len(chunk), self.engine.vae_tile_pixels)
                    skip = {*prompt_args, "width", "height", "output_type", "ip_adapter_image_embeds"}
                    refine = {k: v for k, v in call.items() if k not in skip}
                    # The refiner's own encoder (OpenCLIP-G only) encodes the prompts again.
                    refine.update(call_arguments(self.refiner, prompts, negatives, clip_skip=clip_skip))
                    refine["generator"] = [torch.Generator("cpu").manual_seed(s.seed) for s in chunk]
                    result = self.refiner(**refine, image=latents, denoising_start=self.refine_at)
        finally:
            # The wrapped step closes over this run (its images, previews, sources) and the scheduler's
            # own bound step: a reference cycle that the pipeline keeps reachable until the next call and
            # that only a full GC pass would then free. Break it so the memory goes back at once
            # (bench/memory.py: resident growth per job fell from ~1 MB to ~0).
            del scheduler.step
            if refiner_scheduler is not None:
                del refiner_scheduler.step
                self.engine.registry.restore_vae_dtype(self.refiner)
            captured.clear()
            self.engine.registry.restore_vae_dtype(pipe)
        return list(result.images) if self.decode else []
