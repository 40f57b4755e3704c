"""Facial emotions in real photos: detection, face crops, batched inference.

  from fer_jax.predict import Predictor
  faces = Predictor.from_workdir('runs/resnet_small').predict('photo.jpg')

The command line is `python -m fer_jax.predict` (cli.py).
"""

from fer_jax.predict.predictor import Face, Predictor

__all__ = ['Face', 'Predictor']
