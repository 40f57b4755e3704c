"""Emotions of the faces in a photo: detection, crops, batched inference.

This module imports neither JAX nor Flax: `Predictor` loads them when it is
built, so the ONNX backend (onnx_predictor.py) shares the rest without them.
"""

import dataclasses
import os
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fer_jax.errors import UserError
from fer_jax.predict import detect, images
from fer_jax.predict.opencv import cv2

if TYPE_CHECKING:
  from fer_jax import inference

# Where a trained run directory shipped with the package goes; with one
# there, a workdir need not be given.
PRETRAINED_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'pretrained')
CHECKPOINTS = ('best', 'latest')


@dataclasses.dataclass(frozen=True)
class Face:
  """A face's box (x, y, width, height) in the photo, its most likely class
  and every class's probability, most likely first."""
  box: tuple[int, int, int, int]
  label: str
  probs: dict[str, float]

  def top(self, count: int) -> list[str]:
    """'happy 87%' for each of the `count` most likely classes."""
    return [f'{name} {p:.0%}' for name, p in list(self.probs.items())[:count]]

  def to_json(self) -> dict:
    return {'box': list(self.box), 'label': self.label,
            'probs': {name: round(p, 6) for name, p in self.probs.items()}}


def pretrained_workdir() -> str:
  """PRETRAINED_DIR, the default run of the predictor and the exporter."""
  if not os.path.isfile(os.path.join(PRETRAINED_DIR, 'config.json')):
    raise UserError(f'No model ships in {PRETRAINED_DIR} yet; pass '
                    '--workdir=<run directory> of a model trained with '
                    'python -m fer_jax.main.')
  return PRETRAINED_DIR


def _grey(image) -> np.ndarray:
  """uint8 [H, W] from a path, a PIL image or an RGB / grey uint8 array."""
  if isinstance(image, (str, os.PathLike)):
    image = images.load_rgb(os.fspath(image))
  elif isinstance(image, Image.Image):
    image = images.to_rgb(image)
  image = np.asarray(image)
  if image.dtype != np.uint8 or not (
      image.ndim == 2 or image.ndim == 3 and image.shape[2] == 3):
    raise UserError('An image array must be uint8 [H, W] grey or [H, W, 3] '
                    f'RGB, not {image.dtype} {list(image.shape)}; convert it '
                    'or pass a file path.')
  if image.ndim == 2:
    return image
  if cv2 is not None:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
  # OpenCV's fixed-point grey, bit for bit (0.299 R + 0.587 G + 0.114 B).
  weighted = image.astype(np.uint32) @ np.array([9798, 19235, 3735], np.uint32)
  return ((weighted + (1 << 14)) >> 15).astype(np.uint8)


def softmax(logits: np.ndarray) -> np.ndarray:
  """Softmax over the last axis, in NumPy."""
  shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return shifted / shifted.sum(axis=-1, keepdims=True)


class FacePredictor:
  """Face detection and cropping around a classifier of face crops; the
  backends (`Predictor` for JAX, `onnx_predictor.OnnxPredictor`) give
  `classify`."""

  def __init__(self, class_names: tuple[str, ...], input_size: int, *,
               detect_faces: bool = True,
               detector: detect.Detector | None = None,
               margin: float = 0.2, min_face_size: int = 32,
               batch_size: int = 32,
               max_detect_side: int = detect.MAX_DETECT_SIDE):
    """`input_size` is the side of the face crops `classify` takes;
    `detect_faces=False` takes each whole image as one face crop;
    `detector` defaults to `detect.HaarDetector()`."""
    for name, value, least in (('batch_size', batch_size, 1),
                               ('min_face_size', min_face_size, 1),
                               ('margin', margin, 0),
                               ('max_detect_side', max_detect_side, 1)):
      if value < least:
        raise UserError(f'{name}={value} must be at least {least}.')
    self.class_names = tuple(class_names)
    self.input_size = input_size
    self.batch_size = batch_size
    self._detector = None
    if detect_faces:
      self._detector = detector or detect.HaarDetector()
    self._margin = margin
    self._min_face_size = min_face_size
    self._max_detect_side = max_detect_side

  def predict(self, image) -> list[Face]:
    """The faces in `image` (a file path, a PIL image, or a uint8 array,
    [H, W] grey or [H, W, 3] RGB), left to right; [] if none is found."""
    grey = _grey(image)
    if self._detector is None:
      boxes = np.array([[0, 0, grey.shape[1], grey.shape[0]]])
      margin = 0.0
    else:
      boxes = detect.find_faces(grey, self._detector, self._min_face_size,
                                self._max_detect_side)
      margin = self._margin
    probs = self.classify(
        detect.face_crops(grey, boxes, margin, self.input_size))
    return [self.face(box, p) for box, p in zip(boxes, probs)]

  def classify(self, crops: np.ndarray) -> np.ndarray:
    """Class probabilities [N, classes] of uint8 face crops [N, size, size]."""
    raise NotImplementedError

  def face(self, box, probs: np.ndarray) -> Face:
    """The Face of `box` with class probabilities `probs` [classes]."""
    order = np.argsort(-probs, kind='stable')
    return Face(tuple(int(v) for v in box), self.class_names[order[0]],
                {self.class_names[i]: float(probs[i]) for i in order})


class Predictor(FacePredictor):
  """A trained model applied to the faces found in photos.

    predictor = Predictor.from_workdir('runs/resnet_small')
    for face in predictor.predict('photo.jpg'):
      print(face.box, face.label, face.probs)

  Faces go through the jitted model in batches padded to a power of two up
  to `batch_size` (1, 2, 4, ..., batch_size): a handful of shapes compile
  once, whatever the number of faces.
  """

  def __init__(self, trained: 'inference.TrainedModel', *,
               ten_crop: bool = False, **options):
    """`options` are FacePredictor's (detect_faces, detector, margin, ...)."""
    from fer_jax import inference  # pylint: disable=import-outside-toplevel
    from fer_jax.data import sources  # pylint: disable=import-outside-toplevel
    # Faces are cropped to FER2013's 48 px, what training fed the model; its
    # InputSpec then resizes them to the model's input size (224 for the
    # ImageNet ports) inside the graph, as it did every training face.
    super().__init__(trained.class_names, sources.IMAGE_SIZE, **options)
    self._variables = trained.variables
    self._logits_fn = inference.make_logits_fn(
        trained.model, trained.input_spec, ten_crop,
        compiler_options=trained.compiler_options)

  @classmethod
  def from_workdir(cls, workdir: str | None = None, checkpoint: str = 'best',
                   **options) -> 'Predictor':
    """The `checkpoint` ('best' or 'latest') of a training run directory;
    without `workdir`, the model that ships in PRETRAINED_DIR."""
    # pylint: disable-next=import-outside-toplevel
    from fer_jax import inference, rundir
    if checkpoint not in CHECKPOINTS:
      raise UserError(f'checkpoint={checkpoint!r} is not one of '
                      f'{CHECKPOINTS}.')
    run = rundir.RunDir(workdir or pretrained_workdir(), create=False)
    return cls(inference.load_trained(run, checkpoint), **options)

  def classify(self, crops: np.ndarray) -> np.ndarray:
    """Class probabilities [N, classes] of uint8 face crops [N, size, size]."""
    from fer_jax import inference  # pylint: disable=import-outside-toplevel
    if not len(crops):
      return np.zeros((0, len(self.class_names)), np.float32)
    logits = inference.batched_logits(self._logits_fn, self._variables, crops,
                                      self.batch_size)
    return softmax(logits)
