"""`python -m omi_runtime serve /opt/omi/omi.json`: the image's entrypoint."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ._server import run


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
    args = parser.parse_args(argv)
    return run(args.config, port=args.port, host=args.host, model_dir=args.model_dir)


if __name__ == "__main__":
    sys.exit(main())
