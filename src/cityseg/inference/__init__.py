"""Inference: model bundles, the runtimes that execute them (Keras, TFLite, ONNX),
the predictor and `cityseg predict`.
"""
