"""Re-evaluates a run's best checkpoint on val and test: report.json + figure.

The numbers come from the restored checkpoint, never from logged metrics, so
a report can be regenerated from the run directory alone.
"""

import functools
import logging

import jax
import jax.numpy as jnp

from fer_jax import inference, models, rundir
from fer_jax.data import dataset, sources
from fer_jax.data.preprocess import InputSpec
from fer_jax.evaluate import plots

CONFUSION_PNG = 'confusion_matrix.png'


def restore_best(run: rundir.RunDir):
  """(model, variables, input spec, class names, loop state) of the best."""
  config = run.load_config()
  info = run.read_json(rundir.DATASET)
  spec = InputSpec.from_json(info['input_spec'])
  class_names = tuple(info['class_names'])
  settings = config.model.to_dict()
  model = models.create(settings.pop('name'), len(class_names), **settings)
  dummy = jnp.zeros((1, spec.image_size, spec.image_size, spec.channels))
  template = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), dummy)
  restored = run.restore('best', model=template)
  return model, restored['model'], spec, class_names, restored['loop']


def write_report(run: rundir.RunDir,
                 data: sources.FerData | None = None) -> dict:
  """Evaluates the best checkpoint of `run`; writes and returns the report.

  `data` saves re-reading the dataset when the caller already holds it.
  """
  config = run.load_config()
  model, variables, spec, class_names, loop = restore_best(run)
  if data is None:
    data = dataset.load(config.data, config.seed)
  logits_fn = inference.make_logits_fn(model, spec)
  report = {
      'model': config.model.name,
      'num_params': sum(x.size for x in jax.tree.leaves(variables['params'])),
      'best_epoch': loop['best_epoch'],
      'selection_metric': config.train.selection_metric,
      'class_names': list(class_names),
  }
  for name in ('val', 'test'):
    split = data.splits[name]
    report[name] = inference.evaluate(logits_fn, variables, split.images,
                                      split.labels, class_names,
                                      config.train.eval_batch_size)
  run.write_json(rundir.REPORT, report)
  plots.confusion_matrix(
      report['test']['confusion_matrix'], class_names, run.file(CONFUSION_PNG),
      title=f'{config.model.name}, PrivateTest (best epoch '
            f'{loop["best_epoch"]} on PublicTest)')
  for name in ('val', 'test'):
    logging.info('%s: accuracy %.4f, macro-F1 %.4f, weighted-F1 %.4f', name,
                 report[name]['accuracy'], report[name]['macro_f1'],
                 report[name]['weighted_f1'])
  return report
