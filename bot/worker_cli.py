"""`atelier worker`: the CLI glue that turns settings and flags into a remote renderer
(generation.remote.worker_process). Bad flags or a refusing broker end in one line and exit 2."""

from __future__ import annotations

import argparse
import asyncio
import socket

from bot.config import Settings
from generation.errors import InvalidRequest


def worker(settings: Settings, args: argparse.Namespace) -> int:
    from bot.services import open_registry
    from generation.engine import Engine
    from generation.remote.broker import BrokerRefused
    from generation.remote.wire import Subjects, WireError
    from generation.remote.worker_process import WorkerOptions, serve

    if settings.broker_url is None:
        raise InvalidRequest("ATELIER_BROKER_URL is not set: a worker needs the broker to pull jobs from.")
    if args.slots < 1 or (args.max_batch is not None and args.max_batch < 1):
        raise InvalidRequest("--slots and --max-batch must be at least 1.")
    if not 1 <= args.ack_wait <= 3600:
        raise InvalidRequest("--ack-wait must be between 1 and 3600 seconds.")
    try:
        sources = settings.model_sources()
        subjects = Subjects(settings.broker_prefix)
    except (ValueError, WireError) as exc:
        raise InvalidRequest(str(exc)) from exc
    configured = [name for name, _ in sources]
    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else configured
    unknown = [m for m in models if m not in configured]
    if unknown or not models:
        raise InvalidRequest(
            f"--models: {', '.join(unknown) or 'none given'}; configured: {', '.join(configured)}.")
    device = args.device or settings.device
    try:
        # Only the served models: a worker's registry is what it announces.
        served = [(n, s) for n, s in sources if n in models]
        registry = open_registry(settings, served, device)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    max_batch = args.max_batch or settings.max_batch
    engine = Engine(registry, preview_interval_s=settings.preview_interval, threads=settings.torch_threads)
    options = WorkerOptions(name=args.name or f"{socket.gethostname()}-{device}", models=models,
                            slots=args.slots, max_batch=max_batch, device=registry.device, subjects=subjects,
                            ack_wait=args.ack_wait)
    try:
        asyncio.run(serve(settings.broker_url.get_secret_value(), engine, options))
    except BrokerRefused as exc:
        raise InvalidRequest(f"{exc}.") from None
    return 0
