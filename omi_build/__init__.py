"""omi-build: compile an omi.yaml into a signed, reproducible OCI model server image."""

__version__ = "0.1.0"
