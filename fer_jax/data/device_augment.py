"""Online augmentation on the accelerator, batched inside the jitted step.

The alternative to the host-side Grain transform (`fer_jax.data.augment`),
chosen with `config.data.augment.where = 'device'`: Grain then only shuffles
and batches, uint8 batches go to the device, and the train step calls
`augment` with a key split from its step key. The knobs and their ranges are
the host ones (`augment.RandomAugment` validates both), drawn per example:

  rotation     degrees, uniform in [-rotation, rotation];
  translation  fraction of the size per axis, uniform in [-t, t];
  zoom         scale uniform in [1 - zoom, 1 + zoom];
  hflip        mirror left-right with probability 0.5;
  brightness   additive shift, uniform in [-b, b] times 255;
  contrast     factor uniform in [1 - c, 1 + c] around the image mean;
  erasing      probability of random erasing, last: one box of area fraction
               in [0.02, 0.33], aspect ratio log-uniform in [0.3, 3.3],
               filled with grey levels uniform in {0, ..., 255} per pixel
               (`augment.erase_sizes`, torchvision's RandomErasing).

Geometric ops are one affine map per face, applied by one batched bilinear
resample with mirrored borders (OpenCV's BORDER_REFLECT_101, as on the
host). Unlike the host path the result stays float32 in [0, 255], not
rounded to integers.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fer_jax.data import augment as host_augment
from fer_jax.errors import UserError

PLACES = ('host', 'device')


def where(augment_config: ml_collections.ConfigDict) -> str:
  """`config.data.augment.where`, checked; 'host' for configs without it."""
  place = getattr(augment_config, 'where', 'host')
  if place not in PLACES:
    raise UserError(f'config.data.augment.where={place!r} must be one of '
                    f'{PLACES}.')
  return place


def from_config(augment_config: ml_collections.ConfigDict
               ) -> host_augment.RandomAugment | None:
  """The settings for `augment` when augmentation runs on the device, else
  None (also when every op is off). Validates every knob."""
  place = where(augment_config)
  settings = host_augment.from_config(augment_config)
  return settings if place == 'device' else None


def _inverse_affines(draws: jnp.ndarray, flips: jnp.ndarray, height: int,
                     width: int) -> jnp.ndarray:
  """[N, 2, 3] maps from output (x, y, 1) to input (x, y) pixel positions.

  The forward map is the host one: dst = L @ (src - centre) + centre + shift
  with L = (1 + zoom) R(angle) diag(flip, 1); this is its inverse,
  src = diag(flip, 1) R(-angle) / (1 + zoom) @ (dst - centre - shift) + centre.
  """
  angle, shift_x, shift_y, zoom = draws.T
  cos, sin = jnp.cos(angle) / (1 + zoom), jnp.sin(angle) / (1 + zoom)
  linear = jnp.stack([jnp.stack([flips * cos, flips * sin], -1),
                      jnp.stack([-sin, cos], -1)], -2)  # [N, 2, 2]
  centre = jnp.array([(width - 1) / 2, (height - 1) / 2], jnp.float32)
  shift = jnp.stack([shift_x * width, shift_y * height], -1)
  offset = centre - jnp.einsum('nij,nj->ni', linear, centre + shift)
  return jnp.concatenate([linear, offset[..., None]], -1)


def _warp(images: jnp.ndarray, inverses: jnp.ndarray) -> jnp.ndarray:
  """Bilinear resample of float [N, H, W, C] through per-image [2, 3] maps."""
  height, width = images.shape[1:3]
  rows, cols = jnp.meshgrid(jnp.arange(height, dtype=jnp.float32),
                            jnp.arange(width, dtype=jnp.float32),
                            indexing='ij')

  def one(image, inverse):
    src_x = inverse[0, 0] * cols + inverse[0, 1] * rows + inverse[0, 2]
    src_y = inverse[1, 0] * cols + inverse[1, 1] * rows + inverse[1, 2]

    def channel(plane):
      return jax.scipy.ndimage.map_coordinates(plane, [src_y, src_x],
                                               order=1, mode='mirror')

    return jax.vmap(channel, in_axes=-1, out_axes=-1)(image)

  return jax.vmap(one)(images, inverses)


def augment(images: jnp.ndarray, rng: jax.Array,
            settings: host_augment.RandomAugment) -> jnp.ndarray:
  """Random affine + flip + brightness / contrast + erasing, independently
  per image.

  Args:
    images: uint8 or float grey levels, [N, H, W] or [N, H, W, C].
    rng: One key for the batch; every image gets its own draws from it.
    settings: The knobs (`from_config`), static Python numbers; 0 / False
      turns an op off.

  Returns:
    float32 in [0, 255], the shape of `images`; the same key gives the same
    result.
  """
  x = images.astype(jnp.float32)
  grey = x.ndim == 3
  if grey:
    x = x[..., None]
  num, height, width = x.shape[:3]
  affine_key, flip_key, brightness_key, contrast_key = jax.random.split(rng, 4)
  flips = jnp.ones((num,), jnp.float32)
  if settings.hflip:
    flips = jnp.where(jax.random.bernoulli(flip_key, 0.5, (num,)), -1.0, 1.0)
  if settings.rotation or settings.translation or settings.zoom:
    ranges = jnp.array([np.deg2rad(settings.rotation), settings.translation,
                        settings.translation, settings.zoom], jnp.float32)
    draws = jax.random.uniform(affine_key, (num, 4), jnp.float32, -1.0,
                               1.0) * ranges
    x = _warp(x, _inverse_affines(draws, flips, height, width))
  elif settings.hflip:  # A mirror only: exact, no resampling.
    x = jnp.where(flips[:, None, None, None] < 0, x[:, :, ::-1], x)
  if settings.brightness:
    x = x + 255 * jax.random.uniform(
        brightness_key, (num, 1, 1, 1), jnp.float32, -settings.brightness,
        settings.brightness)
  if settings.contrast:
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    factor = jax.random.uniform(
        contrast_key, (num, 1, 1, 1), jnp.float32, 1 - settings.contrast,
        1 + settings.contrast)
    x = (x - mean) * factor + mean
  if settings.brightness or settings.contrast:
    x = jnp.clip(x, 0, 255)
  if settings.erasing:
    # Folded, not split: the other ops' draws stay as they were.
    x = _erase(x, jax.random.fold_in(rng, 4), settings.erasing)
  return x[..., 0] if grey else x


def _erase(images: jnp.ndarray, rng: jax.Array,
           probability: float) -> jnp.ndarray:
  """Random erasing of float [N, H, W, C]: each image, with `probability`,
  gets one box of random grey levels (see `augment.erase_sizes`)."""
  num, height, width = images.shape[:3]
  apply_key, size_key, top_key, left_key, value_key = jax.random.split(rng, 5)
  box_heights, box_widths, fits = host_augment.erase_sizes(
      jax.random.uniform(size_key, (num, host_augment.ERASE_ATTEMPTS, 2)),
      height, width, xp=jnp)
  first = jnp.argmax(fits, axis=1)[:, None]  # The first attempt that fits.
  box_height = jnp.take_along_axis(box_heights, first, 1)[:, 0]
  box_width = jnp.take_along_axis(box_widths, first, 1)[:, 0]
  erase = jax.random.bernoulli(apply_key, probability, (num,)) & fits.any(1)
  top = jax.random.randint(top_key, (num,), 0, height - box_height + 1)
  left = jax.random.randint(left_key, (num,), 0, width - box_width + 1)
  rows = jnp.arange(height)[None, :, None]
  cols = jnp.arange(width)[None, None, :]
  inside = ((rows >= top[:, None, None])
            & (rows < (top + box_height)[:, None, None])
            & (cols >= left[:, None, None])
            & (cols < (left + box_width)[:, None, None])
            & erase[:, None, None])
  noise = jax.random.randint(value_key, images.shape, 0, 256).astype(
      images.dtype)
  return jnp.where(inside[..., None], noise, images)
