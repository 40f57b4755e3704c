"""Regenerates every table and figure of some runs from their checkpoints.

For each run directory (or each run of a sweep directory): re-evaluate the
best checkpoint (its report.json is rewritten), draw its figures into
`<out>/<run name>/`; then the tables of all runs go to `<out>/summary.md`
and `.csv` (tables.write).
"""

import glob
import json
import logging
import os
from collections.abc import Sequence

import ml_collections

from fer_jax import rundir
from fer_jax.data import dataset, sources
from fer_jax.errors import UserError
from fer_jax.evaluate import figures, report, tables


def run_dirs(paths: Sequence[str]) -> list[str]:
  """The run directories of `paths`; a sweep directory stands for the run
  directories inside it. Each one once, in the order given."""
  found = []
  for path in paths:
    if os.path.isfile(os.path.join(path, rundir.CONFIG)):
      found.append(path)
      continue
    inside = sorted(glob.glob(os.path.join(glob.escape(path), '*',
                                           rundir.CONFIG)))
    if not inside:
      raise UserError(f'{path} is not a run directory (no {rundir.CONFIG}) '
                      'nor a sweep directory of them; give the --workdir of '
                      'a training run or of a sweep.')
    found += [os.path.dirname(p) for p in inside]
  return list(dict.fromkeys(os.path.abspath(p) for p in found))


def run_names(paths: Sequence[str]) -> list[str]:
  """Unique, short folder names: each path relative to the paths' common
  folder, '/' as '_' (a single run: its folder's name)."""
  if len(paths) == 1:
    return [os.path.basename(paths[0])]
  common = os.path.commonpath(paths)
  return [os.path.relpath(p, common).replace(os.sep, '_') for p in paths]


def _load_data(run: rundir.RunDir, config: ml_collections.ConfigDict,
               data_path: str) -> sources.FerData:
  if data_path:
    config.data.path = data_path
  elif not os.path.exists(config.data.path):
    raise UserError(f'{run.path} was trained on config.data.path='
                    f'{config.data.path!r}, which is not found from '
                    f'{os.getcwd()}; give its location with --data_path.')
  return dataset.load(config.data, config.seed)


def regenerate(paths: Sequence[str], out_dir: str, *, data_path: str = '',
               ten_crop: bool = False, tsne_points: int = 1000) -> str:
  """Reports, figures and tables of the runs in `paths` (see the module's
  docstring); returns the path of the Markdown tables."""
  workdirs = run_dirs(paths)
  loaded = {}  # Runs on the same data share one read of it.
  entries = []
  for name, workdir in zip(run_names(workdirs), workdirs):
    logging.info('Reporting %s (%s).', name, workdir)
    run = rundir.RunDir(workdir, create=False)
    config = run.load_config()
    key = json.dumps([config.data.to_dict(), config.seed, data_path])
    if key not in loaded:
      loaded[key] = _load_data(run, config, data_path)
    evaluation = report.evaluate_run(run, loaded[key], ten_crop=ten_crop)
    figures.write_figures(evaluation, os.path.join(out_dir, name), name,
                          tsne_points=tsne_points)
    entries.append(tables.Entry(name, run.read_json(rundir.CONFIG),
                                evaluation.report))
    run.close()
  return tables.write(entries, out_dir)
