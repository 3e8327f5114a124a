"""``python -m pot.settlement``: the settlement sidecar (docs/protocol.md command line).

Errors users can cause (bad config, unreadable key, wrong chain) print one line and exit 1.
The key is read from a file only and never printed: logs show its address. The chain RPC URL
(``--rpc-url``, else env ``POT_CHAIN_RPC_URL``, else peers.json ``chain.rpcUrl``) may hold an
API key: every log line and error is scrubbed of it (``pot.settlement.redacting``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from pathlib import Path

from pot import errors, keys

# Crash tests (tests/settlement/test_sidecar_process.py) set this to a point in
# sending.Sender ('after-persist', 'after-broadcast'); the process then stops there until
# it is killed with SIGKILL, which is exactly the crash under test.
FAULT_ENV = "POT_SETTLEMENT_FAULT"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pot.settlement", description=__doc__)
    p.add_argument(
        "--validator-url", required=True, help="this pod's validator, e.g. http://127.0.0.1:8080"
    )
    p.add_argument(
        "--config",
        required=True,
        help="peers.json (chain.rpcUrl, chainId, contract, confirmations)",
    )
    p.add_argument("--key-file", required=True, help="this replica's secp256k1 key file")
    p.add_argument("--state-dir", required=True, help="directory for the intent log (persistent)")
    p.add_argument("--port", type=int, default=8081, help="/metrics and /healthz port")
    p.add_argument("--host", default="0.0.0.0", help="address to serve on")  # noqa: S104 (pod)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between loop turns")
    p.add_argument("--stuck-after", type=float, default=30.0, help="seconds before a fee bump")
    p.add_argument(
        "--rpc-url",
        default=None,
        help="chain JSON-RPC URL; overrides env POT_CHAIN_RPC_URL and peers.json chain.rpcUrl",
    )
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from pot.settlement import redacting, sidecar

    # Before the config is read: a URL from the flag or env must not reach a log line.
    scrubber = redacting.install(args.rpc_url or os.environ.get(sidecar.RPC_URL_ENV, "").strip())
    try:
        config = sidecar.Config.from_peers(
            args.config,
            validator_url=args.validator_url,
            state_dir=Path(args.state_dir),
            port=args.port,
            host=args.host,
            interval=args.interval,
            stuck_after=args.stuck_after,
            rpc_url=args.rpc_url,
        )
        scrubber.url = config.rpc_url
        car = sidecar.Sidecar(config=config, key=keys.from_file(args.key_file))
        fault = os.environ.get(FAULT_ENV)
        if fault:

            def stop_at(point: str) -> None:
                if point == fault:
                    logging.getLogger(__name__).warning(
                        "fault point %s reached: waiting to be killed", point
                    )
                    sys.stdout.flush()
                    while True:
                        time.sleep(60)

            car.sender.fault = stop_at
        asyncio.run(car.run())
    except errors.PotError as exc:
        sys.stderr.write(f"error: {redacting.scrub(str(exc), scrubber.url)}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    finally:
        redacting.uninstall(scrubber)


if __name__ == "__main__":
    main()
