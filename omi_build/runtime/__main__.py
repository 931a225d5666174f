"""`python -m omi_runtime serve /opt/omi/omi.json`: the image's entrypoint."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="omi_runtime", description="Serve a model built by omi-build.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the model described by a serving config")
    serve.add_argument("config", type=Path, help="the serving config omi-build wrote (/opt/omi/omi.json)")
    serve.add_argument("--port", type=int, help="overrides PSC_MODEL_PORT and the config")
    serve.add_argument(
        "--host",
        default=os.environ.get("OMI_LISTEN_HOST") or "[::]",
        help="address to listen on (default: OMI_LISTEN_HOST, else every address)",
    )
    serve.add_argument("--model-dir", type=Path, help="overrides the model directory in the config")
    # set by the supervisor of several processes for each one it starts
    serve.add_argument("--supervised-by", type=int, help=argparse.SUPPRESS)
    serve.add_argument("--process-index", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.supervised_by is None:
        # Decided before gRPC and numpy are imported: a supervisor of several needs neither.
        from ._startup import StartupError, log_event, process_count, read_raw, resolve_port  # noqa: PLC0415

        try:
            raw = read_raw(args.config)
            count = process_count(raw)
            port = resolve_port(raw, args.port)
        except StartupError as exc:
            log_event(sys.stderr, "startup_failed", level="error", message=str(exc))
            return 1
        if count > 1:
            from ._processes import supervise  # noqa: PLC0415

            return supervise(
                args.config, raw, count=count, port=port, host=args.host, model_dir=args.model_dir
            )
    from ._server import run  # noqa: PLC0415

    return run(
        args.config,
        port=args.port,
        host=args.host,
        model_dir=args.model_dir,
        supervised_by=args.supervised_by,
        process=args.process_index,
    )


if __name__ == "__main__":
    sys.exit(main())
