"""Deployment: ONNX graphs of trained models, their verification against PyTorch, Triton repositories."""
