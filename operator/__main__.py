"""``python -m pot.operator``: run the operator (kopf, with Lease leader election).

Graceful shutdown: kopf turns SIGTERM/SIGINT into its stop flag, runs the
cleanup handler (stop acting, release the Lease) and exits. /healthz and
/metrics are served on ``--metrics-port`` (POT_METRICS_PORT, default 8080).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from pot import errors


def main(argv: list[str] | None = None) -> int:
    """Parse flags, then hand over to kopf until a signal stops it."""
    parser = argparse.ArgumentParser(prog="python -m pot.operator", description=__doc__)
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="port of /metrics and /healthz (0: off)"
    )
    parser.add_argument("--verbose", action="store_true", help="debug logs")
    args = parser.parse_args(argv)
    if args.metrics_port is not None:
        os.environ["POT_METRICS_PORT"] = str(args.metrics_port)
    level = (
        logging.DEBUG
        if args.verbose
        else getattr(logging, os.environ.get("POT_LOG_LEVEL", "info").upper(), logging.INFO)
    )
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kopf").setLevel(max(level, logging.WARNING))
    import kopf

    from pot.operator import config, handlers

    try:
        cfg = config.from_env()
    except errors.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - one line, no traceback
        return 2
    del handlers  # imported for its registrations
    namespaces = list(cfg.namespaces)
    asyncio.run(
        kopf.operator(
            standalone=True,
            clusterwide=not namespaces,
            namespaces=namespaces,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
