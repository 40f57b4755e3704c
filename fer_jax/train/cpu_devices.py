"""Splitting the CPU into several JAX devices, for data parallel training on
a machine without an accelerator (config.cpu_devices).

With one device, XLA:CPU (JAX 0.10) keeps about 1.5 of 2 cores busy during
the train step; one device per core, each with half the batch, keeps both
busy and spends less CPU time per step. resnet_small trains 1.5x faster on
the 2-core development box, 1.2x on JAX 0.11, whose one device fills both
cores less efficiently (experiments/BENCHMARKS.md, "One CPU device per
core"). On an accelerator the CPU devices go unused.
"""

import logging
import os

import jax

from fer_jax.errors import UserError

# How a user or a test fixes the count themselves; auto leaves theirs alone.
_XLA_FLAG = '--xla_force_host_platform_device_count'


def available_cores() -> int:
  """The cores this process may run on (its affinity, not the machine's)."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def auto_count(batch_size: int, cores: int) -> int:
  """One device per core, or the most that split `batch_size` evenly."""
  return max(n for n in range(1, max(cores, 1) + 1) if batch_size % n == 0)


def split(setting: int, batch_size: int, num_processes: int = 1) -> None:
  """Sets the CPU backend's device count from config.cpu_devices before
  any JAX computation: N > 0 devices, or with 0 (auto) `auto_count` of the
  global `batch_size` in a one-process run. Auto keeps a count already
  chosen (JAX_NUM_CPU_DEVICES, XLA_FLAGS' `_XLA_FLAG`, a backend already
  started in this process) and splits nothing in multi-process runs, whose
  processes share the machine's cores."""
  if setting < 0:
    raise UserError(f'config.cpu_devices={setting}: use 0 (one per core) '
                    'or a positive number of CPU devices.')
  if setting == 0:
    if (num_processes != 1 or jax.config.jax_num_cpu_devices != -1
        or _XLA_FLAG in os.environ.get('XLA_FLAGS', '')):
      return
    count = auto_count(batch_size, available_cores())
  else:
    count = setting
  try:
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:
    if setting:
      raise UserError(
          f'config.cpu_devices={setting}, but JAX already started its '
          f'backends in this process with {jax.device_count("cpu")} CPU '
          'device(s); set it in a fresh process (python -m fer_jax.main) '
          'or leave it at 0.') from None
    logging.info('JAX already started in this process: keeping its %d CPU '
                 'device(s).', jax.device_count('cpu'))
