"""The predictor on an exported ONNX model (python -m fer_jax.export), with
onnxruntime: no JAX or Flax needed, only onnxruntime, NumPy and Pillow, and
OpenCV for face detection, videos and annotated copies (opencv.py).

  from fer_jax.predict.onnx_predictor import OnnxPredictor
  faces = OnnxPredictor('model.onnx').predict('photo.jpg')
"""

import json
import os

import numpy as np

from fer_jax.errors import UserError
from fer_jax.predict import predictor

# ONNX metadata keys written by fer_jax.export.
CLASSES_KEY = 'classes'
INPUT_SIZE_KEY = 'input_size'
CONFIG_KEY = 'config'


class OnnxPredictor(predictor.FacePredictor):
  """An exported model applied to the faces found in photos; the same
  detection, crops and `Face`s as `predictor.Predictor`.

  The graph takes float32 grey crops [N, size, size, 1] in 0-255 (size: the
  `input_size` metadata, 48, the training face size: the graph resizes them
  to the model's own input size) and returns class probabilities
  [N, classes]; faces go through it in batches of at most `batch_size` (its
  batch dimension is dynamic: no padding).
  """

  def __init__(self, path: str, *, threads: int = 0, **options):
    """`options` are FacePredictor's (detect_faces, margin, batch_size, ...);
    `threads` is onnxruntime's intra-op thread count (0: its default)."""
    try:
      import onnxruntime  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise UserError('The ONNX backend needs onnxruntime: pip install '
                      'onnxruntime (or ".[onnx]").') from None
    if not os.path.isfile(path):
      raise UserError(f'--model={path}: no such file; export one with '
                      'python -m fer_jax.export --workdir=<run> --out=<file>.')
    session_options = onnxruntime.SessionOptions()
    session_options.intra_op_num_threads = threads
    session_options.log_severity_level = 3  # Errors only.
    try:
      self._session = onnxruntime.InferenceSession(
          path, session_options, providers=['CPUExecutionProvider'])
    except Exception as e:  # pylint: disable=broad-except
      # onnxruntime raises its own types for files that are not models.
      first_line = str(e).strip().splitlines()[0] if str(e).strip() else ''
      raise UserError(f'--model={path} is not an ONNX model onnxruntime can '
                      f'load ({type(e).__name__}: {first_line}).') from None
    metadata = self._session.get_modelmeta().custom_metadata_map
    if CLASSES_KEY not in metadata or INPUT_SIZE_KEY not in metadata:
      raise UserError(f'--model={path} lacks the {CLASSES_KEY!r} and '
                      f'{INPUT_SIZE_KEY!r} metadata; export it with '
                      'python -m fer_jax.export.')
    self.config = json.loads(metadata.get(CONFIG_KEY) or 'null')
    self._input_name = self._session.get_inputs()[0].name
    super().__init__(tuple(json.loads(metadata[CLASSES_KEY])),
                     int(metadata[INPUT_SIZE_KEY]), **options)

  def classify(self, crops: np.ndarray) -> np.ndarray:
    """Class probabilities [N, classes] of uint8 face crops [N, size, size]."""
    if not len(crops):
      return np.zeros((0, len(self.class_names)), np.float32)
    inputs = np.asarray(crops, np.float32)[..., None]
    return np.concatenate([
        self._session.run(None, {self._input_name:
                                 inputs[start:start + self.batch_size]})[0]
        for start in range(0, len(inputs), self.batch_size)])
