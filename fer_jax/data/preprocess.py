"""Model input on the device: uint8 grey faces -> normalised float images.

Runs inside the jitted train / eval / predict functions, so the host ships
uint8 (4x less traffic than float32) and every consumer of a trained model
normalises exactly as training did.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.errors import UserError

NORMALIZATIONS = ('symmetric', 'dataset', 'imagenet', 'caffe')
_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
# Keras's 'caffe' mode (its VGG16 / ResNet50 weights): BGR, 0-255 minus the
# ImageNet means of B, G, R, no scaling. The grey faces are repeated to 3
# equal channels, so RGB -> BGR changes nothing; channel 0 takes B's mean.
_CAFFE_MEAN = (103.939, 116.779, 123.68)
_CAFFE_STD = (1.0, 1.0, 1.0)
# Pixels counted per np.bincount call: it casts them to int64, 8 bytes each,
# so 32 MB at a time rather than 530 MB for all of FER2013's training set.
_COUNT_CHUNK = 1 << 22


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """Size, channels and per-channel mean / std (in grey levels) of the input."""
  image_size: int
  channels: int
  mean: tuple[float, ...]
  std: tuple[float, ...]

  def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
    """uint8 [N, H, W] or [N, H, W, 1] -> float32 [N, size, size, channels]."""
    x = images.astype(jnp.float32)
    if x.ndim == 3:
      x = x[..., None]
    if x.shape[1:3] != (self.image_size, self.image_size):
      x = jax.image.resize(
          x, (x.shape[0], self.image_size, self.image_size, 1), 'bilinear')
    if self.channels != 1:
      x = jnp.repeat(x, self.channels, axis=-1)
    return (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, values: dict) -> 'InputSpec':
    return cls(values['image_size'], values['channels'],
               tuple(values['mean']), tuple(values['std']))


def _grey_level_mean_std(images: np.ndarray) -> tuple[float, float]:
  """Mean and standard deviation of the pixels of uint8 `images`, from
  their 256-level histogram: no float copy of the images. The sums over it
  are exact integers; only the last divisions and square root round."""
  pixels = images.reshape(-1)
  counts = sum(np.bincount(pixels[start:start + _COUNT_CHUNK], minlength=256)
               for start in range(0, pixels.size, _COUNT_CHUNK))
  levels = np.arange(256, dtype=np.int64)
  # Python ints: n * sum(x^2) - sum(x)^2 exceeds int64 for large sets.
  n = int(counts.sum())
  total, squares = int(counts @ levels), int(counts @ levels**2)
  return total / n, math.sqrt((n * squares - total**2) / n**2)


def input_spec(normalization: str, image_size: int, channels: int,
               train_images: np.ndarray) -> InputSpec:
  """The spec for a normalisation mode; 'dataset' measures `train_images`.

  'symmetric' maps grey levels to [-1, 1]; 'imagenet' is torchvision's (RGB
  scaled to [0, 1], minus mean, over std per channel); 'caffe' is Keras's
  for its VGG16 weights (above).
  """
  if channels not in (1, 3):
    raise UserError(f'config.data.channels={channels} must be 1 or 3.')
  if normalization == 'symmetric':
    mean, std = (127.5,), (127.5,)
  elif normalization == 'dataset':
    mean, std = _grey_level_mean_std(train_images)
    mean, std = (mean,), (std,)
  elif normalization in ('imagenet', 'caffe'):
    if channels != 3:
      raise UserError(f'config.data.normalization={normalization!r} needs '
                      'config.data.channels=3.')
    mean, std = ((_IMAGENET_MEAN, _IMAGENET_STD) if normalization == 'imagenet'
                 else (_CAFFE_MEAN, _CAFFE_STD))
  else:
    raise UserError(f'config.data.normalization={normalization!r} is not one '
                    f'of {NORMALIZATIONS}.')
  return InputSpec(image_size, channels, mean * (channels // len(mean)),
                   std * (channels // len(std)))
