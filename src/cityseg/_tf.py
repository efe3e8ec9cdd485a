"""The one place that imports TensorFlow and segmentation-models, configured and quiet.

segmentation-models picks its Keras from SM_FRAMEWORK at import time and prints a banner;
TensorFlow's C++ side writes CUDA-driver lines straight to file descriptor 2 on machines
without a GPU; albumentations checks for updates over the network. All of that is settled
here, before the first import, so every other module gets `tf`, `keras` and `sm` from
`cityseg._tf` and never imports them directly. `CITYSEG_DEBUG=1` keeps the noise.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SM_FRAMEWORK", "tf.keras")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hold back Python and C++ output (fd 1 and 2) for the duration of the block.

    TensorFlow's import, converters and interpreters print pages of native logs. They are
    captured rather than discarded: if the block fails, they are written out after all,
    as they may say why.
    """
    if os.environ.get("CITYSEG_DEBUG", "") not in ("", "0"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as capture:
        try:
            os.dup2(capture.fileno(), 1)
            os.dup2(capture.fileno(), 2)
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()) as python_err,
            ):
                try:
                    yield
                except BaseException:
                    capture.write(python_err.getvalue().encode(errors="replace"))
                    capture.seek(0)
                    os.write(saved[1], capture.read()[-20000:])
                    raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


with quiet():
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    GPUS = tf.config.list_physical_devices("GPU")  # triggers the driver probe while quiet
    import segmentation_models as sm

keras = tf.keras

__all__ = ["tf", "keras", "sm", "GPUS", "quiet"]
