"""models.pooling.max_pool_2x2: nn.max_pool's 2x2 stride-2 pooling, with a
gradient that needs no scatter."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from fer_jax.models import pooling


def flax_pool(x):
  return nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))


@pytest.mark.parametrize('shape', [(2, 8, 6, 3), (1, 7, 5, 2)])
def test_values_and_gradient_are_max_pools(shape):
  # Distinct values: no ties, where the two gradients may share differently.
  x = np.random.default_rng(0).permutation(np.prod(shape)).reshape(shape)
  x = x.astype(np.float32)
  np.testing.assert_array_equal(pooling.max_pool_2x2(x), flax_pool(x))
  weights = np.random.default_rng(1).normal(
      size=flax_pool(x).shape).astype(np.float32)
  grad = lambda pool: jax.grad(lambda x: (pool(x) * weights).sum())(x)
  np.testing.assert_array_equal(grad(pooling.max_pool_2x2), grad(flax_pool))


def test_gradient_has_no_select_and_scatter():
  x = np.zeros((2, 8, 8, 4), np.float32)
  hlo = jax.jit(jax.grad(lambda x: pooling.max_pool_2x2(x).sum())).lower(
      x).as_text()
  assert 'select_and_scatter' not in hlo
  assert 'select_and_scatter' in jax.jit(
      jax.grad(lambda x: flax_pool(x).sum())).lower(x).as_text()
