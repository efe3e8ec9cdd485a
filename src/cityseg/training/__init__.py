"""Training: the tf.data pipeline, augmentation, architectures, losses, metrics,
callbacks and the run loop, on one machine or several.
"""
