"""Sweep files: the runs they declare, named and resolved into configs.

A sweep file is a config file, `get_config()`, with `sweep(add)` beside it
(as in big_vision): each `add(**overrides)` declares one run, the overrides
keyed by config path ('train.learning_rate', or with big_vision's 'config.'
prefix), and `add(name=..., ...)` names it; a product over
hyper-parameters is nested loops or itertools.product. A run is named after
its overrides: `optimizer=sgd,learning_rate=0.01,dropout=0.15`.

A run may start from (or distil from) a run added before it in the same
sweep: `add(name='restart', **{'model.init_from': Earlier('first')})`. It
then trains after that one, and not at all if that one fails; a recipe of
several stages is one sweep, and one command.

Sweep files import this module (load_config, Earlier), and
`python -m fer_jax.sweep` loads them as its --config while it parses its
flags: it imports no JAX, so that a mistyped flag is answered at once.
Training the runs is sweep_runner.py's job.
"""

import collections
import dataclasses
import importlib.util
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from fer_jax.errors import UserError

# The settings whose value is a run directory: those an Earlier may give.
RUN_KEYS = ('model.init_from', 'train.distill_from')


@dataclasses.dataclass(frozen=True)
class Earlier:
  """An override value: the run directory of the sweep's run `name`, which
  must be added before the run that names it (RUN_KEYS only)."""
  name: str

  def __str__(self) -> str:  # In the names of unnamed runs.
    return self.name


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  overrides: dict[str, Any]  # Config path -> value, Earlier runs as paths.
  config: ml_collections.ConfigDict  # Resolved and checked.
  after: tuple[str, ...] = ()  # The Earlier runs it starts from.


def _value_text(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return '-'.join(map(str, value))
  return str(value).replace(',', '+')


def run_name(overrides: dict[str, Any]) -> str:
  """`key=value,...` with each key's last part; safe as a folder name."""
  name = ','.join(f'{key.rsplit(".", 1)[-1]}={_value_text(value)}'
                  for key, value in overrides.items())
  return re.sub(r'[^\w.,=+-]', '_', name) or 'base'


def expand(sweep_fn: Callable[[Callable[..., None]], None]
           ) -> list[tuple[str, dict[str, Any]]]:
  """[(run name, overrides)] in the order `sweep_fn` adds them."""
  runs = []

  def add(name: str = '', **overrides):
    overrides = {key.removeprefix('config.'): value
                 for key, value in overrides.items()}
    runs.append((name or run_name(overrides), overrides))

  sweep_fn(add)
  if not runs:
    raise UserError('The sweep adds no runs; call add(...) in sweep(add).')
  repeated = [name for name, count in
              collections.Counter(name for name, _ in runs).items()
              if count > 1]
  if repeated:
    raise UserError(f'The sweep adds run {repeated[0]!r} more than once; '
                    'give each add(...) different values or a name=.')
  return runs


def resolve(base: ml_collections.ConfigDict,
            overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of `base` with `overrides` set; only existing keys, with values
  of their type (as command-line overrides)."""
  config = base.copy_and_resolve_references()
  for key, value in overrides.items():
    *groups, leaf = key.split('.')
    node = config
    try:
      for group in groups:
        node = node[group]
      if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise KeyError(key)
      node[leaf] = value
    except (KeyError, TypeError) as e:
      raise UserError(f'Cannot set config.{key}={value!r} ({e}); the '
                      'sweep may only change settings that get_config() '
                      'has, with values of their type.') from None
  return config


def with_run_paths(overrides: dict[str, Any], earlier: Sequence[str],
                    workdir: str) -> tuple[dict[str, Any], dict[str, str]]:
  """(`overrides` with each Earlier replaced by its run directory under
  `workdir`, {config path: the Earlier run's name}); `earlier` holds the
  names of the runs added before."""
  named = {key: value.name for key, value in overrides.items()
           if isinstance(value, Earlier)}
  for key, name in named.items():
    if key not in RUN_KEYS:
      raise UserError(f'config.{key}=Earlier({name!r}): only '
                      f'{" and ".join(RUN_KEYS)} name runs.')
    if name not in earlier:
      raise UserError(f'config.{key}=Earlier({name!r}) names no run added '
                      f'before this one; add {name!r} first.')
  return ({**overrides, **{key: os.path.join(workdir, name)
                           for key, name in named.items()}}, named)


def load_module(path: str):
  """The Python file `path` as a module, e.g. a sweep file's siblings."""
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(config_file: str) -> ml_collections.ConfigDict:
  """`get_config()` of a config file, e.g. a sweep file's base in configs/."""
  return load_module(config_file).get_config()


def load_sweep_fn(config_file: str) -> Callable:
  """The `sweep(add)` function of the sweep file `config_file`."""
  sweep_fn = getattr(load_module(config_file), 'sweep', None)
  if not callable(sweep_fn):
    raise UserError(f'{config_file} has no sweep(add) function; a sweep file '
                    'is a config file with one (see experiments/*_sweep.py).')
  return sweep_fn
