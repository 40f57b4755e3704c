"""The library that runs convolutions on the CPU (config.cpu_convolutions).

JAX 0.10's and 0.11's XLA:CPU give convolutions to YNNPACK. On a
first-generation EPYC (Zen 1) its kernel gradients, convolutions with the
batch as the feature axis and the output gradient as a 48x48 or 24x24
"kernel", run 4.6-8.7x slower than Eigen's, which XLA:CPU used before:
resnet_small's train step is 2.2-3.4x faster with Eigen there, level with
PyTorch, and no slower on the other CPUs measured
(experiments/BENCHMARKS.md, "Convolutions in Eigen").

The choice is a compile option of each jitted function rather than an
XLA_FLAGS entry: a flag that the installed jaxlib does not know aborts the
process, an option it does not know is an error that `compiler_options`
catches once, falling back to XLA's default with a warning.
"""

import functools
import logging

import jax
import jax.numpy as jnp
import ml_collections

from fer_jax.errors import UserError

_OPTION = 'xla_cpu_experimental_ynn_fusion_type'
# jax.jit compiler_options for each setting. 'eigen': the fusions that JAX
# 0.10.2 gives YNNPACK by default (dots, elementwise ops, reductions), less
# its individual convolutions.
_OPTIONS = {
    'eigen': {_OPTION: ','.join(
        f'LIBRARY_FUSION_TYPE_{kind}' for kind in ('DOT', 'ELTWISE',
                                                   'REDUCE'))},
    'xla': None,  # XLA's default library, whatever the jaxlib version.
}
LIBRARIES = tuple(_OPTIONS)
# For a run directory written before the setting existed: what it trained
# and reported under, so that its report is regenerated the same way.
_BEFORE_THE_SETTING = 'xla'


def setting(config: ml_collections.ConfigDict) -> str:
  """config.cpu_convolutions, or for the config of a run from before it,
  the library that run used."""
  return config.get('cpu_convolutions', _BEFORE_THE_SETTING)


def check(library: str) -> None:
  """Fails on a setting that names no library, before anything compiles."""
  if library not in _OPTIONS:
    raise UserError(f'config.cpu_convolutions={library!r} is not one of '
                    f'{LIBRARIES}: use eigen (the default) or xla (XLA:CPU '
                    "picks; JAX 0.10's YNNPACK).")


def compiler_options(library: str) -> dict[str, str] | None:
  """`jax.jit`'s compiler_options that run convolutions in `library` where
  JAX computes on the CPU; None on an accelerator, for 'xla', and where the
  installed jaxlib has no such option (warned once)."""
  check(library)
  if jax.default_backend() != 'cpu' or _OPTIONS[library] is None:
    return None
  return _supported(library)


@functools.cache
def _supported(library: str) -> dict[str, str] | None:
  options = _OPTIONS[library]
  try:
    jax.jit(jnp.negative, compiler_options=options).lower(
        jnp.zeros(1)).compile()
  except jax.errors.JaxRuntimeError as e:
    logging.warning('config.cpu_convolutions=%r: JAX %s does not take the '
                    'compile option %s (%s); convolutions stay in '
                    "XLA:CPU's default library.", library, jax.__version__,
                    _OPTION, str(e).splitlines()[-1])
    return None
  return options
