"""`python -m gateway.lifecycle`: the lifecycle worker (gateway/lifecycle/worker.py).

Runs a pass over every bucket with a lifecycle configuration every `intervalSeconds` (config.json
"lifecycle", LIFECYCLE_INTERVAL_SECONDS; 3600), or one pass with --once. It talks to the dmd as a
gateway does (METADATA_HOST / METADATA_PORT, DATA_HOST / DATA_PORT, DMD_SECRET); run one worker
beside any number of gateways. A pass interrupted anywhere can simply be run again.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from gateway.context import Services
from gateway.lifecycle.worker import run_pass
from shared.config import ConfigError, load_config
from shared.log import get_logger, log_event, setup_logging

log = get_logger("lifecycle")


async def run(once: bool) -> int:
    config = load_config()
    setup_logging(config.log_level)
    services = Services.from_config(config)
    await services.setup()   # retries until the dmd answers
    try:
        while True:
            started = time.monotonic()
            reports = await run_pass(services)
            log_event(log, logging.INFO, "lifecycle pass done", buckets=len(reports),
                      durationMs=round((time.monotonic() - started) * 1000),
                      dayInSeconds=config.lifecycle_day_seconds)
            if once:
                return 0
            await asyncio.sleep(max(0.0, config.lifecycle_interval_seconds - (time.monotonic() - started)))
    finally:
        await services.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.lifecycle", description=__doc__)
    parser.add_argument("--once", action="store_true", help="run one pass and exit")
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args.once))
    except ConfigError as exc:
        print(f"lifecycle: configuration error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
