"""The model server that goes into the image.

It depends on the standard library, grpcio, protobuf and numpy only, and never imports the
builder (an import-linter contract enforces it), so the image carries nothing else.
"""
