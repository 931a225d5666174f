"""How long `omi-build validate` takes on the iris example: the whole process, and in-process."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

from omi_build import api

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "iris-sklearn"
RUNS = 10


def _timed(action: object) -> list[float]:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        action()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    tool = Path(sys.executable).with_name("omi-build")
    process = _timed(
        lambda: subprocess.run([str(tool), "validate", str(EXAMPLE)], check=True, capture_output=True)
    )
    api.validate([str(EXAMPLE)])  # warm the schema and SPDX caches once
    in_process = _timed(lambda: api.validate([str(EXAMPLE)]))
    for name, times in (("whole process", process), ("in-process, warm", in_process)):
        print(f"validate, {name}: median {statistics.median(times) * 1000:.1f} ms over {RUNS} runs")


if __name__ == "__main__":
    main()
