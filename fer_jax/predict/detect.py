"""Where the faces are in a grey photo, and square crops of them.

Any callable `detector(grey, min_size) -> boxes` works; the default is the
frontal-face Haar cascade that ships inside opencv-python.
"""

import os
from collections.abc import Callable

import numpy as np
from PIL import Image

from fer_jax.errors import UserError
from fer_jax.predict import opencv
from fer_jax.predict.opencv import cv2

# (uint8 grey [H, W], smallest face side in its pixels) -> int [K, 4] boxes
# (x, y, width, height).
Detector = Callable[[np.ndarray, int], np.ndarray]

# Haar's cost grows with the pixel count; at this size the faces of a phone
# photo are still well above the cascade's 24-pixel window.
MAX_DETECT_SIDE = 1280


class HaarDetector:
  """OpenCV's bundled Haar cascade, run on a histogram-equalised image."""

  def __init__(self, cascade: str = 'haarcascade_frontalface_default.xml',
               scale_factor: float = 1.1, min_neighbors: int = 5):
    opencv.require('Face detection')
    path = os.path.join(cv2.data.haarcascades, cascade)
    self._cascade = cv2.CascadeClassifier(path)
    if self._cascade.empty():
      raise UserError(f'OpenCV cannot load the Haar cascade {path}; '
                      'reinstall opencv-python-headless (4.x ships it).')
    self._scale_factor = scale_factor
    self._min_neighbors = min_neighbors

  def __call__(self, grey: np.ndarray, min_size: int) -> np.ndarray:
    boxes = self._cascade.detectMultiScale(
        cv2.equalizeHist(grey), scaleFactor=self._scale_factor,
        minNeighbors=self._min_neighbors, minSize=(min_size, min_size))
    return np.asarray(boxes, np.int64).reshape(-1, 4)


def find_faces(grey: np.ndarray, detector: Detector, min_face_size: int,
               max_side: int = MAX_DETECT_SIDE) -> np.ndarray:
  """Face boxes [K, 4] in `grey`'s pixels, left to right; the detector sees
  a copy downscaled so that its long side is at most `max_side`."""
  height, width = grey.shape
  scale = min(1.0, max_side / max(height, width))
  small = grey
  if scale < 1:
    opencv.require('Face detection')
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(grey, small_size, interpolation=cv2.INTER_AREA)
  boxes = np.asarray(detector(small, max(1, round(min_face_size * scale))))
  to_original = np.array([width / small.shape[1], height / small.shape[0]] * 2)
  boxes = np.round(boxes.reshape(-1, 4) * to_original).astype(np.int64)
  return boxes[np.lexsort((boxes[:, 1], boxes[:, 0]))]


def face_crops(grey: np.ndarray, boxes: np.ndarray, margin: float,
               size: int) -> np.ndarray:
  """uint8 [K, size, size]: for each box, the square around its centre that
  is `margin` of its long side wider on each side, shifted (or shrunk) to lie
  inside the image, resized (area averaging down, bilinear up; by Pillow
  where OpenCV is missing: on photos, within a few grey levels)."""
  height, width = grey.shape
  crops = np.empty((len(boxes), size, size), np.uint8)
  for crop, (x, y, w, h) in zip(crops, boxes):
    side = min(round(max(w, h) * (1 + 2 * margin)), height, width)
    left = int(np.clip(round(x + (w - side) / 2), 0, width - side))
    top = int(np.clip(round(y + (h - side) / 2), 0, height - side))
    square = grey[top:top + side, left:left + side]
    if side == size:
      crop[:] = square
    elif cv2 is not None:
      interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
      crop[:] = cv2.resize(square, (size, size), interpolation=interpolation)
    else:
      resample = (Image.Resampling.BOX if side > size else
                  Image.Resampling.BILINEAR)
      crop[:] = np.asarray(Image.fromarray(square).resize((size, size),
                                                           resample))
  return crops
