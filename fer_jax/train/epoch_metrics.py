"""An epoch's metrics: the train metrics gathered as it goes, and the record
it ends with (a line of metrics.jsonl, TensorBoard scalars, a log line).

The step returns its metrics on the device; they are fetched once per epoch
(or per mid-epoch checkpoint), never per step. (The progress bar alone, on
process 0, reads one step's loss every config.train.log_every_steps steps,
one update late, after an asynchronous copy: see loop._Trainer._train_epoch.)
"""

import logging
import sys
import time
import warnings

import jax
import numpy as np
from jax.experimental import multihost_utils

from fer_jax import inference, metrics, rundir
from fer_jax.errors import UserError
from fer_jax.train import optim, step

# Stands for a class name in `validation_metric_names`.
ANY_CLASS = '<class>'


class PartialEpoch:
  """The train metrics of an epoch so far, as JSON for mid-epoch checkpoints."""
  EMPTY = {'losses': [], 'predictions': [], 'labels': [], 'seconds': 0.0}

  @staticmethod
  def extend(partial: dict, step_metrics: list, start: float) -> dict:
    """`partial` plus the device-side `step_metrics` since `start`."""
    # The epoch's one host sync; predictions and labels are sharded over
    # the processes, so each gathers them all.
    fetched = (jax.device_get(step_metrics) if jax.process_count() == 1
               else multihost_utils.process_allgather(step_metrics, tiled=True))
    return {
        'losses': partial['losses'] + [float(m['loss']) for m in fetched],
        'predictions': partial['predictions'] + [
            int(p) for m in fetched for p in m['predictions']],
        'labels': partial['labels'] + [
            int(l) for m in fetched for l in m['labels']],
        'seconds': partial['seconds'] + time.perf_counter() - start}


def summary_writer(path: str, purge_step: int):
  """tensorboardX's SummaryWriter, imported without torch.

  tensorboardX imports torch, when it is installed, only to annotate its
  methods with torch.Tensor; torch loads its CUDA libraries on import: 600
  MB of resident memory and 2.5 s of CPU per training process on a quiet
  machine, half a minute on a busy one. While tensorboardX is imported,
  `import torch` fails (a None entry in sys.modules) and it falls back to
  numpy; afterwards torch imports as usual. Imported here rather than at
  the top for the same reason: commands that fail on their config do not
  wait for it.
  """
  hide_torch = 'torch' not in sys.modules
  if hide_torch:
    sys.modules['torch'] = None
  try:
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
  finally:
    if hide_torch:
      del sys.modules['torch']
  return SummaryWriter(path, purge_step=purge_step)


def check_losses(partial: dict, epoch: int, steps_per_epoch: int,
                 run: rundir.RunDir) -> None:
  """Stops on a NaN or Inf loss in the epoch so far, before it is saved."""
  bad = np.flatnonzero(~np.isfinite(partial['losses']))
  if not bad.size:
    return
  run.wait_until_finished()
  good = run.latest_step()
  kept = (f'The last good checkpoint (step {good}) is kept in {run.path}.'
          if good is not None else 'No checkpoint was saved before it.')
  raise UserError(
      f'The training loss became {partial["losses"][bad[0]]} at step '
      f'{(epoch - 1) * steps_per_epoch + bad[0] + 1} (epoch {epoch}); lower '
      f'config.train.learning_rate. {kept}')


def _validation_scalars(val: dict) -> dict[str, float]:
  return metrics.flat_scalars(val, 'val')


def validation_metric_names(class_names: tuple[str, ...]) -> list[str]:
  """The validation metrics that `epoch_record` logs, sorted: 'val/loss',
  'val/macro_f1', ..., 'val/f1/<class name>', ... Those of an evaluation
  of one image, so that they come from the code that logs them."""
  constant_logits = lambda variables, images: np.zeros(
      (len(images), len(class_names)), np.float32)
  with warnings.catch_warnings():
    # Of a single class (ANY_CLASS alone): its 1x1 confusion matrix.
    warnings.simplefilter('ignore', UserWarning)
    val = inference.evaluate(constant_logits, None,
                             np.zeros((1, 48, 48), np.uint8),
                             np.zeros(1, np.int32), class_names, batch_size=1)
  return sorted(_validation_scalars(val))


def epoch_record(epoch: int, phase: int, state: step.TrainState,
                 partial: dict, val: dict, class_names: tuple,
                 images_per_epoch: int) -> dict:
  """The line of metrics.jsonl for a finished epoch."""
  train_metrics = metrics.classification_metrics(
      np.asarray(partial['labels']), np.asarray(partial['predictions']),
      class_names)
  return {
      'epoch': epoch, 'step': int(state.step), 'phase': phase,
      'train/loss': float(np.mean(partial['losses'])),
      'train/accuracy': train_metrics['accuracy'],
      'train/macro_f1': train_metrics['macro_f1'],
      'learning_rate': float(optim.current_learning_rate(state.opt_state)),
      'train_seconds': partial['seconds'],
      'train_images_per_second': images_per_epoch / partial['seconds'],
      **_validation_scalars(val)}


def log_epoch(record: dict, total_epochs: int, phase_suffix: str) -> None:
  logging.info('epoch %d/%d%s: train loss %.4f acc %.4f | val loss %.4f '
               'acc %.4f macro-F1 %.4f | lr %.2g | %.0f s, %.0f img/s',
               record['epoch'], total_epochs, phase_suffix,
               record['train/loss'], record['train/accuracy'],
               record['val/loss'], record['val/accuracy'],
               record['val/macro_f1'], record['learning_rate'],
               record['train_seconds'], record['train_images_per_second'])
