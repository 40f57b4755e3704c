"""Online augmentation of uint8 grey faces on the host, inside Grain.

Geometric ops (rotation, translation, zoom, flip) are composed into one affine
matrix so each face is resampled once; photometric ops (brightness, contrast)
follow in float32 and are rounded back to uint8, so the device still gets
uint8 batches. Random erasing (`erase_sizes`) comes last.
"""

import dataclasses
import numbers

import cv2
import grain
import numpy as np

from fer_jax.errors import UserError


def _check_range(name: str, value, high: float, *, closed: bool) -> None:
  """Raises unless 0 <= value <= high (or < high when not `closed`)."""
  inside = isinstance(value, numbers.Real) and (
      0 <= value <= high if closed else 0 <= value < high)
  if not inside:
    interval = f'[0, {high:g}]' if closed else f'[0, {high:g})'
    raise UserError(
        f'config.data.augment.{name}={value!r} must be in {interval}.')


@dataclasses.dataclass(frozen=True, kw_only=True)
class RandomAugment(grain.transforms.RandomMap):
  """Random affine + photometric jitter of {'image': uint8 [H, W(, 1)], ...}.

  Each knob is a maximum and 0 / False turns it off.

  Attributes:
    rotation: Degrees, uniform in [-rotation, rotation].
    translation: Fraction of the size per axis, uniform in [-t, t].
    zoom: Scale uniform in [1 - zoom, 1 + zoom].
    hflip: Mirror left-right with probability 0.5.
    brightness: Additive shift, uniform in [-b, b] times 255.
    contrast: Factor uniform in [1 - c, 1 + c] around the image mean.
    erasing: Probability of random erasing (Zhong et al. 2020, torchvision's
      RandomErasing): one rectangle of area fraction in [0.02, 0.33] and
      aspect ratio (height / width) log-uniform in [0.3, 3.3] is filled with
      random grey levels, uniform in [0, 255] per pixel (see `erase_sizes`).
  """
  rotation: float = 10.0
  translation: float = 0.1
  zoom: float = 0.1
  hflip: bool = True
  brightness: float = 0.0
  contrast: float = 0.0
  erasing: float = 0.0

  def __post_init__(self):
    _check_range('rotation', self.rotation, 180, closed=True)
    _check_range('translation', self.translation, 0.5, closed=False)
    _check_range('zoom', self.zoom, 1, closed=False)
    _check_range('brightness', self.brightness, 1, closed=True)
    _check_range('contrast', self.contrast, 1, closed=False)
    _check_range('erasing', self.erasing, 1, closed=True)
    if not isinstance(self.hflip, (bool, np.bool_)):
      raise UserError(
          f'config.data.augment.hflip={self.hflip!r} must be True or False.')
    # Derived once per transform; frozen, so past the dataclass __setattr__.
    object.__setattr__(self, '_geometric', bool(
        self.rotation or self.translation or self.zoom or self.hflip))
    object.__setattr__(self, '_photometric',
                       bool(self.brightness or self.contrast))
    # Half-widths of the uniform draws: angle (radians), x and y shift
    # (fractions of the size), relative scale.
    object.__setattr__(self, '_affine_ranges', np.array(
        [np.deg2rad(self.rotation), self.translation, self.translation,
         self.zoom]))

  @property
  def enabled(self) -> bool:
    """Whether any op is on; when not, images pass through unchanged."""
    return self._geometric or self._photometric or bool(self.erasing)

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    """A new dict with `image` augmented; the input element is not modified."""
    image = element['image']
    if self._geometric:
      image = self._warp(image, rng)
    if self._photometric:
      image = self._jitter(image, rng)
    if self.erasing and rng.random() < self.erasing:
      image = self._erase(image, rng)
    return {**element, 'image': image}

  def _warp(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    angle, shift_x, shift_y, zoom = (
        rng.uniform(-1.0, 1.0, 4) * self._affine_ranges)
    flip = -1.0 if self.hflip and rng.random() < 0.5 else 1.0
    cos = (1.0 + zoom) * np.cos(angle)
    sin = (1.0 + zoom) * np.sin(angle)
    # Flip, scale and rotate about the pixel centre, then shift:
    # dst = linear @ (src - centre) + centre + shift.
    linear = np.array([[flip * cos, -sin], [flip * sin, cos]])
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    offset = centre + (shift_x * width, shift_y * height) - linear @ centre
    matrix = np.concatenate([linear, offset[:, None]], axis=1)
    warped = cv2.warpAffine(image, matrix, (width, height),
                            flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT_101)
    # OpenCV drops a trailing channel axis of 1.
    return warped.reshape(image.shape)

  def _jitter(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    pixels = image.astype(np.float32)
    if self.brightness:
      pixels += 255 * rng.uniform(-self.brightness, self.brightness)
    if self.contrast:
      mean = pixels.mean()
      factor = rng.uniform(1 - self.contrast, 1 + self.contrast)
      pixels = (pixels - mean) * factor + mean
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)

  def _erase(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape[:2]
    box_heights, box_widths, fits = erase_sizes(
        rng.uniform(size=(ERASE_ATTEMPTS, 2)), height, width)
    if not fits.any():
      return image
    first = np.argmax(fits)
    box_height, box_width = int(box_heights[first]), int(box_widths[first])
    top = int(rng.integers(0, height - box_height + 1))
    left = int(rng.integers(0, width - box_width + 1))
    image = image.copy()
    patch = image[top:top + box_height, left:left + box_width]
    patch[...] = rng.integers(0, 256, patch.shape, dtype=np.uint8)
    return image


# Random erasing (torchvision.transforms.RandomErasing's defaults): the area
# fraction and log aspect ratio ranges, and the draws tried for a box that
# fits before giving up (the image is then left as it is).
ERASE_SCALE = (0.02, 0.33)
ERASE_RATIO = (0.3, 3.3)
ERASE_ATTEMPTS = 10


def erase_sizes(uniforms, height: int, width: int, xp=np):
  """(box heights, box widths, fits) of random-erasing attempts.

  Each row of `uniforms` [..., ATTEMPTS, 2] (uniform in [0, 1)) draws an
  area fraction in ERASE_SCALE and an aspect ratio (height / width)
  log-uniform in ERASE_RATIO; its box is round(sqrt(area * ratio)) x
  round(sqrt(area / ratio)) pixels, as in torchvision, and fits when it is
  smaller than the image both ways and not empty. The first attempt that
  fits is used. `xp`: numpy (host) or jax.numpy (device).
  """
  area = height * width * (ERASE_SCALE[0] + uniforms[..., 0] * (
      ERASE_SCALE[1] - ERASE_SCALE[0]))
  log_low, log_high = np.log(ERASE_RATIO)
  ratio = xp.exp(log_low + uniforms[..., 1] * (log_high - log_low))
  box_heights = xp.round(xp.sqrt(area * ratio)).astype(xp.int32)
  box_widths = xp.round(xp.sqrt(area / ratio)).astype(xp.int32)
  fits = ((box_heights < height) & (box_widths < width) & (box_heights > 0)
          & (box_widths > 0))
  return box_heights, box_widths, fits


def from_config(augment_config) -> RandomAugment | None:
  """The transform for `config.data.augment`, or None when every op is off."""
  transform = RandomAugment(
      rotation=augment_config.rotation,
      translation=augment_config.translation,
      zoom=augment_config.zoom,
      hflip=augment_config.hflip,
      brightness=augment_config.brightness,
      contrast=augment_config.contrast,
      # Configs from before random erasing existed lack the knob.
      erasing=getattr(augment_config, 'erasing', 0.0))
  return transform if transform.enabled else None
