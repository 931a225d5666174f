"""omi-build: compile an omi.yaml into a minimal, reproducible OCI model server image."""

__version__ = "0.1.0"
