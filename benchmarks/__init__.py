"""Benchmarks: per-stage latency, the SF-V speedup table, backend and roofline ratios, a CI gate.

- ``python -m benchmarks.speedup``   SVD 25/16 steps vs SF-V 1 step, beside the paper's Table 1;
- ``python -m benchmarks.per_step``  full-size per-step costs (totals = steps x per step);
- ``python -m benchmarks.backends``  ONNX Runtime vs eager PyTorch per network;
- ``python -m benchmarks.roofline``  FLOPs per network call vs this machine's GEMM throughput;
- ``python -m pytest benchmarks/``   the latency-regression gate (``SFV_BENCH_QUICK=1`` for CI).

See docs/benchmarks.md.
"""
