"""The iris classifier, scored on the GPU through CUDA's libraries from NVIDIA's wheels.

The CUDA image carries libcudart (nvidia-cuda-runtime-cu12) and NVRTC (nvidia-cuda-nvrtc-cu12)
and nothing else of CUDA: NVRTC compiles the kernel below to PTX when the model loads, the
driver (libcuda.so.1, mounted by the NVIDIA container toolkit) loads and launches it, and the
runtime moves the data. With no GPU (device "cpu", which the server says at start-up) the same
arithmetic runs in numpy, so the image answers its examples on any machine.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np

KERNEL = rb"""
extern "C" __global__ void scores(const float* x, const float* coef, const float* intercept,
                                  float* out, int rows, int features, int classes) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * classes) return;
    int row = i / classes, label = i % classes;
    float sum = intercept[label];
    for (int f = 0; f < features; ++f) sum += x[row * features + f] * coef[label * features + f];
    out[i] = sum;
}
"""
_TO_DEVICE, _TO_HOST = 1, 2  # cudaMemcpyKind
_THREADS = 128


class CudaError(RuntimeError):
    pass


class _Gpu:
    """The few CUDA calls the model makes, through ctypes: no CUDA Python package needed."""

    def __init__(self) -> None:
        self.runtime = ctypes.CDLL("libcudart.so.12")
        self.driver = ctypes.CDLL("libcuda.so.1")
        self.nvrtc = ctypes.CDLL("libnvrtc.so.12")
        self.runtime.cudaGetErrorString.restype = ctypes.c_char_p
        self.nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
        self._check(self.runtime.cudaFree(None), "cudaFree")  # creates the primary context
        self.function = self._compile()

    def _check(self, code: int, call: str) -> None:
        if code != 0:
            msg = f"{call} failed: {self.runtime.cudaGetErrorString(code).decode()} ({code})"
            raise CudaError(msg)

    def _driver(self, code: int, call: str) -> None:
        if code != 0:
            msg = f"{call} failed: CUDA driver error {code}"
            raise CudaError(msg)

    def _compile(self) -> ctypes.c_void_p:
        program = ctypes.c_void_p()
        nvrtc = self.nvrtc
        if nvrtc.nvrtcCreateProgram(ctypes.byref(program), KERNEL, b"scores.cu", 0, None, None):
            msg = "nvrtcCreateProgram failed"
            raise CudaError(msg)
        try:
            if code := nvrtc.nvrtcCompileProgram(program, 0, None):
                size = ctypes.c_size_t()
                nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
                log = ctypes.create_string_buffer(size.value)
                nvrtc.nvrtcGetProgramLog(program, log)
                msg = f"NVRTC: {nvrtc.nvrtcGetErrorString(code).decode()}: {log.value.decode()}"
                raise CudaError(msg)
            size = ctypes.c_size_t()
            nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size))
            ptx = ctypes.create_string_buffer(size.value)
            nvrtc.nvrtcGetPTX(program, ptx)
        finally:
            nvrtc.nvrtcDestroyProgram(ctypes.byref(program))
        module, function = ctypes.c_void_p(), ctypes.c_void_p()
        self._driver(self.driver.cuModuleLoadData(ctypes.byref(module), ptx), "cuModuleLoadData")
        self._driver(
            self.driver.cuModuleGetFunction(ctypes.byref(function), module, b"scores"), "cuModuleGetFunction"
        )
        return function

    def upload(self, array: np.ndarray) -> ctypes.c_void_p:
        pointer = ctypes.c_void_p()
        self._check(
            self.runtime.cudaMalloc(ctypes.byref(pointer), ctypes.c_size_t(array.nbytes)), "cudaMalloc"
        )
        host = ctypes.c_void_p(array.ctypes.data)
        self._check(
            self.runtime.cudaMemcpy(pointer, host, ctypes.c_size_t(array.nbytes), _TO_DEVICE), "cudaMemcpy"
        )
        return pointer

    def free(self, pointer: ctypes.c_void_p) -> None:
        self.runtime.cudaFree(pointer)

    def scores(
        self, x: np.ndarray, coef: ctypes.c_void_p, intercept: ctypes.c_void_p, classes: int
    ) -> np.ndarray:
        rows, features = x.shape
        out = np.empty((rows, classes), dtype=np.float32)
        x_device = self.upload(x)  # a runtime call first: it makes the context current here
        out_device = ctypes.c_void_p()
        try:
            self._check(
                self.runtime.cudaMalloc(ctypes.byref(out_device), ctypes.c_size_t(out.nbytes)), "cudaMalloc"
            )
            arguments = [
                x_device, coef, intercept, out_device,
                ctypes.c_int(rows), ctypes.c_int(features), ctypes.c_int(classes),
            ]  # fmt: skip
            pointers = (ctypes.c_void_p * len(arguments))(*[ctypes.addressof(a) for a in arguments])
            blocks = (rows * classes + _THREADS - 1) // _THREADS
            self._driver(
                self.driver.cuLaunchKernel(
                    self.function, blocks, 1, 1, _THREADS, 1, 1, 0, None, pointers, None
                ),
                "cuLaunchKernel",
            )
            host = ctypes.c_void_p(out.ctypes.data)
            self._check(
                self.runtime.cudaMemcpy(host, out_device, ctypes.c_size_t(out.nbytes), _TO_HOST), "cudaMemcpy"
            )
        finally:
            self.free(x_device)
            self.free(out_device)
        return out


class IrisCuda:
    """Species (0 setosa, 1 versicolor, 2 virginica) from four measurements in cm."""

    def load(self, model_dir: Path, device: str = "cpu") -> None:
        with np.load(model_dir / "model.npz", allow_pickle=False) as parameters:
            self._coef = parameters["coef"]
            self._intercept = parameters["intercept"]
            self._classes = parameters["classes"]
        self._gpu: _Gpu | None = None
        if device.startswith("cuda"):
            self._gpu = _Gpu()
            self._coef_device = self._gpu.upload(np.ascontiguousarray(self._coef, dtype=np.float32))
            self._intercept_device = self._gpu.upload(np.ascontiguousarray(self._intercept, dtype=np.float32))

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        measurements = inputs["measurements"]
        if self._gpu is not None:
            x = np.ascontiguousarray(measurements, dtype=np.float32)
            scores = self._gpu.scores(x, self._coef_device, self._intercept_device, len(self._classes))
            scores = scores.astype(np.float64)
        else:
            scores = measurements.astype(np.float64, copy=False) @ self._coef.T + self._intercept
        scores -= scores.max(axis=1, keepdims=True)
        exponentials = np.exp(scores)
        probabilities = exponentials / exponentials.sum(axis=1, keepdims=True)
        return {
            "species": self._classes[np.argmax(scores, axis=1)],
            "probabilities": probabilities.astype(np.float32),
        }
