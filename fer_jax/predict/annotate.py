"""Copies of photos with each face's box, label and top probabilities."""

import os

import numpy as np

from fer_jax.errors import UserError
from fer_jax.predict import opencv
from fer_jax.predict.predictor import Face

BOX_COLOUR = (0, 220, 0)  # BGR.
TEXT_COLOUR = (0, 0, 0)
FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
TOP_CLASSES = 3


def draw(rgb: np.ndarray, faces: list[Face]) -> np.ndarray:
  """A BGR copy of `rgb` [H, W, 3] with, for each face, its box and its
  `TOP_CLASSES` most likely classes ("happy 87%") on a label above the box,
  or below it where the image has no room above, moved left where it has no
  room to the right."""
  cv2 = opencv.require('Drawing annotated copies (--out)')
  image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
  box_thickness = max(2, round(max(image.shape[:2]) / 400))
  for face in faces:
    x, y, w, h = face.box
    cv2.rectangle(image, (x, y), (x + w, y + h), BOX_COLOUR, box_thickness)
    # Text about as wide as the box, yet readable on small faces.
    scale = max(0.45, w / 250)
    thickness = max(1, round(1.5 * scale))
    lines = face.top(TOP_CLASSES)
    sizes = [cv2.getTextSize(line, FONT, scale, thickness)[0]
             for line in lines]
    line_height = max(height for _, height in sizes) + 6 * thickness
    label_height = line_height * len(lines)
    label_width = max(width for width, _ in sizes) + 2 * thickness
    top = y - label_height
    if top < 0:
      top = min(y + h, image.shape[0] - label_height)
    # Shifted left of the box's edge where it would leave the image.
    left = max(0, min(x, image.shape[1] - label_width))
    cv2.rectangle(image, (left, top), (left + label_width, top + label_height),
                  BOX_COLOUR, cv2.FILLED)
    for i, line in enumerate(lines):
      baseline_y = top + (i + 1) * line_height - 3 * thickness
      cv2.putText(image, line, (left + thickness, baseline_y), FONT, scale,
                  TEXT_COLOUR, thickness, cv2.LINE_AA)
  return image


def output_path(path: str, suffixes: tuple[str, ...]) -> str:
  """`path` with suffixes[0] appended unless it ends in one of `suffixes`,
  its folder made (a UserError naming --out if it cannot be)."""
  if os.path.splitext(path)[1].lower() not in suffixes:
    path += suffixes[0]
  try:
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  except OSError as e:
    raise UserError(f'Cannot create the folder of {path} ({e.strerror}); '
                    'choose another --out.') from None
  return path


def write(path: str, bgr: np.ndarray) -> str:
  """Writes `bgr` to `path`, with '.png' appended unless it names a JPEG or
  PNG file; returns the path written."""
  cv2 = opencv.require('Writing annotated copies (--out)')
  path = output_path(path, ('.png', '.jpg', '.jpeg'))
  if not cv2.imwrite(path, bgr):
    raise UserError(f'Cannot write {path}; choose another --out.')
  return path
