"""Start the local Bedrock: `local-bedrock --port 4599 --engine real` (or `python -m infra.local_bedrock`).

Every option is also a LOCAL_BEDROCK_* environment variable (see settings.py and the README);
a flag wins over the variable.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import structlog
from aiohttp import web
from pydantic import ValidationError

from infra.local_bedrock import catalogue
from infra.local_bedrock.app import build_app
from infra.local_bedrock.settings import Settings
from shared.logs import configure_logging


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="local-bedrock", description=__doc__.splitlines()[0])
    parser.add_argument("--host", help="loopback address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default 4599)")
    parser.add_argument("--engine", choices=["fast", "real"], help="default engine for every model")
    parser.add_argument("--engine-map", help='JSON {"model-id-glob": "fast|real"} of per-model engines')
    parser.add_argument("--preload", action="store_true", help="load the engines before accepting requests")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _arguments(argv)
    configure_logging(args.log_level, json=not sys.stderr.isatty())
    overrides = {key: value for key, value in {
        "host": args.host, "port": args.port, "engine": args.engine,
        "engine_map": json.loads(args.engine_map) if args.engine_map else None,
    }.items() if value is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        sys.exit(f"local-bedrock: invalid settings:\n{exc}")
    log = structlog.get_logger("local_bedrock")
    app = build_app(settings)
    if args.preload:
        app.on_startup.append(_preload)
    log.info("local_bedrock_starting", host=settings.host, port=settings.port, engine=settings.engine,
             engine_map=settings.engine_map)
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None,
                handle_signals=True, shutdown_timeout=5)


async def _preload(app: web.Application) -> None:
    from infra.local_bedrock.app import SERVICE
    import asyncio

    service = app[SERVICE]
    await asyncio.get_running_loop().run_in_executor(None, service.engines.preload, catalogue.MODELS)


if __name__ == "__main__":
    main()
