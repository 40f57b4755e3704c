"""Re-evaluates a run's best checkpoint on val and test: report.json + figure.

The numbers come from the restored checkpoint, never from logged metrics, so
a report can be regenerated from the run directory alone. report.json also
holds the model's cost: parameters, XLA's FLOPs for one image, and the
median logged training time per epoch (the one number a checkpoint cannot
give back).
"""

import dataclasses
import logging
import os
import statistics

import numpy as np

from fer_jax import inference, metrics, models, rundir
from fer_jax.data import dataset, sources
from fer_jax.errors import UserError
from fer_jax.evaluate import plots

CONFUSION_PNG = 'confusion_matrix.png'
SPLITS = ('val', 'test')


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """A run's best checkpoint evaluated: its report and what figures need."""
  run: rundir.RunDir
  report: dict
  trained: inference.TrainedModel
  data: sources.FerData
  logits: dict[str, np.ndarray]  # Single-crop logits of each of SPLITS.
  # With ten_crop: the log of the ten crops' mean probabilities, per split.
  ten_crop_logits: dict[str, np.ndarray] | None = None


def scores(logits: np.ndarray, labels: np.ndarray,
           class_names: tuple[str, ...]) -> dict:
  """inference.evaluate's metrics, from logits already computed."""
  result = metrics.classification_metrics(labels, logits.argmax(-1),
                                          class_names)
  result['loss'] = inference.softmax_cross_entropy(logits, labels)
  return result


def evaluate_run(run: rundir.RunDir, data: sources.FerData | None = None, *,
                 ten_crop: bool = False, report_dir: str | None = None,
                 trained: inference.TrainedModel | None = None
                 ) -> Evaluation:
  """Evaluates the best checkpoint of `run`; writes report.json and the test
  confusion matrix into `report_dir` (default: the run directory).

  `data` and `trained` (its best checkpoint, restored) save reading them
  again when the caller already holds them.
  `ten_crop` adds `report['ten_crop'][split]`: the same metrics with ten-crop
  test-time augmentation (inference.ten_crops). Without it, the ten-crop
  section of the report.json replaced is kept if it is of the same best
  checkpoint (its `checkpoint_step`), so that a quick report does not drop
  what fer_jax.release ships.
  """
  config = run.load_config()
  if trained is None:
    trained = inference.load_trained(run, 'best')
  if data is None:
    data = dataset.load(config.data)
  changed = [name for name in dataset.changed_splits(
      run.read_json(rundir.DATASET), dataset.identity(data)) if name in SPLITS]
  if changed:
    raise UserError(
        f'The data given has other {"/".join(changed)} images than '
        f'{run.path} was selected and evaluated on (its {rundir.DATASET}): '
        'give the data it trained on with --data_path (and --ferplus_path '
        f'for FER+); its config.json reads data.path={config.data.path!r}, '
        f'ferplus_path={config.data.ferplus_path!r}.')

  def logits_of(logits_fn, batch_size):
    return {name: inference.batched_logits(logits_fn, trained.variables,
                                           data.splits[name].images,
                                           batch_size) for name in SPLITS}

  def scores_of(logits):
    return {name: scores(logits[name], data.splits[name].labels,
                         trained.class_names) for name in SPLITS}

  logits_fn = inference.make_logits_fn(
      trained.model, trained.input_spec,
      compiler_options=trained.compiler_options)
  logits = logits_of(logits_fn, config.train.eval_batch_size)
  records = run.read_metrics()
  report = {
      'model': config.model.name,
      # The best checkpoint keeps one step, the one just restored.
      'checkpoint_step': run.latest_step('best'),
      'num_params': models.count_params(trained.variables['params']),
      'mflops': inference.forward_mflops(logits_fn, trained.variables,
                               data.splits['test'].images[:1]),
      'seconds_per_epoch': statistics.median(
          r['train_seconds'] for r in records),
      'epochs': len(records),
      'best_epoch': trained.loop['best_epoch'],
      'selection_metric': config.train.selection_metric,
      'class_names': list(trained.class_names),
      **scores_of(logits),
  }
  ten_crop_logits = None
  if ten_crop:
    ten_crop_fn = inference.make_logits_fn(
        trained.model, trained.input_spec, ten_crop=True,
        compiler_options=trained.compiler_options)
    # Ten crops per image: a tenth of the images keeps the batch's memory.
    ten_crop_logits = logits_of(ten_crop_fn,
                                max(1, config.train.eval_batch_size // 10))
    report['ten_crop'] = scores_of(ten_crop_logits)
  target = run if report_dir is None else rundir.RunDir(report_dir)
  if not ten_crop:
    _keep_ten_crop(target, report)
  target.write_json(rundir.REPORT, report)
  plots.confusion_matrix(
      report['test']['confusion_matrix'], trained.class_names,
      target.file(CONFUSION_PNG),
      title=f'{config.model.name}, PrivateTest (best epoch '
            f'{report["best_epoch"]} on PublicTest)')
  logged = {f'{name}, single crop': report[name] for name in SPLITS}
  logged |= {f'{name}, ten crops': result
             for name, result in report.get('ten_crop', {}).items()}
  for what, result in logged.items():
    logging.info('%s: accuracy %.4f, macro-F1 %.4f, weighted-F1 %.4f', what,
                 result['accuracy'], result['macro_f1'], result['weighted_f1'])
  return Evaluation(run, report, trained, data, logits, ten_crop_logits)


def _keep_ten_crop(target: rundir.RunDir, report: dict) -> None:
  """Copies into `report` the ten-crop section of the report.json in
  `target` if that one is of the same checkpoint; else warns that it goes."""
  if not os.path.isfile(target.file(rundir.REPORT)):
    return
  previous = target.read_json(rundir.REPORT)
  if 'ten_crop' not in previous:
    return
  if previous.get('checkpoint_step') == report['checkpoint_step']:
    report['ten_crop'] = previous['ten_crop']
    logging.info('Kept the ten-crop figures of %s (checkpoint step %d); '
                 '--ten_crop recomputes them.', target.file(rundir.REPORT),
                 report['checkpoint_step'])
    return
  logging.warning(
      'Dropping the ten-crop figures of %s: they may not be of the best '
      'checkpoint now (step %d; theirs: %s). Run python -m fer_jax.report '
      '--ten_crop to report them again (fer_jax.release ships them).',
      target.file(rundir.REPORT), report['checkpoint_step'],
      previous.get('checkpoint_step', 'not recorded'))


def write_report(run: rundir.RunDir, data: sources.FerData | None = None, *,
                 ten_crop: bool = False) -> dict:
  """Evaluates the best checkpoint of `run`; writes and returns the report."""
  return evaluate_run(run, data, ten_crop=ten_crop).report
