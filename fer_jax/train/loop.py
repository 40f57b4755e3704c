"""The training loop: epochs of jitted steps, validation, checkpoints, resume.

Resume order: the latest checkpoint in the workdir if there is one, else a
fresh start from `config.seed`. Selection uses PublicTest (`val`) only;
PrivateTest (`test`) is never looked at here.
"""

import functools
import logging
import os
import signal
import sys
import threading
import time

import jax
import ml_collections
import numpy as np
import tqdm
from flax import traverse_util
from jax.experimental import multihost_utils

from fer_jax import cpu_convolutions, inference, models, rundir
from fer_jax.data import (dataset, device_augment, pipeline, preprocess,
                          sources)
from fer_jax.errors import Interrupted, UserError
from fer_jax.train import (config_check, cpu_devices, cpu_memory, distill,
                           epoch_metrics, held_out, multihost, optim, phases,
                           step, warm_start)


# The process and device layout and the CPU's settings, which may change on
# resume.
_LAYOUT_KEYS = ('distributed', 'cpu_devices', 'cpu_keep_memory',
                'cpu_convolutions')


def _without_layout(config: dict | None) -> dict | None:
  """A config as JSON less its `_LAYOUT_KEYS`."""
  return config and {k: v for k, v in config.items()
                     if k not in _LAYOUT_KEYS}


def _record_config_change(run: rundir.RunDir, previous: dict | None,
                          config: dict) -> None:
  """On resuming under another config, keeps the one trained under so far
  in config_history.jsonl, with the step it reached: config.json then holds
  the new one, and the run's results remain traceable to both. Changing
  the weights a run started from or distils from is refused: the first
  would be ignored (a resumed run continues from its checkpoint) and the
  second would leave distill_from.json naming the wrong teachers."""
  if previous is None:
    return
  before, after = (traverse_util.flatten_dict(_without_layout(c), sep='.')
                   for c in (previous, config))
  changed = sorted(key for key in before.keys() | after.keys()
                   if before.get(key) != after.get(key))
  if not changed:
    return
  for key in ('model.init_from', 'train.distill_from'):
    if key in changed:
      raise UserError(
          f'{run.path} is resumed with another config.{key} than it was '
          f'trained with; start a new --workdir instead (with '
          f'--config.model.init_from={run.path} to continue from this run).')
  step_reached = run.latest_step()
  run.append_json_line(rundir.CONFIG_HISTORY,
                       {'step': step_reached, 'config': previous})
  logging.warning('Resuming %s at step %d under another config (%s); the '
                  'one before is kept in %s.', run.path, step_reached,
                  ', '.join(changed), rundir.CONFIG_HISTORY)


class _StopSignals:
  """Records SIGTERM / SIGINT instead of dying, so the loop can checkpoint
  first; a second signal of the same kind acts as usual."""

  def __init__(self):
    self.signal = 0
    self._previous = {}

  def _handle(self, signal_number, frame):
    del frame
    self.signal = signal_number
    signal.signal(signal_number, self._previous[signal_number])
    logging.warning('%s received: saving a checkpoint, then stopping.',
                    signal.Signals(signal_number).name)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for number in (signal.SIGTERM, signal.SIGINT):
        self._previous[number] = signal.signal(number, self._handle)
    return self

  def __exit__(self, *exc_info):
    for number, handler in self._previous.items():
      signal.signal(number, handler)


def _data_info(data: sources.FerData, spec: preprocess.InputSpec) -> dict:
  return {**dataset.identity(data), 'input_spec': spec.to_json(),
          'skipped_records': data.skipped}


def _open_run(config: ml_collections.ConfigDict,
              workdir: str) -> tuple[rundir.RunDir, dict | None]:
  """The run directory, in every process, and the config.json it held before
  (process 0 reads it; None elsewhere and for a new run)."""
  previous_config = None
  if jax.process_index() == 0:
    run = rundir.RunDir(workdir)
    if os.path.isfile(run.file(rundir.CONFIG)):
      previous_config = run.read_config()
    if jax.process_count() > 1:
      run.save_config(config)  # So that the others can open the directory.
  if jax.process_count() > 1:
    # The others open it once process 0 has made it (all making it at once
    # would race on RunDir's write probe).
    multihost_utils.sync_global_devices('fer_jax.train: run directory')
    if jax.process_index() != 0:
      run = rundir.RunDir(workdir, create=False)
  return run, previous_config


class _Trainer:
  """One run, built once and then trained epoch by epoch to its plan's end.

  It holds what every epoch shares (the run directory, the data, the model,
  the shardings) and what the epochs advance: the train state, the phase's
  jitted step, the plateau schedule, and `loop`, the counters saved with
  each checkpoint.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    distributed = config.get('distributed')
    self.keep_memory_steps = config.get('cpu_keep_memory', 0)
    self.memory_kept = cpu_memory.keep(self.keep_memory_steps)
    cpu_devices.split(config.get('cpu_devices', 0), config.train.batch_size,
                      1 if distributed is None else distributed.num_processes)
    multihost.initialize(distributed)
    config_check.check(config)
    self.compiler_options = cpu_convolutions.compiler_options(
        cpu_convolutions.setting(config))
    self.main = jax.process_index() == 0
    self.run, previous_config = _open_run(config, workdir)
    # Read once: held_out.check may need the training split before the
    # class options (reading the real CSV takes 6 s on a 2-core EPYC).
    read_data = dataset.read(config.data)
    self.data = dataset.load(config.data, read_data)
    config_check.check_metrics(config.train, self.data.class_names)
    train_split = self.data.splits['train']
    self.spec = preprocess.input_spec(
        config.data.normalization, config.data.image_size,
        config.data.channels, train_split.images)
    self.resuming = self.run.latest_step() is not None  # Every process.
    data_info = _data_info(self.data, self.spec)
    if self.resuming and os.path.isfile(self.run.file(rundir.DATASET)):
      changed = dataset.changed_splits(self.run.read_json(rundir.DATASET),
                                       data_info)
      if changed:
        raise UserError(
            f'{workdir} is resumed on other {"/".join(changed)} images than '
            f'it trained on (its {rundir.DATASET}); resume it on its own data '
            f'(config.json: data.path), or start a new --workdir with '
            f'--config.model.init_from={workdir}.')
    training_faces = dataset.face_digests(train_split.images)
    learned_from = np.union1d(training_faces, held_out.check(
        {'train.distill_from': distill.teacher_directories(config.train),
         # A resumed run continues from its checkpoint, not init_from.
         'model.init_from': () if self.resuming else
                            warm_start.source_run(config)},
        read_data.splits['train'], self.data, data_info, training_faces))
    if self.resuming and os.path.isfile(self.run.file(rundir.TRAIN_FACES)):
      # What its init_from and earlier teachers passed on.
      learned_from = np.union1d(learned_from,
                                np.load(self.run.file(rundir.TRAIN_FACES)))
    if self.main:
      if self.resuming:
        _record_config_change(self.run, previous_config,
                              rundir.as_json(config))
      self.run.save_config(config)
      self.run.write_json(rundir.DATASET, data_info)
      self.run.write_array(rundir.TRAIN_FACES, learned_from)

    # -------------------------------------------------------------- Devices.
    self.num_devices = jax.device_count()
    self.global_batch = config.train.batch_size
    if self.global_batch % self.num_devices:
      raise UserError(f'config.train.batch_size={self.global_batch} must be '
                      f'a multiple of the {self.num_devices} devices.')
    self.steps_per_epoch = len(train_split) // self.global_batch
    if not self.steps_per_epoch:
      raise UserError(f'The train split has {len(train_split)} images, '
                      f'fewer than one batch of {self.global_batch}; lower '
                      'config.train.batch_size.')
    self.batch_sharding, self.replicated = step.data_parallel(jax.devices())

    # ---------------------------------------------------------------- Model.
    model_settings = config.model.to_dict()
    self.model = models.create(model_settings.pop('name'),
                               self.data.num_classes,
                               compute_dtype=config.train.compute_dtype,
                               **model_settings)
    self.class_weights = dataset.class_weights(
        train_split.labels, self.data.num_classes, config.train.class_weights)
    self.plan = phases.parse(config.train)
    self.ema_decay = config.train.get('ema_decay', 0.0)  # 0: no EMA.
    self.teacher, self.teacher_variables = distill.load(
        config.train, self.data.class_names)
    if self.teacher is not None:
      self.teacher_variables = jax.device_put(self.teacher_variables,
                                              self.replicated)
      if self.main and not self.resuming:
        self.run.write_json(rundir.DISTILL_FROM, distill.record(config.train))
    self.groups = None
    if any(phase.trainable != 'all' for phase in self.plan):
      self.groups = models.parameter_groups(
          self.model,
          (1, self.spec.image_size, self.spec.image_size, self.spec.channels))
    self.logits_fn = inference.make_logits_fn(
        self.model, self.spec, compiler_options=self.compiler_options)
    self.metric = config.train.selection_metric
    self.total_epochs = sum(phase.epochs for phase in self.plan)

  def _make_step(self, phase: phases.Phase):
    """`phase`'s optimizer and jitted train step (compiled at first use)."""
    config = self.config
    trainable = (None if self.groups is None else phases.trainable_names(
        phase, self.groups, config.model.name))
    optimizer = optim.create(phase.train, self.steps_per_epoch, trainable)
    jitted_step = jax.jit(
        step.make_train_step(
            self.model, optimizer, self.spec, self.class_weights,
            config.train.label_smoothing,
            device_augment.from_config(config.data.augment),
            trainable=trainable,
            mixup_alpha=config.train.get('mixup_alpha', 0.0),
            cutmix_alpha=config.train.get('cutmix_alpha', 0.0),
            ema_decay=self.ema_decay,
            label_mode=config.data.get('label_mode', 'majority'),
            teacher=self.teacher),
        donate_argnums=0, compiler_options=self.compiler_options)
    train_step = functools.partial(
        jitted_step, **({} if self.teacher is None else
                        {'teacher_variables': self.teacher_variables}))
    self.step_compiled = False
    if trainable is not None:
      logging.info('Phase %d trains %s of %s.', phase.number,
                   ', '.join(n for n in self.groups.names if n in trainable),
                   config.model.name)
    return optimizer, train_step

  def _init_opt_state(self, optimizer, params):
    return jax.jit(optimizer.init, out_shardings=self.replicated)(params)

  def _initial_state(self, optimizer, init_rng) -> step.TrainState:
    """A fresh state, from config.model.init_from's weights where given."""
    config = self.config
    state = step.init_state(self.model, optimizer, self.spec, init_rng,
                            ema=bool(self.ema_decay), sharding=self.replicated)
    if config.model.get('init_from') and not self.resuming:
      # The optimizer state depends on shapes only.
      state = state.replace(**jax.device_put(dict(zip(
          ('params', 'batch_stats'), warm_start.load(
              config, state.params, state.batch_stats,
              self.data.class_names))),
          self.replicated)).with_fresh_ema()
      if self.main:
        self.run.write_json(rundir.INIT_FROM, warm_start.record(config))
      if warm_start.replays_data_stream(config,
                                        len(self.data.splits['train'])):
        logging.warning(
            '%s trained with seed %d on as many images: the first epochs of '
            'this run repeat its faces, in the same order with the same '
            'augmentation. For new ones, set --config.seed to another value.',
            config.model.init_from, config.seed)
    num_params = models.count_params(state.params)
    logging.info('Model %s: %s parameters; %d steps of %d images per epoch '
                 'on %d %s device(s).', config.model.name, f'{num_params:,}',
                 self.steps_per_epoch, self.global_batch, self.num_devices,
                 jax.default_backend())
    mflops = inference.forward_mflops(
        self.logits_fn, multihost.local(state.model_variables),
        self.data.splits['train'].images[:1])
    print(f'{config.model.name}: {num_params:,} parameters, {mflops:,.1f} '
          'MFLOPs per image', flush=True)
    return state

  def _resume(self):
    """Restores the state, the data iterator and `loop` from the latest
    checkpoint."""
    run, state = self.run, self.state
    if len(self.plan) > 1:
      # The checkpoint's phase decides the layout of its optimizer state.
      number = run.restore('latest', model=state.model_variables)[
          'loop'].get('phase', 1)
      if 1 < number <= len(self.plan):
        optimizer, self.train_step = self._make_step(self.plan[number - 1])
        state = state.replace(
            opt_state=self._init_opt_state(optimizer, state.params))
    with_ema = (state.ema is not None
                and run.has_item('latest', run.latest_step(), 'ema'))
    restored = run.restore('latest', model=state.model_variables,
                           optimizer={'step': state.step,
                                      'opt_state': state.opt_state},
                           with_data_state=True,
                           ema=state.ema if with_ema else None)
    # A constant learning rate is state to optax.inject_hyperparams (a
    # schedule is recomputed from the step): the config's, which a resumed
    # run may have changed, replaces the checkpoint's.
    restored['optimizer']['opt_state'].hyperparams['learning_rate'] = (
        state.opt_state.hyperparams['learning_rate'])
    state = step.TrainState(params=restored['model']['params'],
                            batch_stats=restored['model']['batch_stats'],
                            ema=restored.get('ema'), **restored['optimizer'])
    if self.ema_decay and not with_ema:
      logging.warning('The latest checkpoint has no EMA of the weights: it '
                      'starts at the restored ones.')
      state = state.replace(ema={}).with_fresh_ema()
    self.state = state
    self.batches.set_state(restored['data'])
    self.loop = {'phase': 1, 'phase_epoch': restored['loop']['epoch'],
                 **restored['loop']}
    self.plateau = optim.ReduceOnPlateau.resume(
        self.plan[min(self.loop['phase'], len(self.plan)) - 1].train,
        self.loop['plateau'])
    logging.info('Resumed %s at step %d (epoch %d done).', run.path,
                 restored['step'], self.loop['epoch'])

  def _save_latest(self, data_state, partial_epoch):
    self.loop['partial_epoch'] = partial_epoch
    state = self.state
    self.run.save('latest', int(state.step), model=state.model_variables,
                  loop=self.loop, optimizer={'step': state.step,
                                             'opt_state': state.opt_state},
                  data_state=data_state, ema=state.ema)

  def _next_phase(self):
    """Starts the phase after loop['phase'] from that phase's best state,
    with a fresh optimizer, schedule and early-stopping counters."""
    self.run.wait_until_finished()
    # With EMA: the best EMA weights, where the EMA restarts too.
    best = self.run.restore('best', model=self.state.model_variables)['model']
    phase = self.plan[self.loop['phase']]
    optimizer, self.train_step = self._make_step(phase)
    # The step count goes on: checkpoints and dropout keys stay unique.
    self.state = self.state.replace(
        params=best['params'], batch_stats=best['batch_stats'],
        opt_state=self._init_opt_state(optimizer, best['params'])
    ).with_fresh_ema()
    self.plateau = optim.ReduceOnPlateau.start(phase.train)
    logging.info('Phase %d/%d (%s, %d epochs) starts from the best state of '
                 'phase %d (epoch %d).', phase.number, len(self.plan),
                 phase.trainable, phase.epochs, self.loop['phase'],
                 self.loop['best_epoch'])
    self.loop.update(phase=phase.number, phase_epoch=0, best_value=None,
                     epochs_without_improvement=0, stopped_early=False,
                     plateau=self.plateau.to_json(), partial_epoch=None)

  def _phase_done(self, phase: phases.Phase) -> bool:
    return self.loop['stopped_early'] or self.loop['phase_epoch'] >= (
        phase.epochs)

  def _train_epoch(self, epoch: int, phase: phases.Phase, stop: _StopSignals):
    """The epoch's steps (from where a partial epoch left off): its
    PartialEpoch record and the data iterator's state after it."""
    every = self.config.train.checkpoint_every_steps
    steps, batch = self.steps_per_epoch, self.global_batch
    partial = self.loop['partial_epoch'] or epoch_metrics.PartialEpoch.EMPTY
    done = len(partial['losses'])
    start = time.perf_counter()
    progress = tqdm.tqdm(
        total=steps * batch, initial=done * batch, unit='img',
        desc=f'epoch {epoch}/{self.total_epochs}' + (
            f' (phase {phase.number}/{len(self.plan)})'
            if len(self.plan) > 1 else ''),
        leave=False, mininterval=1 if sys.stderr.isatty() else 30,
        disable=not self.main)
    step_metrics = []
    data_state = None
    shown_loss = None  # The last progress-bar update's, on its way to the host.
    for i, (images_and_labels, data_state) in enumerate(pipeline.to_device(
        self.batches, steps - done, self.batch_sharding,
        self.config.data.prefetch_batches), start=done + 1):
      if not self.step_compiled:
        start += self._compile_step(images_and_labels)
      self.state, results = self.train_step(self.state, images_and_labels,
                                            self.dropout_rng)
      step_metrics.append(results)
      progress.update(batch)
      if self.main and i % self.config.train.log_every_steps == 0:
        # The bar shows the loss of its update before, log_every_steps
        # steps back and copied to the host since: reading it waits for no
        # step dispatched after that one, so the device's queue stays full.
        if shown_loss is not None:
          progress.set_postfix(loss=f'{float(shown_loss):.3f}', refresh=False)
        shown_loss = results['loss']
        shown_loss.copy_to_host_async()
      if self.memory_kept:
        cpu_memory.after_step(i - done, self.keep_memory_steps, results)
      if i < steps and (stop.signal or (every and i % every == 0)):
        partial = epoch_metrics.PartialEpoch.extend(partial, step_metrics,
                                                    start)
        step_metrics, start = [], time.perf_counter()
        epoch_metrics.check_losses(partial, epoch, steps, self.run)
        self._save_latest(data_state, partial)
        if stop.signal:
          self._stop(stop, f'in epoch {epoch}')
    progress.close()
    partial = epoch_metrics.PartialEpoch.extend(partial, step_metrics, start)
    epoch_metrics.check_losses(partial, epoch, steps, self.run)
    return partial, data_state

  def _compile_step(self, batch) -> float:
    """Compiles the train step for `batch` before its first call, so that
    the epoch's train_seconds (and the img/s and report.json's
    seconds_per_epoch from them) time training alone; returns the seconds
    it took, which the epoch's timer skips."""
    begin = time.perf_counter()
    self.train_step.func.lower(self.state, batch, self.dropout_rng,
                               **self.train_step.keywords).compile()
    self.step_compiled = True
    seconds = time.perf_counter() - begin
    logging.info('Compiled the train step in %.1f s.', seconds)
    return seconds

  def _stop(self, stop: _StopSignals, where: str):
    """Ends the run on `stop`'s signal, once the checkpoint just saved is
    written."""
    self.run.wait_until_finished()
    raise Interrupted(
        f'Stopped by {signal.Signals(stop.signal).name} {where} at step '
        f'{int(self.state.step)}; a checkpoint is saved: run the same command '
        'again to resume.', stop.signal)

  def _epoch_record(self, epoch: int, phase: phases.Phase, partial) -> dict:
    """The epoch's record (train and PublicTest metrics), logged and, by
    process 0, written to metrics.jsonl and TensorBoard."""
    val_split = self.data.splits['val']
    # Every process evaluates the whole split alone (no collectives).
    val = inference.evaluate(
        self.logits_fn, multihost.local(self.state.eval_variables),
        val_split.images, val_split.labels, self.data.class_names,
        self.config.train.eval_batch_size)
    record = epoch_metrics.epoch_record(
        epoch, phase.number, self.state, partial, val, self.data.class_names,
        self.steps_per_epoch * self.global_batch)
    record = multihost.from_process_0(record)
    if self.main:
      self.run.append_metrics(record)
      for key, value in record.items():
        if key not in ('epoch', 'step', 'phase'):
          self.writer.add_scalar(key, value, epoch)
      self.writer.flush()
    epoch_metrics.log_epoch(
        record, self.total_epochs,
        f' (phase {phase.number})' if len(self.plan) > 1 else '')
    return record

  def _end_epoch(self, epoch: int, phase: phases.Phase, record: dict):
    """The plateau schedule, the best checkpoint and early stopping (the
    last two per phase) after `record`."""
    loop = self.loop
    if phase.train.schedule == 'plateau':
      factor = self.plateau.scale(record[self.plateau.metric])
      if factor != 1.0:
        hyperparams = self.state.opt_state.hyperparams
        # A strongly typed float32, as in the state: no recompilation.
        hyperparams['plateau_scale'] = jax.device_put(
            np.float32(hyperparams['plateau_scale'] * factor),
            self.replicated)
        logging.info('%s plateaued: learning rate -> %.2g.',
                     self.plateau.metric,
                     optim.current_learning_rate(self.state.opt_state))
    loop['epoch'] = epoch
    loop['phase_epoch'] += 1
    loop['plateau'] = self.plateau.to_json()
    if optim.improved(record[self.metric], loop['best_value'], self.metric):
      loop.update(best_value=record[self.metric], best_epoch=epoch,
                  epochs_without_improvement=0, partial_epoch=None)
      self.run.save('best', int(self.state.step),
                    model=self.state.eval_variables, loop=loop)
    else:
      loop['epochs_without_improvement'] += 1
    patience = phase.train.early_stopping_patience
    loop['stopped_early'] = bool(
        patience and loop['epochs_without_improvement'] >= patience
        and loop['phase_epoch'] < phase.epochs)
    if loop['stopped_early']:
      logging.info('Early stopping%s: no better %s for %d epochs.',
                   f' of phase {phase.number}' if len(self.plan) > 1 else '',
                   self.metric, patience)

  def train(self):
    """Trains to the plan's end, resuming from the latest checkpoint if the
    run directory has one."""
    config = self.config
    optimizer, self.train_step = self._make_step(self.plan[0])
    # Placed as the state is, else every step copies the dropout key there;
    # by a program, which can place it on other processes' devices too.
    init_rng, self.dropout_rng = jax.jit(
        lambda: tuple(jax.random.split(jax.random.key(config.seed))),
        out_shardings=self.replicated)()
    self.state = self._initial_state(optimizer, init_rng)
    self.batches = iter(pipeline.train_dataset(
        self.data.splits['train'],
        batch_size=self.global_batch // jax.process_count(),
        seed=config.seed,
        augment_config=(config.data.augment if device_augment.where(
            config.data.augment) == 'host' else None),
        num_workers=config.data.num_workers,
        process_index=jax.process_index(),
        process_count=jax.process_count()))
    self.plateau = optim.ReduceOnPlateau.start(self.plan[0].train)
    # `epoch` counts over all phases; `phase_epoch` within `phase` (from 1).
    self.loop = {'epoch': 0, 'phase': 1, 'phase_epoch': 0,
                 'best_value': None, 'best_epoch': 0,
                 'epochs_without_improvement': 0, 'stopped_early': False,
                 'plateau': self.plateau.to_json(), 'partial_epoch': None}
    if self.resuming:
      self._resume()
    self.writer = None
    if self.main:
      self.run.truncate_metrics(self.loop['epoch'])
      self.writer = epoch_metrics.summary_writer(
          self.run.file(rundir.TENSORBOARD),
          purge_step=self.loop['epoch'] + 1)

    with _StopSignals() as stop:
      while True:
        phase = self.plan[self.loop['phase'] - 1]
        if self._phase_done(phase):
          if self.loop['phase'] >= len(self.plan):
            break
          # Only on resuming a checkpoint saved before phases took over.
          self._next_phase()
          continue
        epoch = self.loop['epoch'] + 1
        partial, data_state = self._train_epoch(epoch, phase, stop)
        record = self._epoch_record(epoch, phase, partial)
        self._end_epoch(epoch, phase, record)
        if self._phase_done(phase) and self.loop['phase'] < len(self.plan):
          # The latest checkpoint then holds the next phase's start.
          self._next_phase()
        self._save_latest(data_state, None)
        # Also a signal during the epoch's last step, not looked at above.
        if stop.signal:
          self._stop(stop, f'after epoch {epoch}')

    if self.main:
      self.writer.close()
    self.run.wait_until_finished()
    logging.info('Best %s %.4f at epoch %d.', self.metric,
                 self.loop['best_value'], self.loop['best_epoch'])


def train(config: ml_collections.ConfigDict,
          workdir: str) -> tuple[rundir.RunDir, sources.FerData]:
  """Trains (or resumes) a run in `workdir`; returns it and its data.

  With several processes (config.distributed), each runs this with the same
  config: each reads its share of every global batch, evaluates the whole
  validation split itself, and saves its part of the checkpoints; process 0
  alone writes the other files (config, metrics, TensorBoard).
  """
  trainer = _Trainer(config, workdir)
  trainer.train()
  return trainer.run, trainer.data
