"""Lower the four SVD networks to validated ONNX bundles (and TensorRT engines)."""
