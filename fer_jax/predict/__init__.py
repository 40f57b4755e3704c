"""Facial emotions in real photos and videos: detection, face crops, batched
inference.

  from fer_jax.predict import Predictor
  faces = Predictor.from_workdir('runs/resnet_small').predict('photo.jpg')

  from fer_jax.predict import OnnxPredictor  # No JAX needed.
  faces = OnnxPredictor('model.onnx').predict('photo.jpg')

The command line is `python -m fer_jax.predict` (cli.py). Importing this
package imports neither JAX nor Flax; `Predictor` loads them when built.
"""

from fer_jax.predict.predictor import Face, FacePredictor, Predictor

__all__ = ['Face', 'FacePredictor', 'OnnxPredictor', 'Predictor']


def __getattr__(name):
  # onnxruntime is optional: imported only when OnnxPredictor is asked for.
  if name == 'OnnxPredictor':
    # pylint: disable-next=import-outside-toplevel
    from fer_jax.predict.onnx_predictor import OnnxPredictor
    return OnnxPredictor
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
