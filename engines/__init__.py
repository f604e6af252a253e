"""One interface over an executable network: PyTorch module, ONNX Runtime session, TensorRT engine."""
