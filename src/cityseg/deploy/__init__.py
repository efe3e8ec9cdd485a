"""Deployment: exports (SavedModel, TFLite, ONNX), their parity reports and benchmarks."""
