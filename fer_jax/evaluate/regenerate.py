"""Regenerates every table and figure of some runs from their checkpoints.

For each run directory (or each run of a sweep directory): re-evaluate the
best checkpoint (its report.json is rewritten), draw its figures into
`<out>/<run name>/`; then the tables of all runs go to `<out>/summary.md`
and `.csv` (tables.write). A released run (fer_jax.release, such as the
model that ships in fer_jax/pretrained) or one that is not writable keeps
its report.json: the new one goes to `<out>/<run name>/`, and its figures
are compared with the kept one's. Optionally, the runs' ensemble
(ensemble.py) is evaluated too.
"""

import glob
import json
import logging
import os
from collections.abc import Sequence

import ml_collections

from fer_jax import inference, rundir
from fer_jax.data import dataset, sources
from fer_jax.errors import UserError
from fer_jax.evaluate import ensemble, figures, report, tables


def run_dirs(paths: Sequence[str]) -> list[str]:
  """The run directories of `paths`; a sweep directory stands for the run
  directories inside it. Each one once, in the order given."""
  found = []
  for path in paths:
    if rundir.is_run_directory(path):
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
               data_path: str, ferplus_path: str) -> sources.FerData:
  for field, given, flag in (('path', data_path, '--data_path'),
                             ('ferplus_path', ferplus_path, '--ferplus_path')):
    if given:
      config.data[field] = given
    elif config.data[field] and not os.path.exists(config.data[field]):
      raise UserError(f'{run.path} was trained on config.data.{field}='
                      f'{config.data[field]!r}, which is not found from '
                      f'{os.getcwd()}; give its location with {flag}.')
  return dataset.load(config.data)


def _compare(name: str, kept: dict, fresh: dict) -> None:
  """Logs whether a re-evaluation reproduces a kept report's figures."""
  for split in ('val', 'test'):
    for metric in ('accuracy', 'macro_f1'):
      old, new = kept[split][metric], fresh[split][metric]
      same = abs(old - new) < 1e-9
      (logging.info if same else logging.warning)(
          '%s %s %s: %.4f; its report.json says %.4f%s.', name,
          split, metric, new, old, '' if same else ' (not reproduced)')


def regenerate(paths: Sequence[str], out_dir: str, *, data_path: str = '',
               ferplus_path: str = '', ten_crop: bool = False,
               tsne_points: int = 1000, with_figures: bool = True,
               with_ensemble: bool = False) -> str:
  """Reports, figures and tables of the runs in `paths` (see the module's
  docstring); returns the path of the Markdown tables. Without
  `with_figures`, the reports and tables only; `tsne_points` of 0 leaves out
  the t-SNE plots. `with_ensemble` also evaluates the runs' ensemble into
  <out>/ensemble.md and .json."""
  if tsne_points < 2 and tsne_points != 0:
    # t-SNE needs two points: its perplexity must lie between 0 and N - 1.
    raise UserError(f'--tsne_points={tsne_points} must be at least 2, or 0 '
                    'for no t-SNE plots.')
  workdirs = run_dirs(paths)
  if with_ensemble and len(workdirs) < 2:
    raise UserError('An ensemble needs at least two runs; give more '
                    '--workdirs (or a sweep directory).')
  loaded = {}  # Runs on the same data share one read of it.
  entries = []
  members = []
  for name, workdir in zip(run_names(workdirs), workdirs):
    logging.info('Reporting %s (%s).', name, workdir)
    run = rundir.RunDir(workdir, create=False)
    config = run.load_config()
    key = json.dumps([config.data.to_dict(), config.seed, data_path,
                      ferplus_path])
    # Before the data (6 s for FER2013): a missing or damaged checkpoint
    # ends the command at once.
    trained = inference.load_trained(run, 'best')
    if key not in loaded:
      loaded[key] = _load_data(run, config, data_path, ferplus_path)
    keep_report = run.is_released or not os.access(run.path, os.W_OK)
    evaluation = report.evaluate_run(
        run, loaded[key], ten_crop=ten_crop,
        report_dir=os.path.join(out_dir, name) if keep_report else None,
        trained=trained)
    if keep_report and os.path.isfile(run.file(rundir.REPORT)):
      _compare(name, run.read_json(rundir.REPORT), evaluation.report)
    if with_figures:
      figures.write_figures(evaluation, os.path.join(out_dir, name), name,
                            tsne_points=tsne_points)
    entries.append(tables.Entry(name, run.read_config(),
                                evaluation.report))
    if with_ensemble:
      members.append(ensemble.Member.of(name, evaluation))
    run.close()
  if with_ensemble:
    logging.info('Ensemble tables: %s',
                 ensemble.write(ensemble.evaluate(members), out_dir))
  return tables.write(entries, out_dir)
