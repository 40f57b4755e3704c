"""Two-phase transfer learning (issue 3): config.train.phases."""

import signal

import jax
import numpy as np
import pytest

import fakedata
from test_bad_inputs import _assert_one_line_error, _main
from test_loop import tiny_config
from fer_jax import inference, models
from fer_jax.config import default_config
from fer_jax.data import preprocess
from fer_jax.errors import Interrupted, UserError
from fer_jax.evaluate import report
from fer_jax.train import config_check, loop, optim, phases, step

SPEC = preprocess.InputSpec(48, 1, (127.5,), (127.5,))
TIMING_KEYS = ('train_seconds', 'train_images_per_second')


def _train(*specs, epochs=0, **overrides):
  config = default_config().train
  config.phases = specs
  config.epochs = epochs
  config.update(overrides)
  return config


# ------------------------------------------------------------------ Parsing.


def test_phases_parse_with_defaults_from_train_and_the_epochs_cap():
  plan = phases.parse(_train(
      'epochs=10,trainable=head,learning_rate=1e-3',
      ' epochs = 20 , trainable=last:2, learning_rate=1e-4,optimizer=sgd,'
      'nesterov=true', epochs=0, weight_decay=1e-4))
  assert [(p.number, p.epochs, p.trainable) for p in plan] == [
      (1, 10, 'head'), (2, 20, 'last:2')]
  assert plan[0].train.learning_rate == 1e-3
  assert plan[0].train.optimizer == 'adam'  # From config.train.
  assert plan[1].train.optimizer == 'sgd' and plan[1].train.nesterov
  assert plan[1].train.weight_decay == 1e-4
  assert plan[1].train.epochs == 20  # What a cosine schedule spans.
  capped = phases.parse(_train('epochs=10,trainable=head', 'epochs=20',
                               epochs=3))
  assert [(p.epochs, p.trainable) for p in capped] == [(3, 'head'),
                                                       (3, 'all')]
  # Without phases, config.train is the one phase.
  (single,) = phases.parse(default_config().train)
  assert (single.epochs, single.trainable) == (40, 'all')


@pytest.mark.parametrize('spec, fragments', [
    ('epochs=ten', ["epochs='ten' is not an integer"]),
    ('epochs=2,trainable=top', ["trainable='top'", "'head'", "'last:N'",
                                "'all'"]),
    ('epochs=2,trainable=last:0', ["trainable='last:0'"]),
    ('epochs=2,lr=1e-3', ["unknown field 'lr'", 'learning_rate']),
    ('epochs=2,head', ["'head' is not field=value", 'trainable']),
    ('epochs=2,optimizer=adagrad', ["optimizer='adagrad'", 'adam, adamw, sgd']),
    ('epochs=2,schedule=step', ["schedule='step'", 'cosine']),
    ('epochs=2,learning_rate=0', ['learning_rate=0.0 must be > 0']),
    ('epochs=2,weight_decay=-1e-4', ['weight_decay=-0.0001 must be >= 0']),
    ('epochs=2,warmup_epochs=-1', ['warmup_epochs=-1.0 must be >= 0']),
    ('epochs=2,plateau_factor=2', ['plateau_factor=2.0 must be in (0, 1]']),
    ('epochs=2,early_stopping_patience=-1',
     ['early_stopping_patience=-1 must be >= 0']),
    ('trainable=head', ['no epochs= given, and config.train.epochs is 0']),
    ('epochs=0', ['epochs=0 must be >= 1.']),
])
def test_malformed_phase_names_the_phase_and_the_field(spec, fragments):
  with pytest.raises(UserError) as error:
    phases.parse(_train('epochs=1,trainable=head', spec))
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(f'config.train.phases: phase 2 {spec!r}: ')
  for fragment in fragments:
    assert fragment in message, message


def test_a_phase_with_no_epochs_under_a_cap_is_not_blamed_on_the_cap():
  with pytest.raises(UserError) as error:
    phases.parse(_train('epochs=0,trainable=head', epochs=40))
  assert str(error.value) == ("config.train.phases: phase 1 'epochs=0,"
                              "trainable=head': epochs=0 must be >= 1.")


def test_too_many_blocks_list_the_models_blocks(csv_path):
  config = tiny_config(csv_path, phases=('epochs=1,trainable=last:4',))
  with pytest.raises(UserError, match=r'phase 1 trainable=.last:4.: '
                     r'resnet_small has 3 blocks \(Conv_0\+BatchNorm_0, '
                     r'ResidualBlock_0, ResidualBlock_1\)'):
    config_check.check(config)


def test_malformed_phase_exits_2_before_training(csv_path, tmp_path):
  result = _main(f'--config.data.path={csv_path}',
                 "--config.train.phases=('epochs=1,trainable=top',)",
                 workdir=tmp_path)
  _assert_one_line_error(result, tmp_path, 'config.train.phases: phase 1',
                         "trainable='top'", "'last:N'")


def test_parameter_groups_end_with_the_classifier():
  groups = models.parameter_groups(
      models.create('resnet_small', 7, hidden_units=4), (1, 48, 48, 1))
  assert groups.blocks == (('Conv_0', 'BatchNorm_0'), ('ResidualBlock_0',),
                           ('ResidualBlock_1',))
  assert groups.head == ('Dense_0', 'Dense_1')
  groups = models.parameter_groups(models.create('mobilenetv2_small', 7),
                                   (1, 48, 48, 1))
  assert groups.blocks[-1] == ('Conv_1', 'BatchNorm_1')
  assert groups.head == ('Dense_0',)


# ----------------------------------------------------------------- Freezing.


def _equal(a, b) -> bool:
  return jax.tree.all(jax.tree.map(np.array_equal, a, b))


def _run_phase(model, groups, state, spec, steps=4):
  (phase,) = phases.parse(_train(spec, schedule='constant'))
  trainable = phases.trainable_names(phase, groups, 'resnet_small')
  optimizer = optim.create(phase.train, 10, trainable)
  state = state.replace(opt_state=optimizer.init(state.params))
  train_step = jax.jit(step.make_train_step(
      model, optimizer, SPEC, np.ones(7, np.float32), 0.0,
      trainable=trainable))
  labels = np.arange(28) % 7
  batch = {'image': fakedata.class_images(labels, 0),
           'label': labels.astype(np.int32)}
  for _ in range(steps):
    state, _ = train_step(state, batch, jax.random.key(1))
  return state


def test_frozen_modules_keep_parameters_and_batch_statistics():
  model = models.create('resnet_small', 7, stem_features=8,
                        block_features=(8, 16))
  groups = models.parameter_groups(model, (1, 48, 48, 1))
  start = step.init_state(model, optim.create(default_config().train, 10),
                          SPEC, jax.random.key(0))
  start = jax.device_get(start)

  head = _run_phase(model, groups, start, 'epochs=1,trainable=head')
  for name in ('Conv_0', 'BatchNorm_0', 'ResidualBlock_0', 'ResidualBlock_1'):
    assert _equal(head.params[name], start.params[name]), name
  assert _equal(head.batch_stats, start.batch_stats)
  assert not np.array_equal(head.params['Dense_0']['kernel'],
                            start.params['Dense_0']['kernel'])

  last = _run_phase(model, groups, head, 'epochs=1,trainable=last:1,'
                    'optimizer=adamw,weight_decay=1e-2,learning_rate=1e-4')
  for name in ('Conv_0', 'BatchNorm_0', 'ResidualBlock_0'):
    assert _equal(last.params[name], start.params[name]), name
    if name in start.batch_stats:
      assert _equal(last.batch_stats[name], start.batch_stats[name]), name
  assert not _equal(last.params['ResidualBlock_1'],
                    head.params['ResidualBlock_1'])
  assert not _equal(last.batch_stats['ResidualBlock_1'],
                    head.batch_stats['ResidualBlock_1'])
  assert not np.array_equal(last.params['Dense_0']['kernel'],
                            head.params['Dense_0']['kernel'])

  everything = _run_phase(model, groups, last, 'epochs=1,trainable=all')
  for name in groups.names:
    assert not _equal(everything.params[name], last.params[name]), name
  assert not _equal(everything.batch_stats['BatchNorm_0'],
                    last.batch_stats['BatchNorm_0'])


# --------------------------------------------------------------------- Loop.


def _two_phase_config(csv_path):
  # train.epochs=1 caps both phases at one epoch; one block compiles faster.
  config = tiny_config(csv_path, epochs=1, phases=(
      'epochs=4,trainable=head,learning_rate=3e-3',
      'epochs=2,trainable=last:1,learning_rate=3e-4,schedule=constant'))
  config.model.block_features = (8,)
  return config


class _StopAfter:
  """A stand-in for loop._StopSignals: 'SIGTERM' at the `checks`+1-th look."""

  def __init__(self, checks):
    self.checks = checks

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    pass

  @property
  def signal(self):
    self.checks -= 1
    return signal.SIGTERM if self.checks < 0 else 0


def test_two_phases_train_report_and_resume_exactly(csv_path, tmp_path,
                                                    monkeypatch):
  config = _two_phase_config(csv_path)
  straight, data = loop.train(config, str(tmp_path / 'straight'))
  records = straight.read_metrics()
  assert [(r['epoch'], r['phase']) for r in records] == [(1, 1), (2, 2)]
  assert records[1]['step'] == 2 * (84 // 16)
  assert np.isclose(records[1]['learning_rate'], 3e-4)
  result = report.write_report(straight, data)
  assert result['best_epoch'] == 2  # Each phase selects its own best.

  # Interrupted in phase 2 (epoch 2, step 2 of 5), then the same command.
  # Looks: steps 1-4 of epoch 1, its end, then steps 1 and 2 of epoch 2.
  monkeypatch.setattr(loop, '_StopSignals', lambda: _StopAfter(6))
  with pytest.raises(Interrupted):
    loop.train(config, str(tmp_path / 'resumed'))
  monkeypatch.undo()
  resumed, _ = loop.train(config, str(tmp_path / 'resumed'))
  for a, b in zip(records, resumed.read_metrics(), strict=True):
    for key in TIMING_KEYS:
      a.pop(key), b.pop(key)
    assert a == b
  variables = inference.load_trained(straight).variables
  a = straight.restore('latest', model=variables)['model']
  b = resumed.restore('latest', model=variables)['model']
  assert _equal(a, b)


def test_next_phase_starts_from_the_best_state_of_the_one_before(
    csv_path, tmp_path, monkeypatch):
  # Only the first epoch of a phase counts as an improvement: phase 1's best
  # is its epoch 1, not its last epoch. (The plateau, patience 3, sees the
  # same and lowers nothing in 2 epochs.)
  monkeypatch.setattr(optim, 'improved', lambda value, best, metric:
                      best is None)
  first = 'epochs=2,trainable=all,early_stopping_patience=0'
  config = _two_phase_config(csv_path)
  config.train.epochs = 0
  config.train.phases = (first, 'epochs=1,trainable=head')
  run, _ = loop.train(config, str(tmp_path / 'two'))
  assert [r['phase'] for r in run.read_metrics()] == [1, 1, 2]
  config.train.epochs = 1  # Phase 1's epoch 1 alone.
  config.train.phases = (first,)
  epoch_1, _ = loop.train(config, str(tmp_path / 'one'))

  variables = inference.load_trained(run).variables
  final = run.restore('latest', model=variables)['model']
  best_of_1 = epoch_1.restore('latest', model=variables)['model']
  # Phase 2 trains the head only: every BatchNorm statistic is epoch 1's.
  assert _equal(final['batch_stats'], best_of_1['batch_stats'])
  assert _equal(final['params']['Conv_0'], best_of_1['params']['Conv_0'])
  assert not _equal(final['params']['Dense_0'], best_of_1['params']['Dense_0'])
