"""Fracture classifier: preprocessing, data, models, training, evaluation, explanation and serving.

Pure Python + Keras 3; never imports Django or Celery. Importing this package is cheap: Keras and
TensorFlow load only in the modules that build, train or run models.
"""
