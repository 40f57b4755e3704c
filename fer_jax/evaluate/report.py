"""Re-evaluates a run's best checkpoint on val and test: report.json + figure.

The numbers come from the restored checkpoint, never from logged metrics, so
a report can be regenerated from the run directory alone.
"""

import logging

from fer_jax import inference, models, rundir
from fer_jax.data import dataset, sources
from fer_jax.evaluate import plots

CONFUSION_PNG = 'confusion_matrix.png'


def write_report(run: rundir.RunDir,
                 data: sources.FerData | None = None) -> dict:
  """Evaluates the best checkpoint of `run`; writes and returns the report.

  `data` saves re-reading the dataset when the caller already holds it.
  """
  config = run.load_config()
  trained = inference.load_trained(run, 'best')
  if data is None:
    data = dataset.load(config.data, config.seed)
  logits_fn = inference.make_logits_fn(trained.model, trained.input_spec)
  report = {
      'model': config.model.name,
      'num_params': models.count_params(trained.variables['params']),
      'best_epoch': trained.loop['best_epoch'],
      'selection_metric': config.train.selection_metric,
      'class_names': list(trained.class_names),
  }
  for name in ('val', 'test'):
    split = data.splits[name]
    report[name] = inference.evaluate(logits_fn, trained.variables,
                                      split.images, split.labels,
                                      trained.class_names,
                                      config.train.eval_batch_size)
  run.write_json(rundir.REPORT, report)
  plots.confusion_matrix(
      report['test']['confusion_matrix'], trained.class_names,
      run.file(CONFUSION_PNG),
      title=f'{config.model.name}, PrivateTest (best epoch '
            f'{report["best_epoch"]} on PublicTest)')
  for name in ('val', 'test'):
    logging.info('%s: accuracy %.4f, macro-F1 %.4f, weighted-F1 %.4f', name,
                 report[name]['accuracy'], report[name]['macro_f1'],
                 report[name]['weighted_f1'])
  return report
