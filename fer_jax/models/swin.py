"""Swin-T in timm's layout (`swin_tiny_patch4_window7_224`), for converted
weights.

patch embedding (conv 4x4/4 to 96 channels -> LayerNorm) -> four stages of
2, 2, 6, 2 blocks with 3, 6, 12, 24 heads at 96, 192, 384, 768 channels,
stages 2-4 starting with a patch merging (2x2 neighbours concatenated ->
LayerNorm -> linear to twice the channels) -> LayerNorm -> with
head='imagenet' global average pooling -> dense(classes), as timm's. A block
is x + attn(norm1(x)), then x + mlp(norm2(x)) (GELU, 4x hidden), each branch
with stochastic depth (`drop_path_rate` rising linearly over the 12 blocks,
as timm; training only). Attention is within 7x7 windows, with a learnt
relative position bias; every second block shifts the windows by 3 (a cyclic
roll) and masks the attention between regions the roll brought together.
28,288,354 parameters with 1000 classes.

Other input sizes (sides divisible by 32) work as in timm: where a stage's
side is at most 7 the window becomes that side and the block does not shift
(so at 224 the last stage does not shift), and a side that is not a multiple
of the window is zero-padded. The bias table keeps its 224 shape
((2*7-1)^2 x heads) whatever the input, so converted weights load at any
size; for a smaller window the port resamples it as timm's
`resize_rel_pos_bias_table` does when it loads 224 weights into a smaller
model (a fixed linear map, close to cropping the table's centre).

Module names follow timm's state-dict keys (`layers.1.blocks.0.attn.qkv` ->
`layers_1/blocks_0/attn/qkv`, `head.fc` -> `head/fc`), which is what
fer_jax.convert relies on. The other heads (fer_jax/models/heads.py) take
the final LayerNorm's [N, H, W, C] map.
"""

import functools
from collections.abc import Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fer_jax.errors import UserError
from fer_jax.models import heads

# The window size the weights are trained for: it fixes the bias tables'
# shape.
WINDOW = 7
_trunc_normal = nn.initializers.truncated_normal(0.02)
_LayerNorm = functools.partial(nn.LayerNorm, epsilon=1e-5)  # torch's eps.


def _dense(features: int, *, name: str, dtype: Any,
           use_bias: bool = True) -> nn.Dense:
  return nn.Dense(features, use_bias=use_bias, kernel_init=_trunc_normal,
                  dtype=dtype, name=name)


# ------------------------------------------- Static geometry (numpy, traced
# once per input size; constants in the jitted function).


def relative_position_index(wh: int, ww: int) -> np.ndarray:
  """[wh*ww, wh*ww]: each token pair's row in a (2wh-1)(2ww-1) bias table."""
  coords = np.stack(np.meshgrid(np.arange(wh), np.arange(ww), indexing='ij'))
  coords = coords.reshape(2, -1)
  relative = coords[:, :, None] - coords[:, None, :]
  return (relative[0] + wh - 1) * (2 * ww - 1) + relative[1] + ww - 1


def _timm_positions(src: int, dst: int) -> np.ndarray:
  # timm.layers.resize_rel_pos_bias_table: the source table's offsets spread
  # geometrically so that the target's fit (for a smaller target the ratio
  # stays at its lower bound, 1.01).
  left, right = 1.01, 1.5
  while right - left > 1e-6:
    q = (left + right) / 2.0
    if (1.0 - q**(src // 2)) / (1.0 - q) > dst // 2:
      right = q
    else:
      left = q
  dis, cur = [], 1.0
  for i in range(src // 2):
    dis.append(cur)
    cur += q**(i + 1)
  return np.array([-d for d in reversed(dis)] + [0.0] + dis, np.float32)


def _linear_resampling(src: int, dst: int) -> np.ndarray:
  """[dst, src]: timm's (linear) resampling of a table side of `src` offsets
  to `dst`."""
  points = _timm_positions(src, dst).astype(np.float64)
  half = dst // 2
  targets = np.arange(-half, half + 0.1, 1.0, dtype=np.float32)
  weights = np.zeros((dst, src))
  for i, x in enumerate(targets.astype(np.float64)):
    right = min(int(np.searchsorted(points, x, side='left')), src - 1)
    left = max(right - 1, 0)
    d_left, d_right = max(x - points[left], 0.0), max(points[right] - x, 0.0)
    if d_left == d_right == 0:
      d_left = d_right = 1.0
    weights[i, left] += d_right / (d_left + d_right)
    weights[i, right] += d_left / (d_left + d_right)
  return weights


def bias_table_resampling(window: tuple[int, int]) -> np.ndarray | None:
  """[(2wh-1)(2ww-1), (2*7-1)^2]: the table of a `window` from the 7x7 one,
  as timm resamples a 224 checkpoint's; None for 7x7."""
  if window == (WINDOW, WINDOW):
    return None
  side = 2 * WINDOW - 1
  return np.kron(_linear_resampling(side, 2 * window[0] - 1),
                 _linear_resampling(side, 2 * window[1] - 1)).astype(
                     np.float32)


def shift_mask(height: int, width: int, window: tuple[int, int],
               shift: tuple[int, int]) -> np.ndarray:
  """[windows, n, n] of 0 and -100 (timm's): which tokens of each window of
  the rolled (padded) height x width map may attend to each other."""
  regions = np.zeros((height, width))
  count = 0
  for rows in ((0, -window[0]), (-window[0], -shift[0]), (-shift[0], None)):
    for cols in ((0, -window[1]), (-window[1], -shift[1]), (-shift[1], None)):
      regions[slice(*rows), slice(*cols)] = count
      count += 1
  regions = regions.reshape(height // window[0], window[0],
                            width // window[1], window[1])
  regions = regions.transpose(0, 2, 1, 3).reshape(-1, window[0] * window[1])
  return np.where(regions[:, None, :] != regions[:, :, None], -100.0,
                  0.0).astype(np.float32)


def _partition(x: jnp.ndarray, window: tuple[int, int]) -> jnp.ndarray:
  """[B, H, W, C] -> [B * windows, wh * ww, C], windows in row order."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // window[0], window[0], w // window[1], window[1], c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def _merge(x: jnp.ndarray, window: tuple[int, int], b: int, h: int,
           w: int) -> jnp.ndarray:
  """The inverse of _partition."""
  c = x.shape[-1]
  x = x.reshape(b, h // window[0], w // window[1], window[0], window[1], c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)


# ---------------------------------------------------------------- Modules.


class WindowAttention(nn.Module):
  """Multi-head self-attention within each window, plus the relative
  position bias and the shift mask."""
  num_heads: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, window: tuple[int, int],
               mask: np.ndarray | None) -> jnp.ndarray:
    windows, n, c = x.shape
    head_dim = c // self.num_heads
    table = self.param('relative_position_bias_table', _trunc_normal,
                       ((2 * WINDOW - 1)**2, self.num_heads))
    resampling = bias_table_resampling(window)
    if resampling is not None:
      table = jnp.asarray(resampling) @ table
    index = relative_position_index(*window).reshape(-1)
    bias = jnp.take(table, jnp.asarray(index), axis=0)
    bias = bias.reshape(n, n, self.num_heads).transpose(2, 0, 1)

    qkv = _dense(3 * c, name='qkv', dtype=self.dtype)(x)
    qkv = qkv.reshape(windows, n, 3, self.num_heads, head_dim)
    q, k, v = qkv.transpose(2, 0, 3, 1, 4)  # Each [windows, heads, n, d].
    logits = jnp.einsum('whnd,whmd->whnm', q * head_dim**-0.5, k)
    logits = logits.astype(jnp.float32) + bias
    if mask is not None:
      logits = logits.reshape(-1, mask.shape[0], self.num_heads, n, n)
      logits = logits + jnp.asarray(mask)[None, :, None]
      logits = logits.reshape(windows, self.num_heads, n, n)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    y = jnp.einsum('whnm,whmd->wnhd', weights, v).reshape(windows, n, c)
    return _dense(c, name='proj', dtype=self.dtype)(y)


class Mlp(nn.Module):
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    c = x.shape[-1]
    x = _dense(4 * c, name='fc1', dtype=self.dtype)(x)
    x = nn.gelu(x, approximate=False)  # torch.nn.GELU's default.
    return _dense(c, name='fc2', dtype=self.dtype)(x)


class SwinBlock(nn.Module):
  """(Shifted) window attention and MLP, each residual with drop path."""
  num_heads: int
  shift: bool
  drop_path: float = 0.0
  dtype: Any = jnp.float32

  def _drop_path(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if not train or not self.drop_path:
      return x
    keep = 1.0 - self.drop_path
    kept = jax.random.bernoulli(self.make_rng('dropout'), keep,
                                (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(kept, x / keep, jnp.zeros_like(x))

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    b, h, w, _ = x.shape
    # timm: a side that fits in one window makes the window and no shift.
    window = (min(h, WINDOW), min(w, WINDOW))
    shift = tuple(s // 2 if self.shift and r > s else 0
                  for r, s in zip((h, w), window))
    y = _LayerNorm(dtype=self.dtype, name='norm1')(x)
    if any(shift):
      y = jnp.roll(y, (-shift[0], -shift[1]), axis=(1, 2))
    pad_h, pad_w = -h % window[0], -w % window[1]
    if pad_h or pad_w:
      y = jnp.pad(y, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    mask = (shift_mask(h + pad_h, w + pad_w, window, shift) if any(shift)
            else None)
    y = WindowAttention(self.num_heads, dtype=self.dtype, name='attn')(
        _partition(y, window), window, mask)
    y = _merge(y, window, b, h + pad_h, w + pad_w)[:, :h, :w]
    if any(shift):
      y = jnp.roll(y, shift, axis=(1, 2))
    x = x + self._drop_path(y, train)
    y = Mlp(dtype=self.dtype, name='mlp')(
        _LayerNorm(dtype=self.dtype, name='norm2')(x))
    return x + self._drop_path(y, train)


class PatchMerging(nn.Module):
  """2x2 neighbours concatenated (timm's order) -> LayerNorm -> linear."""
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 4, 2, 5)
    x = x.reshape(b, h // 2, w // 2, 4 * c)
    x = _LayerNorm(dtype=self.dtype, name='norm')(x)
    return _dense(2 * c, use_bias=False, name='reduction', dtype=self.dtype)(x)


class SwinStage(nn.Module):
  depth: int
  num_heads: int
  downsample: bool
  drop_paths: Sequence[float]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    if self.downsample:
      x = PatchMerging(dtype=self.dtype, name='downsample')(x)
    for i in range(self.depth):
      x = SwinBlock(self.num_heads, shift=i % 2 == 1,
                    drop_path=self.drop_paths[i], dtype=self.dtype,
                    name=f'blocks_{i}')(x, train)
    return x


class PatchEmbed(nn.Module):
  embed_dim: int
  patch: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = nn.Conv(self.embed_dim, (self.patch, self.patch), strides=self.patch,
                padding='VALID', dtype=self.dtype, name='proj')(x)
    return _LayerNorm(dtype=self.dtype, name='norm')(x)


class ClassifierHead(nn.Module):
  """timm's ClassifierHead after its pooling: dropout -> fc."""
  num_classes: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return _dense(self.num_classes, name='fc', dtype=self.dtype)(x)


class SwinTransformer(nn.Module):
  """Returns float32 logits; sows the classifier input as
  `intermediates/pre_logits`."""
  # Set by the subclasses; not config settings.
  PATCH: ClassVar[int] = 4
  EMBED_DIM: ClassVar[int] = 96
  DEPTHS: ClassVar[Sequence[int]] = (2, 2, 6, 2)
  NUM_HEADS: ClassVar[Sequence[int]] = (3, 6, 12, 24)
  num_classes: int
  head: str = heads.IMAGENET  # Or one of heads.HEADS.
  dropout: float = 0.0  # Before the classifier (timm's drop_rate) or heads'.
  # Stochastic depth of the last block (timm's default); 0 at the first.
  drop_path_rate: float = 0.1
  # Activations and compute (config.train.compute_dtype); params stay float32.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
    heads.check(self.head)
    stride = self.PATCH * 2**(len(self.DEPTHS) - 1)
    if x.shape[1] % stride or x.shape[2] % stride:
      raise UserError(f'Swin needs image sides divisible by {stride}, not '
                      f'{x.shape[1]}x{x.shape[2]}: set config.data.image_size'
                      f' to e.g. 224 (its weights\' size), or 64 for a quick '
                      'check.')
    x = PatchEmbed(self.EMBED_DIM, self.PATCH, dtype=self.dtype,
                   name='patch_embed')(x)
    rates = np.linspace(0.0, self.drop_path_rate, sum(self.DEPTHS))
    start = 0
    for i, (depth, num_heads) in enumerate(zip(self.DEPTHS, self.NUM_HEADS)):
      x = SwinStage(depth, num_heads, downsample=i > 0,
                    drop_paths=tuple(rates[start:start + depth].tolist()),
                    dtype=self.dtype, name=f'layers_{i}')(x, train)
      start += depth
    x = _LayerNorm(dtype=self.dtype, name='norm')(x)
    if self.head != heads.IMAGENET:
      return heads.apply_study_head(self, x, train)
    x = jnp.mean(x, axis=(1, 2))
    self.sow('intermediates', 'pre_logits', x)
    return ClassifierHead(self.num_classes, self.dropout, dtype=self.dtype,
                          name='head')(x, train).astype(jnp.float32)


# The registered model.
class SwinTiny(SwinTransformer):
  """timm's swin_tiny_patch4_window7_224."""
