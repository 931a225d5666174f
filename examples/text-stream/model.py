"""A streaming model: one response per word, as a language model streams tokens.

predict() answers a request once (the normalised text and its word count); predict_stream()
is a generator, and the server sends each dict it yields as its own response on
ModelStreamInfer (Triton's streaming extension, which tritonclient's start_stream speaks).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np


def _bytes_array(values: list[str]) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = [value.encode() for value in values]
    return array


class WordStream:
    def load(self, model_dir: Path) -> None:
        del model_dir  # nothing to load: the model is the rule itself

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        words = [text.decode().split() for text in inputs["text"]]
        return {
            "token": _bytes_array([" ".join(w) for w in words]),
            "position": np.array([len(w) for w in words], dtype=np.int64),
        }

    def predict_stream(self, inputs: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        words = [text.decode().split() for text in inputs["text"]]
        for position in range(max((len(w) for w in words), default=0)):
            yield {
                "token": _bytes_array([w[position] if position < len(w) else "" for w in words]),
                "position": np.full(len(words), position, dtype=np.int64),
            }
