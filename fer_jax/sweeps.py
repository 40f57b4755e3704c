"""Sweeps: the runs a sweep file declares, trained and reported one by one.

A sweep file is a config file, `get_config()`, with `sweep(add)` beside it
(as in big_vision): each `add(**overrides)` declares one run, the overrides
keyed by config path ('train.learning_rate', or with big_vision's 'config.'
prefix), and `add(name=..., ...)` names it; a product over
hyper-parameters is nested loops or itertools.product. A run is named after
its overrides: `optimizer=sgd,learning_rate=0.01,dropout=0.15`.

Every run's config is built and checked before the first one starts. Runs
go to `<workdir>/<run name>/`; one whose report.json was written for the
same config is finished and skipped, any other resumes from its checkpoints
(fer_jax.train.loop). The sweep then writes the tables of its finished runs
(fer_jax.evaluate.tables) to `<workdir>/summary.md` and `.csv`.

A run may start from (or distil from) a run added before it in the same
sweep: `add(name='restart', **{'model.init_from': Earlier('first')})`. It
then trains after that one, and not at all if that one fails; a recipe of
several stages is one sweep, and one command.

It sits above train/ and evaluate/ (as main.py does), as it uses both.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import importlib.util
import logging
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections

from fer_jax import rundir
from fer_jax.errors import UserError
from fer_jax.evaluate import report, tables
from fer_jax.train import config_check, loop

LOG = 'train.log'  # A subprocess run's output, in its run directory.
MEMORY_FRACTION = 'XLA_PYTHON_CLIENT_MEM_FRACTION'


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


def _with_run_paths(overrides: dict[str, Any], earlier: Sequence[str],
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


def _flag_text(value: Any) -> str:
  # As config flags parse it back: strings verbatim, Python literals else.
  return value if isinstance(value, str) else repr(value)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """The runs of a sweep file, with the overrides given for all of them."""
  config_file: str
  global_overrides: dict[str, Any]  # Config path -> value, e.g. data.path.
  runs: list[Run]

  @classmethod
  def load(cls, config_file: str, base: ml_collections.ConfigDict,
           global_overrides: dict[str, Any], workdir: str) -> 'Sweep':
    """Expands and checks every run of `config_file`, to be trained under
    `workdir`.

    `base` is its get_config() with `global_overrides` already applied (as
    ml_collections' config flag gives it).
    """
    runs = []
    for name, overrides in expand(load_sweep_fn(config_file)):
      clash = sorted(set(overrides) & set(global_overrides))
      if clash:
        raise UserError(f'--config.{clash[0]} is given on the command line '
                        f'and varied by the sweep (run {name}); drop it.')
      try:
        overrides, named = _with_run_paths(
            overrides, [run.name for run in runs], workdir)
        config = resolve(base, overrides)
        # Earlier runs may not be trained yet: their directories are
        # checked when this run starts (loop.train checks again).
        config_check.check(resolve(config, dict.fromkeys(named, '')))
      except UserError as e:
        raise UserError(f'Sweep run {name}: {e}') from None
      runs.append(Run(name, overrides, config,
                      tuple(dict.fromkeys(named.values()))))
    return cls(config_file, dict(global_overrides), runs)

  def selected(self, names: Sequence[str]) -> list[Run]:
    """The runs named in `names`, in the sweep's order (all if empty)."""
    known = [run.name for run in self.runs]
    unknown = [name for name in names if name not in known]
    if unknown:
      raise UserError(f'--run={unknown[0]}: no such run in '
                      f'{self.config_file}; its runs: {", ".join(known)}.')
    return [run for run in self.runs if not names or run.name in names]

  def main_command(self, run: Run, workdir: str) -> list[str]:
    """The `python -m fer_jax.main` command line that trains `run`."""
    overrides = {**self.global_overrides, **run.overrides}
    return [sys.executable, '-m', 'fer_jax.main',
            f'--config={self.config_file}', f'--workdir={workdir}',
            *(f'--config.{key}={_flag_text(value)}'
              for key, value in overrides.items())]


def is_finished(workdir: str, config: ml_collections.ConfigDict) -> bool:
  """Whether `workdir` has a report of a run with exactly `config`."""
  if not all(os.path.isfile(os.path.join(workdir, name))
             for name in (rundir.CONFIG, rundir.REPORT)):
    return False
  run = rundir.RunDir(workdir, create=False)
  return run.read_config() == rundir.as_json(config)


def _failed_earlier(run: Run, failures: dict[str, str]) -> str | None:
  """Why `run` is not started, where an Earlier run of it failed."""
  failed = [name for name in run.after if name in failures]
  if failed:
    return f'not started: it starts from {failed[0]}, which failed'
  return None


def _train_in_process(runs: list[Run], workdir: str) -> dict[str, str]:
  failures = {}
  for index, run in enumerate(runs, 1):
    logging.info('Sweep run %d/%d: %s', index, len(runs), run.name)
    if blocked := _failed_earlier(run, failures):
      logging.error('Sweep run %s %s.', run.name, blocked)
      failures[run.name] = blocked
      continue
    try:
      trained, data = loop.train(run.config, os.path.join(workdir, run.name))
      report.write_report(trained, data)
      trained.close()
    except UserError as e:
      logging.error('Sweep run %s failed: %s', run.name, e)
      failures[run.name] = str(e)
  return failures


def device_slots() -> list[str]:
  """CUDA_VISIBLE_DEVICES values, one per GPU; [''] (one run at a time,
  nothing set) without GPUs. Asked of a child process, so that this one
  never claims an accelerator its runs need."""
  probe = subprocess.run(
      [sys.executable, '-c', 'import jax; '
       'print(jax.default_backend(), jax.local_device_count())'],
      capture_output=True, text=True, check=True)
  backend, count = probe.stdout.split()
  if backend != 'gpu':
    return ['']
  visible = os.environ.get('CUDA_VISIBLE_DEVICES')
  return visible.split(',') if visible else [str(i) for i in range(int(count))]


def _last_error(log_path: str) -> str:
  with open(log_path) as f:
    lines = [line.strip() for line in f if line.strip()]
  errors = [line for line in lines if line.startswith('error: ')]
  return (errors or lines or ['no output'])[-1]


def _train_in_subprocesses(sweep: Sweep, runs: list[Run], workdir: str,
                           runs_per_device: int) -> dict[str, str]:
  slots = queue.Queue()
  devices = device_slots()
  # Without GPUs each run takes every CPU core: one at a time.
  sharing = runs_per_device if devices != [''] else 1
  for slot in devices * sharing:
    slots.put(slot)
  # A run waiting for its Earlier runs holds a thread, not a device.
  workers = slots.qsize() + sum(1 for run in runs if run.after)
  # Runs sharing a GPU split its memory instead of each preallocating 75%;
  # a fraction set by the caller (several sweeps at once) is kept.
  memory = ({MEMORY_FRACTION: f'{0.9 / sharing:.3f}'}
            if sharing > 1 and MEMORY_FRACTION not in os.environ else {})
  stopping = threading.Event()
  done = {run.name: threading.Event() for run in runs}
  failures = {}

  def start(run: Run) -> str | None:
    # An Earlier run comes first in `runs`, so a thread already has it.
    for name in run.after:
      if name in done:
        done[name].wait()
    if stopping.is_set():
      return 'not started: the sweep was interrupted'
    if blocked := _failed_earlier(run, failures):
      return blocked
    slot = slots.get()
    try:
      run_dir = os.path.join(workdir, run.name)
      os.makedirs(run_dir, exist_ok=True)
      command = sweep.main_command(run, run_dir)
      env = dict(os.environ, **memory,
                 **({'CUDA_VISIBLE_DEVICES': slot} if slot else {}))
      log_path = os.path.join(run_dir, LOG)
      logging.info('Sweep run %s on device %s; log: %s', run.name,
                   slot or 'cpu', log_path)
      with open(log_path, 'a') as log:
        log.write(f'$ {shlex.join(command)}\n')
        log.flush()
        code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                              env=env, check=False).returncode
      return f'exit {code}: {_last_error(log_path)}' if code else None
    finally:
      slots.put(slot)

  def train(run: Run) -> str | None:
    try:
      outcome = start(run)
      if outcome:
        failures[run.name] = outcome
      return outcome
    finally:
      done[run.name].set()

  with _terminate_as_interrupt(), \
      concurrent.futures.ThreadPoolExecutor(workers) as pool:
    try:
      outcomes = list(pool.map(train, runs))
    except KeyboardInterrupt:
      # The runs got the signal too and checkpoint; start no more, and
      # leave the pool's exit to wait for the running ones.
      stopping.set()
      raise
  return {run.name: outcome for run, outcome in zip(runs, outcomes)
          if outcome}


@contextlib.contextmanager
def _terminate_as_interrupt():
  """SIGTERM raises KeyboardInterrupt here, as SIGINT does. `timeout` and
  job schedulers stop a sweep with SIGTERM, which by default ends this
  process at once; its runs, which checkpoint on it, would still be
  writing while whoever stopped the sweep reads their directories."""
  previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)


def run_sweep(sweep: Sweep, workdir: str, *, names: Sequence[str] = (),
              parallel: bool = False, runs_per_device: int = 1) -> str:
  """Trains and reports the unfinished runs among those named in `names`
  (all if empty), one after another in this process or (`parallel`) as
  `python -m fer_jax.main` processes, `runs_per_device` at once on each
  GPU; writes the tables of every finished run of the sweep, named or
  not; returns the path of summary.md.

  A run that fails with a UserError does not stop the others; a UserError
  then names them all. In this process any other error stops the sweep;
  as a subprocess, any failure is the run's alone.
  """
  trained_before = {run.name for run in sweep.runs if is_finished(
      os.path.join(workdir, run.name), run.config)}
  pending = []
  for run in sweep.selected(names):
    if run.name in trained_before:
      logging.info('Sweep run %s is finished; skipped.', run.name)
    else:
      pending.append(run)
  available = trained_before | {run.name for run in pending}
  for run in pending:
    untrained = [name for name in run.after if name not in available]
    if untrained:
      raise UserError(f'Sweep run {run.name} starts from run '
                      f'{untrained[0]}, which is not trained: add '
                      f'--run={untrained[0]} (or train the whole sweep).')
  if parallel and pending:
    failures = _train_in_subprocesses(sweep, pending, workdir,
                                      runs_per_device)
  else:
    failures = _train_in_process(pending, workdir)
  finished = [tables.Entry.from_run(
      run.name, rundir.RunDir(os.path.join(workdir, run.name), create=False))
              for run in sweep.runs if run.name not in failures
              and is_finished(os.path.join(workdir, run.name), run.config)]
  summary = tables.write(finished, workdir) if finished else ''
  if failures:
    not_started = [run.name for run in pending if run.name in failures
                   and _failed_earlier(run, failures)]
    failed = [name for name in failures if name not in not_started]
    waiting = (f', and {len(not_started)} not started as '
               f'{"it starts" if len(not_started) == 1 else "they start"} '
               f'from a failed run ({", ".join(not_started)})'
               if not_started else '')
    raise UserError(
        f'{len(failed)} of the {len(pending)} sweep runs trained failed '
        f'({", ".join(failed)}){waiting}; {failed[0]}: {failures[failed[0]]} '
        'Fix the cause and rerun the same command: finished runs are '
        'skipped, the others resume.')
  return summary
