"""Learning from a trained run (knowledge distillation, init_from a run
directory) and FER+ vote targets, from the loss to a run."""

import functools
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import fakedata
import test_report
from fer_jax import inference, models, release, rundir
from fer_jax.config import default_config
from fer_jax.data import ferplus, preprocess, sources
from fer_jax.errors import UserError
from fer_jax.evaluate import report
from fer_jax.train import distill, loop, optim, step, warm_start
from test_loop import tiny_config

STUDENT_SPEC = preprocess.InputSpec(24, 1, (127.5,), (127.5,))
# The teacher sees the same faces at its own size, channels and normalisation.
TEACHER_SPEC = preprocess.input_spec('imagenet', 32, 3, np.zeros((1, 48, 48)))


def _softmax(x):
  e = np.exp(x - x.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def test_teacher_loss_is_hinton_distillation():
  rng = np.random.default_rng(0)
  student, teacher_logits = rng.normal(size=(2, 5, 4)).astype(np.float32)
  teacher = distill.Teacher((), (), temperature=3.0, weight=0.25)
  p, q = _softmax(teacher_logits / 3), _softmax(student / 3)
  kl = (p * (np.log(p) - np.log(q))).sum(1).mean()
  np.testing.assert_allclose(teacher.loss(jnp.float32(2.0), student, p),
                             0.75 * 2.0 + 0.25 * 9 * kl, rtol=1e-5)
  # A student that matches the teacher pays only the hard loss.
  np.testing.assert_allclose(
      teacher.loss(jnp.float32(2.0), teacher_logits, p), 1.5, rtol=1e-6)


def test_distillation_step_weight_0_is_plain_and_weight_1_is_the_kl():
  labels = np.arange(14) % 8
  targets = np.full((14, 8), 0.1 / 7, np.float32)
  targets[np.arange(14), labels] = 0.9
  batch = {'image': fakedata.class_images(labels),
           'label': labels.astype(np.int32), 'targets': targets}
  student = models.create('resnet_small', 8, stem_features=4,
                          block_features=(4,))
  teacher_model = models.create('resnet_small', 8, stem_features=4,
                                block_features=(8,))
  teacher_variables = teacher_model.init(
      jax.random.key(7), jnp.zeros((1, 32, 32, 3)), train=False)
  optimizer = optim.create(default_config().train, steps_per_epoch=10)
  state = step.init_state(student, optimizer, STUDENT_SPEC, jax.random.key(0))

  def run(weight=None, ensemble=False):
    teachers = (((teacher_model, TEACHER_SPEC, teacher_variables),
                 (student, STUDENT_SPEC, state.model_variables))
                if ensemble else ((teacher_model, TEACHER_SPEC,
                                   teacher_variables),))
    models, specs, variables = zip(*teachers)
    teacher = None if weight is None else distill.Teacher(
        models, specs, temperature=2.0, weight=weight)
    train_step = jax.jit(step.make_train_step(
        student, optimizer, STUDENT_SPEC, np.ones(8, np.float32), 0.0,
        label_mode='probability', teacher=teacher))
    extra = () if teacher is None else (variables,)
    return train_step(state, batch, jax.random.key(1), *extra)

  plain, plain_metrics = run()
  silent, silent_metrics = run(weight=0.0)
  assert plain_metrics['loss'] == silent_metrics['loss']
  assert jax.tree.all(jax.tree.map(jnp.array_equal, plain.params,
                                   silent.params))
  _, taught_metrics = run(weight=1.0)
  # The same student logits (no dropout, train-mode BatchNorm) against the
  # teacher's on the same faces through its own input spec.
  student_logits, _ = student.apply(
      state.model_variables, STUDENT_SPEC(batch['image']), train=True,
      mutable=['batch_stats'])
  teacher_logits = teacher_model.apply(
      teacher_variables, TEACHER_SPEC(batch['image']), train=False)
  def kl(p):
    return (p * (jnp.log(p) - jax.nn.log_softmax(student_logits / 2))).sum(1)

  p = jax.nn.softmax(teacher_logits / 2)
  np.testing.assert_allclose(taught_metrics['loss'], 4 * kl(p).mean(),
                             rtol=1e-4)
  # An ensemble teaches its members' mean softened probabilities: here the
  # teacher and the student itself (in eval mode, through its own spec).
  _, ensemble_metrics = run(weight=1.0, ensemble=True)
  student_eval_logits = student.apply(
      state.model_variables, STUDENT_SPEC(batch['image']), train=False)
  mean_p = (p + jax.nn.softmax(student_eval_logits / 2)) / 2
  np.testing.assert_allclose(ensemble_metrics['loss'], 4 * kl(mean_p).mean(),
                             rtol=1e-4)
  assert not np.isclose(ensemble_metrics['loss'], taught_metrics['loss'])


@pytest.fixture(scope='module')
def ferplus_files(tmp_path_factory) -> tuple[str, str]:
  """(fer2013.csv, fer2013new.csv): every row 7 votes for its class, 3 for
  another."""
  root = tmp_path_factory.mktemp('ferplus')
  csv_path = str(root / 'fer2013.csv')
  written = fakedata.write_challenge_csv(csv_path, per_class=(12, 4, 4))
  votes_path = str(root / 'fer2013new.csv')
  fakedata.write_ferplus_votes(votes_path, written)
  return csv_path, votes_path


def _tiny_config(files, **train):
  """test_loop's tiny run, one epoch, on FER+ votes."""
  config = tiny_config(files[0], **{'epochs': 1, **train})
  config.data.ferplus_path = files[1]
  return config


@pytest.fixture(scope='module')
def teacher_dir(ferplus_files, tmp_path_factory) -> str:
  workdir = str(tmp_path_factory.mktemp('teacher'))
  loop.train(_tiny_config(ferplus_files), workdir)
  return workdir


def test_student_learns_vote_targets_from_teachers(ferplus_files,
                                                   teacher_dir, tmp_path):
  # An ensemble of two (the same run twice: what is tested is the plumbing).
  distill_from = f'{teacher_dir}, {teacher_dir}'
  config = _tiny_config(ferplus_files, distill_from=distill_from, epochs=2)
  config.data.label_mode = 'multi_target'
  run, data = loop.train(config, str(tmp_path / 'run'))
  assert data.class_names == ferplus.CLASSES
  assert data.splits['train'].targets is not None
  records = run.read_metrics()
  assert [r['epoch'] for r in records] == [1, 2]
  assert all(np.isfinite(r['train/loss']) for r in records)
  assert run.load_config().train.distill_from == distill_from
  result = report.write_report(run, data)
  assert sum(map(sum, result['test']['confusion_matrix'])) == 7 * 4

  # Provenance: distill_from.json names each teacher's checkpoint by its
  # sha256; a release keeps it and its RESULTS.md entry quotes it.
  teacher = rundir.RunDir(teacher_dir, create=False).best_checkpoint_record()
  assert run.read_json(rundir.DISTILL_FROM) == [teacher, teacher]
  release.release(run.path, str(tmp_path / 'released'))
  entry = test_report.results_entry_module().entry(
      rundir.RunDir(str(tmp_path / 'released'), create=False), {})
  link = (f'`{teacher["path"]}` (best checkpoint, step '
          f'{teacher["checkpoint_step"]}, sha256 '
          f'`{teacher["checkpoint_sha256"]}`)')
  assert f'- Distilled from {link} and {link}.' in entry


def test_each_teacher_must_be_a_run_directory(teacher_dir):
  train = ml_collections.ConfigDict({
      'distill_from': f'{teacher_dir},no/such/run',
      'distill_temperature': 4.0, 'distill_weight': 0.5})
  assert distill.teacher_directories(train) == (teacher_dir, 'no/such/run')
  with pytest.raises(UserError, match="'no/such/run' is not a run directory"):
    distill.check(train)


def test_a_teacher_of_other_classes_is_a_user_error(ferplus_files,
                                                    teacher_dir, tmp_path):
  config = _tiny_config(ferplus_files, distill_from=teacher_dir)
  config.data.ferplus_path = ''  # FER2013's 7 classes, the teacher has 8.
  with pytest.raises(UserError, match='same classes') as error:
    loop.train(config, str(tmp_path))
  assert teacher_dir in str(error.value)


@pytest.mark.parametrize('setting, value, message', [
    ('distill_from', 'no/such/run', 'not a run directory'),
    ('distill_temperature', 0.0, 'distill_temperature'),
    ('distill_weight', 1.5, 'distill_weight'),
    ('label_smoothing', 0.1, 'label_smoothing'),
])
def test_bad_distillation_and_label_settings_are_user_errors(
    ferplus_files, teacher_dir, tmp_path, setting, value, message):
  config = _tiny_config(ferplus_files, distill_from=teacher_dir)
  config.data.label_mode = 'multi_target'
  config.train[setting] = value
  with pytest.raises(UserError, match=message):
    loop.train(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / rundir.CONFIG)


# ------------------------------------------- init_from a run directory.


def test_init_from_a_run_loads_all_but_a_classifier_of_other_classes(
    ferplus_files, teacher_dir):
  config = _tiny_config(ferplus_files)
  config.data.ferplus_path = ''  # FER2013's 7 classes; the run had FER+'s 8.
  config.model.init_from = teacher_dir
  warm_start.check(config)
  model = models.create('resnet_small', 7, stem_features=8,
                        block_features=(8, 16))
  fresh = model.init(jax.random.key(3), jnp.zeros((1, 48, 48, 1)),
                     train=False)
  params, batch_stats = warm_start.load(config, fresh['params'],
                                        fresh['batch_stats'],
                                        sources.FER2013_CLASSES)
  trained = jax.tree_util.tree_flatten_with_path(inference.load_trained(
      rundir.RunDir(teacher_dir, create=False)).variables)[0]
  trained = {jax.tree_util.keystr(path): value for path, value in trained}
  loaded = jax.tree_util.tree_flatten_with_path(
      {'params': params, 'batch_stats': batch_stats})[0]
  initial = jax.tree.leaves(fresh)
  assert len(loaded) == len(initial) == len(trained)
  kept = []
  for (path, value), fresh_value in zip(loaded, initial):
    name = jax.tree_util.keystr(path)
    if value.shape == trained[name].shape:
      np.testing.assert_array_equal(value, trained[name])
    else:
      np.testing.assert_array_equal(value, fresh_value)
      kept.append(name)
  # The classifier: 7 outputs here, 8 in the run.
  assert kept == ["['params']['Dense_0']['bias']",
                  "['params']['Dense_0']['kernel']"]


def test_init_from_a_run_of_as_many_other_classes_skips_its_classifier(
    ferplus_files, teacher_dir):
  config = _tiny_config(ferplus_files)
  config.model.init_from = teacher_dir
  model = models.create('resnet_small', 8, stem_features=8,
                        block_features=(8, 16))
  fresh = model.init(jax.random.key(3), jnp.zeros((1, 48, 48, 1)),
                     train=False)
  source = inference.load_trained(rundir.RunDir(teacher_dir, create=False))
  for classes, classifier_loaded in ((source.class_names, True),
                                     (source.class_names[::-1], False)):
    params, _ = warm_start.load(config, fresh['params'],
                                fresh['batch_stats'], classes)
    np.testing.assert_array_equal(
        params['Conv_0']['kernel'],
        source.variables['params']['Conv_0']['kernel'])
    expected = source.variables if classifier_loaded else fresh
    np.testing.assert_array_equal(params['Dense_0']['kernel'],
                                  expected['params']['Dense_0']['kernel'])


def test_a_run_starts_from_another_runs_best_checkpoint(
    ferplus_files, teacher_dir, tmp_path, caplog):
  # A learning rate too small to move the weights: the run saves the ones it
  # started from (a fresh initialisation would be far off).
  config = _tiny_config(ferplus_files, learning_rate=1e-12)
  config.model.init_from = teacher_dir
  with caplog.at_level(logging.INFO):
    run, data = loop.train(config, str(tmp_path / 'run'))
  started = inference.load_trained(run).variables['params']
  source = inference.load_trained(rundir.RunDir(teacher_dir, create=False))
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=0,
                                 atol=1e-9),
               started, source.variables['params'])
  total = len(jax.tree.leaves(source.variables))
  assert (f'Loaded {total} of {total} arrays from {teacher_dir}; these keep '
          'their initialisation: none.') in caplog.text
  # Its seed over as many faces: the stream of batches the source trained on.
  assert (f'{teacher_dir} trained with seed 0 on as many images: the first '
          'epochs of this run repeat its faces') in caplog.text
  train_images = len(data.splits['train'])
  assert warm_start.replays_data_stream(config, train_images)
  assert not warm_start.replays_data_stream(config, train_images - 1)
  other_seed = config.copy_and_resolve_references()
  other_seed.seed = 1
  assert not warm_start.replays_data_stream(other_seed, train_images)

  # Provenance: init_from.json names the source checkpoint by its sha256; a
  # run continued from this one records the chain; a release keeps it and
  # its RESULTS.md entry quotes it.
  teacher = rundir.RunDir(teacher_dir, create=False)
  started_from = {'path': os.path.abspath(teacher_dir),
                  'checkpoint_step': teacher.latest_step('best'),
                  'checkpoint_sha256': teacher.checkpoint_sha256('best')}
  assert run.read_json(rundir.INIT_FROM) == started_from
  config.model.init_from = run.path
  assert warm_start.record(config) == {
      'path': run.path, 'checkpoint_step': run.latest_step('best'),
      'checkpoint_sha256': run.checkpoint_sha256('best'),
      'init_from': started_from}
  report.write_report(run, data)
  release.release(run.path, str(tmp_path / 'released'))
  released = rundir.RunDir(str(tmp_path / 'released'), create=False)
  assert released.read_json(rundir.INIT_FROM) == started_from
  entry = test_report.results_entry_module().entry(released, {})
  assert (f'- Started from `{started_from["path"]}` (best checkpoint, step '
          f'{started_from["checkpoint_step"]}, sha256 '
          f'`{started_from["checkpoint_sha256"]}`).') in entry


@pytest.mark.parametrize('setting, value, message', [
    ('model.name', 'mobilenetv2_small', 'is a run of resnet_small, but '
     "config.model.name is 'mobilenetv2_small'"),
    ('data.normalization', 'dataset', "trained with 'symmetric' input "
     'normalisation.*--config.data.normalization=symmetric'),
    # Left out, a field is its default (1): the run's weights would not
    # load into a model of two blocks a stage.
    ('model.blocks_per_stage', 2, r'is a run of another resnet_small: '
     r'blocks_per_stage=1 there, 2 here; set those as in its config\.json'),
])
def test_init_from_a_run_of_another_model_or_input_is_a_user_error(
    ferplus_files, teacher_dir, tmp_path, setting, value, message):
  config = _tiny_config(ferplus_files)
  if setting == 'model.name':  # With that model's own default settings.
    config.model = ml_collections.ConfigDict({'name': value, 'dropout': 0.0})
  else:
    config.update_from_flattened_dict({setting: value})
  config.model.init_from = teacher_dir
  with pytest.raises(UserError, match=message):
    loop.train(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run' / rundir.CONFIG)


def test_init_from_a_run_may_change_its_regularisation(ferplus_files,
                                                      teacher_dir):
  config = _tiny_config(ferplus_files)
  config.model.init_from = teacher_dir
  config.model.dropout = 0.5  # The teacher's is 0.
  warm_start.check(config)


def test_init_from_a_run_of_a_setting_unknown_here_is_a_user_error(
    ferplus_files, teacher_dir, tmp_path):
  # Say a run of a later fer_jax, whose resnet_small has one more field.
  source = rundir.RunDir(str(tmp_path / 'later'))
  trained = rundir.RunDir(teacher_dir, create=False).read_config()
  trained['model']['width_multiplier'] = 2
  source.write_json(rundir.CONFIG, trained)
  config = _tiny_config(ferplus_files)
  config.model.init_from = source.path
  with pytest.raises(UserError, match=r'init_from=.*later.: its config\.json '
                     r'and this run\'s disagree on the model\'s settings: '
                     r'config\.model\.width_multiplier is not a setting'):
    warm_start.check(config)


def test_init_from_a_missing_run_is_a_user_error(ferplus_files, tmp_path):
  config = _tiny_config(ferplus_files)
  config.model.init_from = str(tmp_path / 'no_such_run')
  with pytest.raises(UserError, match="no_such_run' is not a run directory "
                     r'\(no config.json\).*trained resnet_small run'):
    loop.train(config, str(tmp_path / 'run'))


def test_init_from_a_run_without_a_best_checkpoint_is_a_user_error(
    ferplus_files, tmp_path):
  unfinished = rundir.RunDir(str(tmp_path / 'unfinished'))
  unfinished.save_config(_tiny_config(ferplus_files))
  config = _tiny_config(ferplus_files)
  config.model.init_from = unfinished.path
  with pytest.raises(UserError, match='without a best checkpoint'):
    loop.train(config, str(tmp_path / 'run'))
