"""One run directory: everything needed to resume a run or regenerate results.

  config.json        the resolved config the run was started, or last
                     resumed, with
  config_history.jsonl
                     only in a run resumed under another config: each
                     config it trained under before, with the step it
                     reached (one JSON line each, oldest first)
  dataset.json       class names, model input spec, split sizes and sha256
                     (`sources.Split.sha256`), skipped records
  train_faces.npy    a 64-bit digest of each training face's pixels
                     (`dataset.face_digests`), with those its init_from
                     and teachers passed on, so that a run learning from
                     this one can check it never trained on its val or test
                     faces (fer_jax.train.held_out)
  metrics.jsonl      one JSON line per epoch (train and validation metrics)
  tensorboard/       the same metrics as TensorBoard event files
  checkpoints/latest orbax: model, optimizer, loop state and data iterator
                     (and the EMA of the weights, with config.train.ema_decay)
  checkpoints/best   orbax: model and loop state of the best epoch so far
  report.json        val and test metrics of the best checkpoint
  confusion_matrix.png
  init_from.json     only with config.model.init_from: the weights it
                     started from, with their sha256 (warm_start.record)
  distill_from.json  only with config.train.distill_from: the teachers'
                     checkpoints, with their sha256 (distill.record)
  release.json       only in a released copy (python -m fer_jax.release):
                     provenance and the checkpoint's sha256
  checkpoint_left_out.json
                     only in a run sent back from the device without its
                     best checkpoint (too large to return): that
                     checkpoint's step and sha256

Checkpoints are numbered by train step and hold items `model` ({params,
batch_stats}), `optimizer` ({step, opt_state}), `loop` (JSON: epoch,
early-stopping and plateau counters, a partial epoch's metrics) and `data`
(the Grain iterator position), so a predictor can restore `model` alone.
With config.train.ema_decay, `model` of a best checkpoint holds the EMA
weights (what was validated), and a latest checkpoint holds the trained
weights in `model` and their EMA in an item `ema` ({params, batch_stats}).
"""

import hashlib
import json
import logging
import os
from typing import Any

from etils import epath
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from fer_jax.errors import UserError

CONFIG = 'config.json'
DATASET = 'dataset.json'
METRICS = 'metrics.jsonl'
CONFIG_HISTORY = 'config_history.jsonl'
REPORT = 'report.json'
TENSORBOARD = 'tensorboard'
RELEASE = 'release.json'
INIT_FROM = 'init_from.json'
DISTILL_FROM = 'distill_from.json'
TRAIN_FACES = 'train_faces.npy'
CHECKPOINT_LEFT_OUT = 'checkpoint_left_out.json'


def is_run_directory(path: str) -> bool:
  """Whether `path` is a run directory (it has a config.json)."""
  return os.path.isfile(os.path.join(path, CONFIG))


def as_json(config: ml_collections.ConfigDict) -> dict:
  """The config as it reads back from config.json (tuples become lists)."""
  return json.loads(json.dumps(config.to_dict()))


def _as_its_run_trained(config: dict) -> dict:
  """A config.json written before a setting existed, with the value that
  gives what its run did: data.split_seed (2026-12-04) was the run's seed."""
  if 'split_seed' not in config['data']:
    config = {**config, 'data': {**config['data'],
                                 'split_seed': config['seed']}}
  return config


def _without_empty_dicts(tree: Any) -> Any:
  """`tree` without its empty dicts: orbax writes nothing for one (the
  batch_stats of a model without BatchNorm, such as vgg16) and then rejects
  a restore template that has it."""
  if not isinstance(tree, dict):
    return tree
  pruned = {key: _without_empty_dicts(value) for key, value in tree.items()}
  return {key: value for key, value in pruned.items()
          if not (isinstance(value, dict) and not value)}


def _with_empty_dicts(template: Any, restored: Any) -> Any:
  """`restored` with the empty dicts of `template` put back."""
  if not isinstance(template, dict):
    return restored
  return {key: _with_empty_dicts(value, restored[key]) if key in restored
          else value for key, value in template.items()}


class RunDir:
  """Files of one run; creates the directory, checks that it is writable."""

  def __init__(self, path: str, create: bool = True):
    self.path = os.path.abspath(path)
    if create:
      try:
        os.makedirs(self.path, exist_ok=True)
        probe = os.path.join(self.path, '.write_test')
        with open(probe, 'w') as f:
          f.write('')
        os.remove(probe)
      except OSError as e:
        raise UserError(f'Cannot write to workdir {path} ({e.strerror}); '
                        'choose another --workdir.') from None
    elif not os.path.isfile(self.file(CONFIG)):
      raise UserError(f'{path} is not a run directory (no {CONFIG}); give '
                      'the --workdir of a training run.')
    self._managers: dict[str, ocp.CheckpointManager] = {}

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  # --------------------------------------------------------------- JSON files.

  def write_json(self, name: str, value: Any) -> None:
    """Writes atomically, so a kill never leaves half a file."""
    tmp = self.file(name + '.tmp')
    with open(tmp, 'w') as f:
      json.dump(value, f, indent=2)
    os.replace(tmp, self.file(name))

  def write_array(self, name: str, value: np.ndarray) -> None:
    """As `write_json`, for a .npy file."""
    tmp = self.file(name + '.tmp')
    with open(tmp, 'wb') as f:
      np.save(f, value)
    os.replace(tmp, self.file(name))

  def read_json(self, name: str) -> Any:
    with open(self.file(name)) as f:
      return json.load(f)

  def save_config(self, config: ml_collections.ConfigDict) -> None:
    self.write_json(CONFIG, as_json(config))

  def read_config(self) -> dict:
    """config.json, settings added since it was written included at the
    values that give what its run did."""
    return _as_its_run_trained(self.read_json(CONFIG))

  def load_config(self) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(self.read_config())

  # ------------------------------------------------------------------ Metrics.

  def read_metrics(self) -> list[dict]:
    if not os.path.exists(self.file(METRICS)):
      return []
    with open(self.file(METRICS)) as f:
      return [json.loads(line) for line in f if line.strip()]

  def append_metrics(self, record: dict) -> None:
    self.append_json_line(METRICS, record)

  def append_json_line(self, name: str, record: dict) -> None:
    with open(self.file(name), 'a') as f:
      f.write(json.dumps(record) + '\n')

  def truncate_metrics(self, last_epoch: int) -> None:
    """Drops records after `last_epoch`: epochs a resumed run will redo."""
    kept = [r for r in self.read_metrics() if r['epoch'] <= last_epoch]
    tmp = self.file(METRICS + '.tmp')
    with open(tmp, 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in kept)
    os.replace(tmp, self.file(METRICS))

  # -------------------------------------------------------------- Checkpoints.

  def checkpoint_dir(self, kind: str, step: int | None = None) -> str:
    """The folder of the `kind` checkpoints, or of the one of `step`."""
    folder = os.path.join(self.path, 'checkpoints', kind)
    return folder if step is None else os.path.join(folder, str(step))

  def _manager(self, kind: str) -> ocp.CheckpointManager:
    if kind not in self._managers:
      # Two latest checkpoints, so a damaged newest one has a fallback.
      options = ocp.CheckpointManagerOptions(
          max_to_keep=2 if kind == 'latest' else 1, create=True,
          # With several processes, the best and latest managers may save
          # the same step at once; their barriers must not share names.
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix=kind))
      self._managers[kind] = ocp.CheckpointManager(
          self.checkpoint_dir(kind), options=options)
    return self._managers[kind]

  def latest_step(self, kind: str = 'latest') -> int | None:
    return self._manager(kind).latest_step()

  def has_checkpoint(self, kind: str) -> bool:
    """Whether a finished `kind` checkpoint exists, read from the directory:
    creating orbax's manager starts JAX's backends, which config checks
    must not (a sweep checks every run before the first fixes the CPU's
    device count)."""
    return bool(ocp.utils.checkpoint_steps(self.checkpoint_dir(kind)))

  @property
  def is_released(self) -> bool:
    """A released copy (fer_jax.release): its report.json is the reference
    that re-evaluations are compared with, never overwritten."""
    return os.path.isfile(self.file(RELEASE))

  def best_step(self) -> int | None:
    """The best checkpoint's step, also of a run sent back from the device
    without it (checkpoint_left_out.json); None before its first epoch."""
    if not self.has_checkpoint('best') and os.path.isfile(
        self.file(CHECKPOINT_LEFT_OUT)):
      return self.read_json(CHECKPOINT_LEFT_OUT)['step']
    return self.latest_step('best')

  def read_report(self) -> dict:
    """report.json, refused when it is of another checkpoint than the best
    one: a run resumed after its report can find a better epoch, and that
    checkpoint shipped or cited with the older one's figures would mislead.
    Reports written before they recorded checkpoint_step name their
    best_epoch, whose step metrics.jsonl gives."""
    report = self.read_json(REPORT)
    reported = report.get('checkpoint_step') or next(
        (record['step'] for record in self.read_metrics()
         if record['epoch'] == report['best_epoch']), None)
    best = self.best_step()
    if best is None:
      raise UserError(f'{self.path} has no best checkpoint: a run saves one '
                      'after its first epoch.')
    if reported != best:
      raise UserError(
          f'{self.file(REPORT)} is of the checkpoint of step {reported}, but '
          f'the best checkpoint of {self.path} is of step {best}: it trained '
          'on after its report. Run `python -m fer_jax.report --workdirs '
          f'{self.path}` (with --ten_crop where wanted) first.')
    return report

  def best_checkpoint_record(self) -> dict:
    """The best checkpoint's path, step and sha256: what a run that starts
    or learns from this one records (init_from.json, distill_from.json)."""
    return {'path': self.path, 'checkpoint_step': self.latest_step('best'),
            'checkpoint_sha256': self.checkpoint_sha256('best')}

  def checkpoint_sha256(self, kind: str = 'best') -> str:
    """sha256 of the model variables of the newest `kind` checkpoint: each
    array's tree path, dtype and shape, then its bytes, in tree order (dict
    keys sorted).

    Two runs that trained the same weights give the same digest, whatever
    their devices; the checkpoint's files differ between them (orbax names
    its data files at random and timestamps its metadata).
    """
    item = epath.Path(self.checkpoint_dir(kind, self.latest_step(kind)),
                      'model')
    # The item's own handler: a Checkpointer would look for the step's
    # metadata file inside the item folder and warn that it is missing.
    handler = ocp.PyTreeCheckpointHandler()
    as_numpy = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
        handler.metadata(item).tree)
    variables = handler.restore(
        item, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
    handler.close()
    digest = hashlib.sha256()
    for path, array in jax.tree_util.tree_flatten_with_path(variables)[0]:
      digest.update(f'{jax.tree_util.keystr(path)} {array.dtype} '
                    f'{array.shape}\0'.encode())
      digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()

  def has_item(self, kind: str, step: int, item: str) -> bool:
    """Whether checkpoint `kind` of `step` holds `item` (e.g. 'ema')."""
    return os.path.isdir(os.path.join(self.checkpoint_dir(kind, step), item))

  def save(self, kind: str, step: int, *, model: Any, loop: dict,
           optimizer: Any = None, data_state: dict | None = None,
           ema: Any = None) -> None:
    """Saves a checkpoint of `kind` ('latest' or 'best') at train `step`.

    `data_state` is the Grain iterator's `get_state()` after the last batch
    that went into `model`.
    """
    items = {'model': ocp.args.StandardSave(_without_empty_dicts(model)),
             'loop': ocp.args.JsonSave(loop)}
    if optimizer is not None:
      items['optimizer'] = ocp.args.StandardSave(optimizer)
    if data_state is not None:
      items['data'] = ocp.args.JsonSave(data_state)
    if ema is not None:
      items['ema'] = ocp.args.StandardSave(_without_empty_dicts(ema))
    self._manager(kind).save(step, args=ocp.args.Composite(**items),
                             force=True)

  def restore(self, kind: str, *, model: Any, optimizer: Any = None,
              with_data_state: bool = False, ema: Any = None,
              if_none_readable: str | None = None) -> dict:
    """Restores the newest readable checkpoint of `kind`.

    `model`, `optimizer` and `ema` are templates (pytrees of arrays); the
    result holds them, `loop`, `step` and, if asked, `data`. A damaged newest
    checkpoint (a kill while writing, a full disk) falls back to the one
    before it, with a warning. `if_none_readable` tells the user what to do
    when every one is damaged; by default, what a training run can do:
    start afresh.
    """
    items = {'model': ocp.args.StandardRestore(_without_empty_dicts(model)),
             'loop': ocp.args.JsonRestore()}
    if optimizer is not None:
      items['optimizer'] = ocp.args.StandardRestore(optimizer)
    if with_data_state:
      items['data'] = ocp.args.JsonRestore()
    if ema is not None:
      items['ema'] = ocp.args.StandardRestore(_without_empty_dicts(ema))
    manager = self._manager(kind)
    steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
      raise UserError(f'{self.path} has no {kind} checkpoint; train first '
                      f'(python -m fer_jax.main --workdir={self.path} ...).')
    for step in steps:
      try:
        restored = dict(manager.restore(step,
                                        args=ocp.args.Composite(**items)))
        if ema is not None:
          restored['ema'] = _with_empty_dicts(ema, restored['ema'])
        return {**restored, 'model': _with_empty_dicts(model,
                                                       restored['model']),
                'step': step}
      except Exception as e:  # pylint: disable=broad-except
        # Orbax raises many types for damaged files; any of them means: try
        # the previous checkpoint. TensorStore's errors end in the specs of
        # the arrays read, a kilobyte of JSON that says nothing to the user.
        reason = str(e).split(' [tensorstore_spec', 1)[0]
        logging.warning('Checkpoint %s/%d is unreadable (%s: %s); trying an '
                        'older one.', kind, step, type(e).__name__, reason)
    raise UserError(
        f'No readable {kind} checkpoint in {self.path} (tried steps {steps}); '
        + (if_none_readable
           or f'delete {self.path}/checkpoints to start afresh.'))

  def wait_until_finished(self) -> None:
    for manager in self._managers.values():
      manager.wait_until_finished()

  def close(self) -> None:
    for manager in self._managers.values():
      manager.close()
    self._managers.clear()
