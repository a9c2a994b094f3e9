"""Deployment: export to ONNX and TorchScript, quantisation, pruning, engine benchmarks."""
