"""2x2 max-pooling with stride 2 whose gradient is elementwise.

`nn.max_pool(x, (2, 2), strides=(2, 2))` is a reduce-window whose
gradient is XLA's select-and-scatter: on the H200 the two took 10% of
resnet_small's batch-1024 step, and XLA:CPU lowers the second to another
reduce-window, carrying argmax indices, and a scatter. Here the pool is
the maximum of the window's four strided slices, and its gradient four
selects interleaved back into place, which XLA fuses with the ops around
them: forward and backward 4.6-5x faster than nn.max_pool's on the CPU,
resnet_small's train step 6% (experiments/BENCHMARKS.md, "Max-pooling
with an elementwise gradient" and "JAX 0.11.2, and the slices pool back
from jaxlib 0.11"; not yet measured on a GPU).

Same output as nn.max_pool and the same gradient, bit for bit
(tests/test_max_pool.py): all of it to the first maximal element of each
window in row-major order, the one select-and-scatter picks. An odd last
row or column is dropped, as nn.max_pool's 'VALID' padding does.

Only on jaxlib 0.11 and later: jaxlib 0.10.2's XLA:CPU corrupts its heap
where YNNPACK's elementwise fusions meet these strided slices while the
convolutions run in Eigen (a FER+ fine-tune of the shipped model aborts
in malloc; it runs clean on 0.11.2), so there `pool_2x2` is nn.max_pool.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import jaxlib.version

SLICES_ON_THIS_JAXLIB = tuple(
    int(part) for part in jaxlib.version.__version__.split('.')[:2]) >= (0, 11)


def pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """`nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))` of NHWC `x`:
  `slices_pool_2x2` where the jaxlib runs it safely."""
  if x.ndim != 4:
    raise ValueError(f'pool_2x2 pools NHWC arrays, not shape {x.shape}.')
  if not SLICES_ON_THIS_JAXLIB:
    return nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))
  return slices_pool_2x2(x)


def slices_pool_2x2(x: jnp.ndarray) -> jnp.ndarray:
  """The 2x2, stride-2 max-pool of NHWC `x` as four strided slices."""
  even_h, even_w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  return _pool_even(x[:, :even_h, :even_w])


def _corners(x: jnp.ndarray) -> tuple[jnp.ndarray, ...]:
  """Each window's elements in row-major order, as four strided slices."""
  return x[:, 0::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 0::2], x[:, 1::2, 1::2]


@jax.custom_vjp
def _pool_even(x: jnp.ndarray) -> jnp.ndarray:
  top_left, top_right, bottom_left, bottom_right = _corners(x)
  return jnp.maximum(jnp.maximum(top_left, top_right),
                     jnp.maximum(bottom_left, bottom_right))


def _pool_even_forward(x):
  pooled = _pool_even(x)
  return pooled, (x, pooled)


def _pool_even_backward(residuals, gradient):
  x, pooled = residuals
  *leading, _ = _corners(x)
  taken = jnp.zeros(pooled.shape, bool)
  takes = []
  for corner in leading:
    first = (corner == pooled) & ~taken
    takes.append(first)
    taken = taken | first
  # The last corner takes what none before it took: the maximum if it is
  # there, and a NaN window's gradient, so that none is lost.
  takes.append(~taken)
  top_left, top_right, bottom_left, bottom_right = (
      jnp.where(take, gradient, jnp.zeros_like(gradient)) for take in takes)
  # [n, h/2, row in window, w/2, column in window, c] -> [n, h, w, c].
  rows = (jnp.stack([top_left, top_right], axis=3),
          jnp.stack([bottom_left, bottom_right], axis=3))
  return (jnp.stack(rows, axis=2).reshape(x.shape),)


_pool_even.defvjp(_pool_even_forward, _pool_even_backward)
