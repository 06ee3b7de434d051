"""Choosing where inference runs: a GPU when TensorFlow sees one, the CPU otherwise."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def configure_accelerator(*, cpu_threads: int = 0) -> str:
    """Configure TensorFlow for this worker process and describe the device it will use.

    Memory growth keeps one process from reserving a whole GPU it shares with nothing else but
    TensorFlow's own allocator; deployments run one worker process per GPU (CUDA_VISIBLE_DEVICES).
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return f"{keras.backend.backend()} backend"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised in this process
            logger.debug("memory growth could not be set on %s", gpu.name)
    if cpu_threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(cpu_threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            logger.debug("thread counts already fixed in this process")
    if gpus:
        return "GPU: " + ", ".join(gpu.name for gpu in gpus)
    return "CPU"
