"""The engine interface: name-keyed numpy arrays in, name-keyed numpy arrays out.

Lifecycle after Polygraphy's runners: ``activate()`` loads what is expensive (a session, an
engine), ``run()`` executes, ``deactivate()`` releases; an engine is also a context manager.
Inputs are checked against the network spec here, once, for every backend. numpy at the
interface keeps the runtime free of torch: a backend converts at its own boundary.

Threads: ``run`` may be called from several threads at once (one opened pipeline serving
several callers). Activation is locked, so a lazily activated engine loads once; each backend's
``_run`` keeps its per-call state per call (ONNX Runtime's ``InferenceSession.run`` is
thread-safe; OpenVINO takes one infer request per concurrent call). ``deactivate`` must not run
while calls are in flight.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Mapping

import numpy as np

from contract.specs import NetworkSpec


class Engine(abc.ABC):
    """An executable network with the inputs and outputs of ``spec``."""

    backend: str = "?"

    def __init__(self, spec: NetworkSpec, precision: str = "fp32"):
        self.spec = spec
        self.precision = precision
        self.active = False
        self._lock = threading.Lock()  # activation, deactivation and the counters below
        self.calls = 0  # run() calls so far, and the bytes that crossed the interface (proxies
        self.bytes_in = 0  # the benchmarks' gate counts per clip)
        self.bytes_out = 0

    # ------------------------------------------------------------------ lifecycle

    def activate(self) -> "Engine":
        if not self.active:
            with self._lock:  # two threads' first calls load one session, not two
                if not self.active:
                    self._activate()
                    self.active = True
        return self

    def deactivate(self) -> None:
        with self._lock:
            if self.active:
                self._deactivate()
                self.active = False

    def __enter__(self) -> "Engine":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # ------------------------------------------------------------------ running

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check ``inputs`` against the spec, run, and return ``{output name: array}`` (float32)."""
        dims = self.spec.check_inputs(inputs)
        self.check_dims(dims)
        if not self.active:
            self.activate()
        outputs = self._run(inputs)
        with self._lock:
            self.calls += 1
            self.bytes_in += sum(a.nbytes for a in inputs.values())
            self.bytes_out += sum(a.nbytes for a in outputs.values())
        return outputs

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        return self.run(inputs)

    def check_dims(self, dims: Mapping[str, int]) -> None:
        """Backends with bounded shapes (TensorRT profiles) raise ShapeError here."""

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _deactivate(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name}, {self.precision})"
