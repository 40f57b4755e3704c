"""The 2x2 max-pool with an elementwise gradient computes what nn.max_pool
computes, values and gradients, bit for bit, ties included; the models
use it from jaxlib 0.11 on."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import jaxlib.version
import numpy as np
import pytest

from fer_jax import cpu_convolutions, models
from fer_jax.models import max_pool

# The suite's level (tests/conftest.py) and XLA's default: XLA:CPU fuses
# differently at each, and has computed wrong gradients at one of them for
# another formulation of this pool (experiments/BENCHMARKS.md).
LEVELS = [{'xla_backend_optimization_level': '0'},
          {'xla_backend_optimization_level': '3'}]


def _reference(x):
  return nn.max_pool(x, window_shape=(2, 2), strides=(2, 2))


def _value_and_gradient(pool, x, weights, options):
  return jax.jit(jax.value_and_grad(lambda x: (pool(x) * weights).sum()),
                 compiler_options=options)(x)


@pytest.mark.parametrize('options', LEVELS)
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('shape', [(3, 8, 6, 4), (2, 7, 9, 3)])
def test_values_and_gradients_match_nn_max_pool(shape, dtype, options):
  rng = np.random.default_rng(0)
  # Integers from -2 to 2 and ReLU-like zeros: most windows hold ties,
  # where the gradient must go to the same element as nn.max_pool's.
  x = np.maximum(rng.integers(-2, 3, shape), 0).astype(np.float32)
  x[0, 0, :2, 0] = [-0.0, 0.0]
  x[1, :2, :2, 1] = -1.0
  x = jnp.asarray(x, dtype)
  pooled_shape = (shape[0], shape[1] // 2, shape[2] // 2, shape[3])
  weights = jnp.asarray(rng.normal(size=pooled_shape), dtype)
  expected = _value_and_gradient(_reference, x, weights, options)
  got = _value_and_gradient(max_pool.slices_pool_2x2, x, weights, options)
  np.testing.assert_array_equal(max_pool.slices_pool_2x2(x), _reference(x))
  assert got[1].dtype == dtype
  np.testing.assert_array_equal(got[0], expected[0])
  np.testing.assert_array_equal(got[1], expected[1])
  # Every window passes its gradient to exactly one element.
  assert int((got[1] != 0).sum()) == int((weights != 0).sum())


@pytest.mark.parametrize('convolutions', ['xla', 'eigen'])
@pytest.mark.parametrize('options', LEVELS)
def test_resnet_small_gradients_match_those_through_nn_max_pool(
    options, convolutions, monkeypatch):
  """Inside the model the pool's neighbours fuse with it differently."""
  if convolutions == 'eigen' and not max_pool.SLICES_ON_THIS_JAXLIB:
    pytest.skip('the slices beside Eigen convolutions corrupt jaxlib '
                f'{jaxlib.version.__version__}\'s heap; its models use '
                'nn.max_pool')
  options = {**options,
             **(cpu_convolutions.compiler_options(convolutions) or {})}
  model = models.create('resnet_small', 7, stem_features=8,
                        block_features=(8, 16), dropout=0.1)
  faces = jax.random.normal(jax.random.key(0), (8, 48, 48, 1))
  labels = jnp.arange(8) % 7
  variables = model.init(jax.random.key(1), faces)

  def loss(params):
    logits, _ = model.apply({**variables, 'params': params}, faces,
                            train=True, mutable=['batch_stats'],
                            rngs={'dropout': jax.random.key(2)})
    return -jnp.take_along_axis(jax.nn.log_softmax(logits),
                                labels[:, None], axis=1).mean()

  def loss_and_gradients():
    return jax.jit(jax.value_and_grad(loss), compiler_options=options)(
        variables['params'])

  monkeypatch.setattr(max_pool, 'pool_2x2', max_pool.slices_pool_2x2)
  got = loss_and_gradients()
  monkeypatch.setattr(max_pool, 'pool_2x2', _reference)
  expected = loss_and_gradients()
  np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got[1])[0],
                          jax.tree.leaves(expected[1])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0,
                               err_msg=jax.tree_util.keystr(path))


def test_models_pool_with_the_slices_from_jaxlib_0_11():
  # jax and jaxlib are released together: jax's version is jaxlib's.
  assert max_pool.SLICES_ON_THIS_JAXLIB == (jax.__version_info__ >= (0, 11))
  gradient = jax.make_jaxpr(jax.grad(lambda x: max_pool.pool_2x2(x).sum()))(
      jnp.zeros((1, 4, 4, 1)))
  assert ('select_and_scatter_add' in str(gradient)) == (
      not max_pool.SLICES_ON_THIS_JAXLIB)


def test_other_ranks_are_refused():
  with pytest.raises(ValueError, match=r'NHWC arrays, not shape \(4, 4\)'):
    max_pool.pool_2x2(jnp.zeros((4, 4)))
