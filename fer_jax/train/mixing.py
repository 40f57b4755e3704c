"""Mixup and CutMix of a batch, inside the jitted train step.

Mixup (Zhang et al. 2018) blends every image with a partner; CutMix (Yun et
al. 2019) pastes a box of the partner into it. As in timm's Mixup (batch
mode): the partners are the batch reversed, the weight `lam` of each
image's own label is drawn once per batch from Beta(alpha, alpha), CutMix's
box covers about 1 - lam of the image and lam is then corrected to the
box's actual area (clipped at the border), and with both alphas > 0 each
batch uses one of the two with probability 0.5 (switch_prob=0.5). The loss
is lam * loss(own targets) + (1 - lam) * loss(partner targets), the loss
being cross-entropy or FER+'s multi-target loss (`step.mixed_loss`); train
accuracy is still measured against the own, unmixed labels.

`lam` comes from `symmetric_beta`, not `jax.random.beta`: that one samples
its Gammas by rejection in while loops (two per draw on a GPU), and there
every loop iteration waits on the host. With other runs sharing the GPU
the wait is long: in the H200 sweeps of experiments/RESULTS.md the mixup
and CutMix runs trained an epoch in 41-67 s beside the others' 3.1-7.5 s,
and in 3.8-4.2 s once alone.
"""

import math
import numbers

import jax
import jax.numpy as jnp

from fer_jax.errors import UserError


def check(mixup_alpha: float, cutmix_alpha: float) -> bool:
  """Validates config.train.{mixup,cutmix}_alpha; whether either is on."""
  for name, value in (('mixup_alpha', mixup_alpha),
                      ('cutmix_alpha', cutmix_alpha)):
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
        or not 0 <= value < math.inf):
      raise UserError(f'config.train.{name}={value!r} must be a number >= 0 '
                      '(0: off).')
  return bool(mixup_alpha or cutmix_alpha)


# Marsaglia and Tsang's proposals for Gamma(a >= 1) are each accepted with
# probability > 0.95: all of them are rejected with probability < 1e-20.
_GAMMA_PROPOSALS = 16


def _log_gamma(rng: jax.Array, alpha: jnp.ndarray) -> jnp.ndarray:
  """log of one Gamma(alpha) draw (alpha > 0), without a loop: Marsaglia
  and Tsang (2000) for Gamma(alpha + 1), all proposals at once and the
  first accepted kept, times U ** (1 / alpha), their boost for alpha < 1
  (in logs: for alpha = 0.2, U ** 5 underflows)."""
  normal_key, uniform_key, boost_key = jax.random.split(rng, 3)
  d = alpha + 1 - 1 / 3
  x = jax.random.normal(normal_key, (_GAMMA_PROPOSALS,))
  v = (1 + x / jnp.sqrt(9 * d)) ** 3
  log_v = jnp.log(jnp.where(v > 0, v, 1.0))
  log_u = jnp.log(jax.random.uniform(uniform_key, (_GAMMA_PROPOSALS,)))
  accepted = (v > 0) & (log_u < x ** 2 / 2 + d - d * v + d * log_v)
  # Past every proposal (< 1e-20) the mode, v = 1, rather than a NaN.
  log_v = jnp.where(accepted.any(), log_v[jnp.argmax(accepted)], 0.0)
  log_boost = jnp.log(jax.random.uniform(boost_key, minval=1e-37)) / alpha
  return jnp.log(d) + log_v + log_boost


def symmetric_beta(rng: jax.Array, alpha) -> jnp.ndarray:
  """One float32 Beta(alpha, alpha) draw, X / (X + Y) for X, Y ~ Gamma(alpha),
  without the while loops of `jax.random.beta` (module docstring)."""
  x_key, y_key = jax.random.split(rng)
  alpha = jnp.asarray(alpha, jnp.float32)
  return jax.nn.sigmoid(_log_gamma(x_key, alpha) - _log_gamma(y_key, alpha))


def partner(x: jnp.ndarray) -> jnp.ndarray:
  """Each example's partner: the batch reversed."""
  return x[::-1]


def cutmix_box(rng: jax.Array, lam: jnp.ndarray, height: int,
               width: int) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(mask [H, W], lam): a box of side sqrt(1 - lam) times the image's,
  centred uniformly and clipped at the border (timm's rand_bbox); True in
  the box. The returned lam is 1 - the box's area fraction."""
  ratio = jnp.sqrt(1 - lam)
  cut_height = (height * ratio).astype(jnp.int32)
  cut_width = (width * ratio).astype(jnp.int32)
  y_key, x_key = jax.random.split(rng)
  centre_y = jax.random.randint(y_key, (), 0, height)
  centre_x = jax.random.randint(x_key, (), 0, width)
  top = jnp.clip(centre_y - cut_height // 2, 0, height)
  bottom = jnp.clip(centre_y + cut_height // 2, 0, height)
  left = jnp.clip(centre_x - cut_width // 2, 0, width)
  right = jnp.clip(centre_x + cut_width // 2, 0, width)
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  mask = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
  area = (bottom - top) * (right - left)
  return mask, 1 - area / (height * width)


def mix(images: jnp.ndarray, rng: jax.Array, mixup_alpha: float,
        cutmix_alpha: float) -> tuple[jnp.ndarray, jnp.ndarray]:
  """(mixed images, lam) for float `images` [N, H, W(, C)].

  `lam` (float32 scalar) is the weight of each image's own label, 1 - lam
  that of its `partner`'s. The alphas are static Python numbers, at least
  one > 0.
  """
  switch_key, lam_key, box_key = jax.random.split(rng, 3)
  if mixup_alpha and cutmix_alpha:
    use_cutmix = jax.random.bernoulli(switch_key)
    alpha = jnp.where(use_cutmix, cutmix_alpha, mixup_alpha)
  else:
    use_cutmix = bool(cutmix_alpha)
    alpha = cutmix_alpha or mixup_alpha
  lam = symmetric_beta(lam_key, alpha)
  others = partner(images)
  mixed = cut = None
  if mixup_alpha:
    mixed = (lam * images + (1 - lam) * others).astype(images.dtype)
  if cutmix_alpha:
    mask, box_lam = cutmix_box(box_key, lam, *images.shape[1:3])
    mask = mask.reshape(mask.shape + (1,) * (images.ndim - 3))
    cut = jnp.where(mask, others, images)
  if mixup_alpha and cutmix_alpha:
    return (jnp.where(use_cutmix, cut, mixed),
            jnp.where(use_cutmix, box_lam, lam).astype(jnp.float32))
  if cutmix_alpha:
    return cut, box_lam.astype(jnp.float32)
  return mixed, lam
