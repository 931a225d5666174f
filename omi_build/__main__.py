"""`python -m omi_build` runs the CLI."""

from omi_build.cli import run

run()
