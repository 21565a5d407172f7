"""The `atelier` command: run | generate | demo | tiny-model | worker.

Bad input ends with a one-line message and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

log = logging.getLogger("atelier")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atelier", description="Self-hosted Stable Diffusion Discord bot")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="connect to Discord and serve")

    gen = sub.add_parser("generate", help="one offline render to files through the same engine")
    gen.add_argument("prompt")
    gen.add_argument("--negative", default=None)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--count", type=int, default=None)
    gen.add_argument("--aspect", default=None)
    gen.add_argument("--steps", type=int, default=None)
    gen.add_argument("--guidance", type=float, default=None)
    gen.add_argument("--sampler", default=None)
    gen.add_argument("--model", default=None, help="a configured model's name, or a model folder / file")
    gen.add_argument("--strength", type=float, default=None)
    gen.add_argument("--variation-of", default=None, metavar="FILE")
    gen.add_argument("--strong", action="store_true", help="strong variation (default subtle)")
    gen.add_argument("--upscale", default=None, metavar="FILE")
    gen.add_argument("--image", default=None, metavar="FILE", help="img2img source")
    gen.add_argument("--out", default="out")

    demo = sub.add_parser("demo", help="the sandbox Discord server and the bot, side by side, offline")
    demo.add_argument("--port", type=int, default=0)
    demo.add_argument("--serve", action="store_true",
                      help="after the scripted run, keep the sandbox and the bot running, with the sandbox's "
                           "channel page and the web gallery to use in a browser (Ctrl-C stops)")
    demo.add_argument("--web-port", type=int, default=0,
                      help="the web gallery's port with --serve (default: a free one)")
    demo.add_argument("--out", default="out/demo")

    tiny = sub.add_parser("tiny-model", help="write the tiny offline model to DIR")
    tiny.add_argument("dir")
    tiny.add_argument("--family", default=None,
                      choices=["sd15", "sd2", "sdxl", "sd3", "flux", "flux-schnell", "flux-dev"],
                      help="which model family (default sd15; flux is flux-dev)")
    tiny.add_argument("--xl", action="store_true", help="the SDXL-shaped tiny model (as --family sdxl)")

    worker = sub.add_parser("worker", help="a remote renderer: pull batches from ATELIER_BROKER_URL")
    worker.add_argument("--name", default=None, help="unique per worker (default: host name and device)")
    worker.add_argument("--models", default=None,
                        help="comma-separated names of configured models to serve (default: all)")
    worker.add_argument("--slots", type=int, default=2, help="batches held at once (one rendering, one next)")
    worker.add_argument("--max-batch", type=int, default=None, help="images per pipeline call")
    worker.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default ATELIER_DEVICE)")
    worker.add_argument("--ack-wait", type=float, default=30.0,
                        help="seconds before a dead worker's batch goes to another (set by the first worker)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bot.config import Settings

    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from bot.services import StartupFailed
    from generation.errors import AtelierError
    from storage.errors import StorageError

    try:
        if args.command == "run":
            from bot.app import run_bot

            return run_bot(settings)
        if args.command == "generate":
            from bot.generate import generate

            return generate(settings, args)
        if args.command == "demo":
            from bot.demo import demo

            return demo(settings, args)
        if args.command == "tiny-model":
            from bot.generate import write_tiny_model

            return write_tiny_model(args)
        if args.command == "worker":
            from bot.worker_cli import worker

            return worker(settings, args)
    except AtelierError as exc:
        print(f"error: {exc.user_message}", file=sys.stderr)
        return 2
    except (StorageError, StartupFailed) as exc:  # a data dir in use or unusable, Discord refusing us
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 1


if __name__ == "__main__":
    sys.exit(main())
