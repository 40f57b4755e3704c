"""Trains and reports the runs of a sweep file (sweeps.py), then its tables.

Every run's config is built and checked before the first one starts. Runs
go to `<workdir>/<run name>/`; one whose report.json was written for the
same config is finished and skipped, any other resumes from its checkpoints
(fer_jax.train.loop). A run that starts from an Earlier one trains after
it. The sweep then writes the tables of its finished runs
(fer_jax.evaluate.tables) to `<workdir>/summary.md` and `.csv`.

It sits above train/ and evaluate/ (as main.py does), as it uses both.
"""

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

import ml_collections

from fer_jax import rundir, sweeps
from fer_jax.errors import UserError
from fer_jax.evaluate import report, tables
from fer_jax.train import config_check, loop

LOG = 'train.log'  # A subprocess run's output, in its run directory.
MEMORY_FRACTION = 'XLA_PYTHON_CLIENT_MEM_FRACTION'


def _flag_text(value: Any) -> str:
  # As config flags parse it back: strings verbatim, Python literals else.
  return value if isinstance(value, str) else repr(value)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """The runs of a sweep file, with the overrides given for all of them."""
  config_file: str
  global_overrides: dict[str, Any]  # Config path -> value, e.g. data.path.
  runs: list[sweeps.Run]

  @classmethod
  def load(cls, config_file: str, base: ml_collections.ConfigDict,
           global_overrides: dict[str, Any], workdir: str) -> 'Sweep':
    """Expands and checks every run of `config_file`, to be trained under
    `workdir`.

    `base` is its get_config() with `global_overrides` already applied (as
    ml_collections' config flag gives it).
    """
    runs = []
    for name, overrides in sweeps.expand(sweeps.load_sweep_fn(config_file)):
      clash = sorted(set(overrides) & set(global_overrides))
      if clash:
        raise UserError(f'--config.{clash[0]} is given on the command line '
                        f'and varied by the sweep (run {name}); drop it.')
      try:
        overrides, named = sweeps.with_run_paths(
            overrides, [run.name for run in runs], workdir)
        config = sweeps.resolve(base, overrides)
        # Earlier runs may not be trained yet: their directories are
        # checked when this run starts (loop.train checks again).
        config_check.check(sweeps.resolve(config, dict.fromkeys(named, '')))
      except UserError as e:
        raise UserError(f'Sweep run {name}: {e}') from None
      runs.append(sweeps.Run(name, overrides, config,
                             tuple(dict.fromkeys(named.values()))))
    return cls(config_file, dict(global_overrides), runs)

  def selected(self, names: Sequence[str]) -> list[sweeps.Run]:
    """The runs named in `names`, in the sweep's order (all if empty)."""
    known = [run.name for run in self.runs]
    unknown = [name for name in names if name not in known]
    if unknown:
      raise UserError(f'--run={unknown[0]}: no such run in '
                      f'{self.config_file}; its runs: {", ".join(known)}.')
    return [run for run in self.runs if not names or run.name in names]

  def main_command(self, run: sweeps.Run, workdir: str) -> list[str]:
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


def _failed_earlier(run: sweeps.Run, failures: dict[str, str]) -> str | None:
  """Why `run` is not started, where an Earlier run of it failed."""
  failed = [name for name in run.after if name in failures]
  if failed:
    return f'not started: it starts from {failed[0]}, which failed'
  return None


def _train_in_process(runs: list[sweeps.Run], workdir: str) -> dict[str, str]:
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


def _train_in_subprocesses(sweep: Sweep, runs: list[sweeps.Run],
                           workdir: str, runs_per_device: int
                           ) -> dict[str, str]:
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

  def start(run: sweeps.Run) -> str | None:
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

  def train(run: sweeps.Run) -> str | None:
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
