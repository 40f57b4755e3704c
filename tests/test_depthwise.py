"""Depthwise convolutions as shifted products compute what the grouped
convolution they replace computes, values and gradients, with the same
parameters."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax.models import depthwise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pair(stride, padding, **kwargs):
  settings = dict(kernel_size=(3, 3), strides=stride, padding=padding,
                  use_bias=False, **kwargs)
  return lambda channels: (
      nn.Conv(channels, feature_group_count=channels, **settings),
      nn.Conv(channels, feature_group_count=channels,
              conv_general_dilated=depthwise.conv_general_dilated,
              **settings))


@pytest.mark.parametrize('shape,stride,padding', [
    ((2, 12, 12, 8), 1, 'SAME'),  # mobilenetv2_small's.
    ((2, 12, 12, 8), 2, 'SAME'),
    ((2, 7, 9, 5), 2, ((1, 1), (1, 1))),  # torchvision's, odd sizes.
    ((3, 11, 10, 4), 1, ((1, 1), (1, 1))),
    ((2, 11, 11, 3), 2, 'VALID'),
])
def test_values_and_gradients_match_the_grouped_convolution(shape, stride,
                                                            padding):
  grouped, shifted = _pair(stride, padding)(shape[-1])
  x = jax.random.normal(jax.random.key(0), shape)
  variables = grouped.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, shifted.init(jax.random.key(1), x)) == (
      jax.tree.map(jnp.shape, variables))

  def loss(module, variables, x):
    return jnp.sum(jnp.sin(module.apply(variables, x)))

  for module in (grouped, shifted):
    assert module.apply(variables, x).dtype == jnp.float32
  np.testing.assert_allclose(shifted.apply(variables, x),
                             grouped.apply(variables, x), atol=1e-5)
  expected = jax.grad(loss, argnums=(1, 2))(grouped, variables, x)
  got = jax.grad(loss, argnums=(1, 2))(shifted, variables, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-4),
               got, expected)


def test_bfloat16_compute_sums_in_float32():
  grouped, shifted = _pair(1, 'SAME', dtype=jnp.bfloat16)(16)
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 16))
  variables = grouped.init(jax.random.key(1), x)
  got = shifted.apply(variables, x)
  assert got.dtype == jnp.bfloat16
  # One bfloat16 rounding (2^-8) of the float32 result: a sum in bfloat16
  # would round at every term.
  exact = _pair(1, 'SAME')(16)[0].apply(
      jax.tree.map(lambda v: v.astype(jnp.bfloat16).astype(jnp.float32),
                   variables), x.astype(jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(got.astype(jnp.float32), exact, rtol=2**-8,
                             atol=1e-6)


@pytest.mark.parametrize('groups,features,dilation', [
    (1, 8, 1),  # A dense convolution.
    (4, 8, 1),  # Groups of two channels.
    (8, 8, 2),  # Dilated.
])
def test_other_convolutions_are_refused(groups, features, dilation):
  conv = nn.Conv(features, (3, 3), feature_group_count=groups,
                 kernel_dilation=dilation,
                 conv_general_dilated=depthwise.conv_general_dilated)
  with pytest.raises(ValueError, match='depthwise convolutions only'):
    conv.init(jax.random.key(0), jnp.zeros((1, 8, 8, 8)))


def test_benchmark_script_prints_its_table():
  script = os.path.join(ROOT, 'experiments', 'bench_depthwise.py')
  done = subprocess.run(
      [sys.executable, script, '--shapes=2x8x8x4,1x5x6x3', '--repeats=1',
       '--notorch'], capture_output=True, text=True, check=True)
  rows = [line.split('|') for line in done.stdout.splitlines()
          if line.startswith('| 2x8x8x4') or line.startswith('| 1x5x6x3')]
  assert len(rows) == 2, done.stdout
  for row in rows:
    assert float(row[6]) < 1e-5  # Max difference of the two JAX results.
