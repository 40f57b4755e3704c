"""config.cpu_convolutions: the compile option that moves XLA:CPU's
convolutions from YNNPACK to Eigen, and its fallbacks."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from fer_jax import cpu_convolutions, inference, rundir
from fer_jax.errors import UserError
from fer_jax.predict import predictor


@pytest.fixture(autouse=True)
def fresh_support_check():
  cpu_convolutions._supported.cache_clear()
  yield
  cpu_convolutions._supported.cache_clear()


def _kernel_gradient(compiler_options):
  """resnet_small's 64->64 3x3 kernel gradient at 48x48 (a smaller batch),
  one that YNNPACK computes 5x slower than Eigen on a Zen 1 EPYC:
  (compiled HLO text, gradient)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((8, 48, 48, 64), np.float32))
  w = jnp.asarray(rng.standard_normal((3, 3, 64, 64), np.float32))
  dy = jnp.asarray(rng.standard_normal((8, 48, 48, 64), np.float32))

  def gradient(x, w, dy):
    conv = lambda w: lax.conv_general_dilated(  # pylint: disable=g-long-lambda
        x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    return jax.vjp(conv, w)[1](dy)[0]

  compiled = jax.jit(gradient, compiler_options=compiler_options).lower(
      x, w, dy).compile()
  return compiled.as_text(), np.asarray(compiled(x, w, dy))


def test_eigen_moves_the_kernel_gradient_out_of_ynnpack_with_the_same_result():
  eigen_hlo, eigen = _kernel_gradient(
      cpu_convolutions.compiler_options('eigen'))
  default_hlo, default = _kernel_gradient(
      cpu_convolutions.compiler_options('xla'))
  if 'ynn_fusion' not in default_hlo:
    pytest.skip(f'JAX {jax.__version__} does not give this convolution to '
                'YNNPACK: nothing to move.')
  assert 'ynn_fusion' not in eigen_hlo
  assert ' convolution(' in eigen_hlo
  np.testing.assert_allclose(eigen, default, rtol=1e-4,
                             atol=1e-4 * np.abs(default).max())


def test_options_only_for_eigen_on_the_cpu(monkeypatch):
  assert cpu_convolutions.compiler_options('xla') is None
  assert cpu_convolutions.compiler_options('eigen')
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert cpu_convolutions.compiler_options('eigen') is None


def test_unknown_library_names_the_setting_and_the_choices():
  with pytest.raises(UserError, match=r"config.cpu_convolutions='mkl' is not "
                     r"one of \('eigen', 'xla'\)"):
    cpu_convolutions.compiler_options('mkl')


def test_a_jaxlib_without_the_option_keeps_xlas_default_with_a_warning(
    monkeypatch, caplog):
  monkeypatch.setitem(cpu_convolutions._OPTIONS, 'eigen',
                      {'xla_cpu_option_of_another_jaxlib': 'x'})
  with caplog.at_level(logging.WARNING):
    assert cpu_convolutions.compiler_options('eigen') is None
    assert cpu_convolutions.compiler_options('eigen') is None
  warnings = [r.getMessage() for r in caplog.records
              if 'cpu_convolutions' in r.getMessage()]
  assert len(warnings) == 1, warnings
  assert 'xla_cpu_option_of_another_jaxlib' in warnings[0]


def test_a_run_from_before_the_setting_is_evaluated_as_it_was():
  """The shipped model's config.json has no cpu_convolutions: its report
  is regenerated under XLA's default, as it was computed."""
  run = rundir.RunDir(predictor.PRETRAINED_DIR, create=False)
  assert 'cpu_convolutions' not in run.load_config()
  assert inference.load_trained(run).compiler_options is None
