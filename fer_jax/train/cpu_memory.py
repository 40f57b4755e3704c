"""Keeping the CPU backend's step memory mapped from one train step to the
next (config.cpu_keep_memory): speed for host memory.

Each run of a compiled step on XLA:CPU mallocs its temporaries, one block
per device (at batch 32 per device: 350 MiB for resnet_small, 1.1 GiB for
mobilenetv2_small), from an XLA worker thread. glibc serves a block that
large from a fresh mmap, whatever the malloc settings, because a worker
thread's arena cannot grow past 64 MB, and unmaps it when XLA frees it:
every step faults its temporaries back in, page by page, and the kernel
zeroes each page. That was a sixth of resnet_small's CPU time and a third of
mobilenetv2_small's on the 2-core development box. One arena (the main heap,
which grows with brk), no mmap and no trimming keep the freed blocks in the
heap for the next step to reuse; giving the free pages back every few steps
bounds the heap's growth. resnet_small's step 1.2-1.3x faster, its epoch
1.13x, at 2.9 GB of peak host memory instead of 1.7
(experiments/BENCHMARKS.md, "Step memory on the CPU"): close to issue 7's 3
GB, hence off by default.

Applied only where JAX can run on nothing but the CPU and the C library is
glibc, and only fully before the backend starts its threads: a thread that
already has an arena keeps it.
"""

import ctypes
import importlib.metadata
import importlib.util
import logging
import platform

import jax

from fer_jax.errors import UserError

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely."
_NEVER_TRIM = -1


def cpu_only() -> bool:
  """Whether JAX will run on the CPU alone: JAX_PLATFORMS says 'cpu', or no
  accelerator plugin (CUDA, ROCm, TPU) is installed."""
  platforms = jax.config.jax_platforms
  if platforms:
    return set(platforms.split(',')) == {'cpu'}
  return not (importlib.metadata.entry_points(group='jax_plugins')
              or importlib.util.find_spec('jax_plugins')
              or importlib.util.find_spec('libtpu'))


def keep(steps: int) -> bool:
  """With config.cpu_keep_memory `steps` > 0 on a CPU-only glibc machine:
  one malloc arena, no mmap, no trimming, for the rest of this process.
  Returns whether it applied; the train loop then calls `after_step`."""
  if steps < 0:
    raise UserError(f'config.cpu_keep_memory={steps}: use the number of '
                    'train steps between give-backs, or 0 (off).')
  if not steps or not cpu_only() or platform.libc_ver()[0] != 'glibc':
    return False
  libc = ctypes.CDLL('libc.so.6')
  applied = all(libc.mallopt(parameter, value) == 1
                for parameter, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
                                         (_M_TRIM_THRESHOLD, _NEVER_TRIM)))
  if not applied:
    logging.warning('config.cpu_keep_memory: glibc refused a mallopt '
                    'setting; the CPU step memory is mapped afresh each step.')
  return applied


def give_back() -> None:
  """Returns the heap's free pages to the system (glibc's malloc_trim): the
  blocks freed in one place and reallocated in another that would otherwise
  pile up in a kept heap, and what compilation and evaluation freed."""
  ctypes.CDLL('libc.so.6').malloc_trim(0)


def after_step(number: int, every: int, outputs) -> None:
  """When `keep` applied, the give-back schedule of a loop over train steps,
  after its `number`-th step (from 1) with these `outputs`: after the first
  (what compilation and evaluation before it freed) and every `every`."""
  if number == 1:
    give_back()
  elif number % every == 0:
    jax.block_until_ready(outputs)  # The host dispatches steps ahead.
    give_back()
