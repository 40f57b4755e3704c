"""Photos on disk as upright 8-bit RGB arrays, whatever their mode."""

import os

import numpy as np
from PIL import Image, ImageOps

from fer_jax.errors import UserError

# Extensions of the formats Pillow can read, for walking folders.
IMAGE_EXTENSIONS = frozenset(
    ext for ext, fmt in Image.registered_extensions().items()
    if fmt in Image.OPEN)


class UnreadableImage(UserError):
  """A path that gives no image; `reason` says why in a few words."""

  def __init__(self, path: str, reason: str):
    super().__init__(f'{path}: {reason}')
    self.reason = reason


def files_under(folder: str) -> tuple[list[str], list[str]]:
  """Paths, relative to `folder`, of its image files and of its other files
  at any depth, each sorted; hidden files and folders are neither."""
  found, others = [], []
  for root, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith('.')]
    for name in files:
      if name.startswith('.'):
        continue
      path = os.path.relpath(os.path.join(root, name), folder)
      is_image = os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
      (found if is_image else others).append(path)
  return sorted(found), sorted(others)


def to_rgb(image: Image.Image) -> np.ndarray:
  """uint8 [H, W, 3], turned as its EXIF orientation says, transparent
  pixels on white, 16-bit grey scaled to 8 bits."""
  image = ImageOps.exif_transpose(image)
  if image.mode == 'I' or image.mode.startswith('I;16'):
    # Pillow's convert('L') clips 16-bit levels at 255 instead of scaling.
    grey = np.asarray(image, np.float32) / 257
    image = Image.fromarray(np.clip(grey, 0, 255).round().astype(np.uint8))
  if image.has_transparency_data:  # New in Pillow 10.1.
    white = Image.new('RGBA', image.size, 'white')
    image = Image.alpha_composite(white, image.convert('RGBA'))
  return np.asarray(image.convert('RGB'))


def load_rgb(path: str) -> np.ndarray:
  """The image file at `path` as `to_rgb` gives it; UnreadableImage if the
  file is missing, empty, not an image, truncated or too large."""
  if not os.path.isfile(path):
    raise UnreadableImage(path, 'no such file')
  if os.path.getsize(path) == 0:
    raise UnreadableImage(path, 'empty file (0 bytes)')
  try:
    with Image.open(path) as image:
      image.load()
      return to_rgb(image)
  except Image.DecompressionBombError as e:
    raise UnreadableImage(path, f'{e}; if the file is trusted, downscale it '
                          'first') from None
  except Image.UnidentifiedImageError:
    raise UnreadableImage(path, 'not an image Pillow can read') from None
  except OSError as e:  # Truncated or damaged data, permissions.
    raise UnreadableImage(path, f'damaged or unreadable image ({e})') from None
