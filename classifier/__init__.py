"""Fracture classifier: preprocessing, data, models, training, evaluation, explanation and serving.

Pure Python + Keras 3; never imports Django or Celery. Importing this package is cheap: Keras and
TensorFlow load only in the modules that build, train or run models.
"""

import os

# TensorFlow's default CPU allocator hands every large tensor back to the kernel when it is freed, so each
# training step or worker batch maps its activations afresh: measured on 2 cores, 133 million page faults
# in 16 minutes of training, 38 % of the process's CPU time in the kernel. Its pooling (BFC) allocator
# keeps and reuses that memory (bench figures in the README). Set here because the worker, the training
# commands and the benchmarks import this package before TensorFlow loads; an explicit setting wins.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
