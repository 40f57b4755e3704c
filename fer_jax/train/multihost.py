"""Several processes (hosts) training one run with JAX's distributed runtime:
starting it from config.distributed, and what each process then needs.
"""

import logging

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from fer_jax.errors import UserError


def initialize(settings: ml_collections.ConfigDict | None) -> None:
  """Starts JAX's distributed runtime when config.distributed asks for more
  than one process; before any JAX computation, and once per process (a
  later train() in the same process finds it started)."""
  if settings is None or settings.num_processes == 1:
    return
  if jax.distributed.is_initialized():
    if settings.num_processes not in (0, jax.process_count()):
      raise UserError(
          f'config.distributed.num_processes={settings.num_processes}, but '
          f'this process already runs in a group of {jax.process_count()}.')
    return
  try:
    jax.distributed.initialize(
        coordinator_address=settings.coordinator_address or None,
        num_processes=settings.num_processes or None,
        process_id=None if settings.process_id < 0 else settings.process_id)
  except (RuntimeError, ValueError) as e:
    raise UserError(
        f'jax.distributed.initialize failed with config.distributed '
        f'{settings.to_dict()}: {e}') from None
  logging.info('Process %d of %d; %d of %d devices here.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def local(tree):
  """The replicated arrays of `tree` as this process's own copies (on its
  first device), for computations each process runs alone: evaluation, which
  would otherwise run on every device of the mesh, each the whole of it."""
  if jax.device_count() == 1:
    return tree
  return jax.tree.map(lambda x: x.addressable_data(0), tree)


def from_process_0(record: dict) -> dict:
  """Process 0's numbers in every process, bit for bit, so that all take
  the same checkpoint, plateau and early-stopping decisions (an orbax save
  needs every process)."""
  if jax.process_count() == 1:
    return record
  names = sorted(record)
  bits = np.array([record[n] for n in names], np.float64).view(np.uint32)
  values = np.asarray(multihost_utils.broadcast_one_to_all(bits),
                      np.uint32).view(np.float64)
  return {n: type(record[n])(v) for n, v in zip(names, values)}
