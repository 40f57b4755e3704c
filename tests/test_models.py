import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fakedata
from fer_jax import models, rundir, sweeps
from fer_jax.config import default_config
from fer_jax.data import preprocess
from fer_jax.errors import UserError
from fer_jax.train import optim, step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = preprocess.InputSpec(48, 1, (127.5,), (127.5,))


# Jitted: eagerly, each of a model's ops compiles on its own (mobilenetv2_small
# 4x slower).
def _init(model, size=48, channels=1):
  return jax.jit(model.init)(jax.random.key(0),
                             jnp.zeros((2, size, size, channels)))


def _apply(model, **static):
  """`model.apply` with `static` (train, mutable) fixed, jitted."""
  return jax.jit(functools.partial(model.apply, **static))


def test_resnet_small_parameter_count_matches_reference_study():
  variables = _init(models.create('resnet_small', 7))
  num_params = sum(x.size for x in jax.tree.leaves(variables['params']))
  assert num_params < 500_000
  assert abs(num_params - 418_000) < 5_000  # The study's ~418k.


def test_resnet_small_outputs_logits_and_pre_logits():
  model = models.create('resnet_small', 5, dropout=0.2, pooling='gap')
  variables = _init(model)
  logits, state = _apply(model, mutable=['intermediates'])(
      variables, jnp.ones((3, 48, 48, 1)))
  assert logits.shape == (3, 5)
  (pre_logits,) = state['intermediates']['pre_logits']
  assert pre_logits.shape == (3, 128)


@pytest.mark.parametrize('name', ['resnet_small', 'mobilenetv2_small'])
def test_dropout_is_active_only_in_training(name):
  model = models.create(name, 7, dropout=0.5)
  variables = _init(model)
  x = jax.random.uniform(jax.random.key(1), (2, 48, 48, 1))
  evaluate = _apply(model)
  eval_a, eval_b = evaluate(variables, x), evaluate(variables, x)
  train = _apply(model, train=True, mutable=['batch_stats'])
  train_a, _ = train(variables, x, rngs={'dropout': jax.random.key(2)})
  train_b, _ = train(variables, x, rngs={'dropout': jax.random.key(3)})
  assert jnp.array_equal(eval_a, eval_b)
  assert not jnp.allclose(train_a, train_b)


def test_unknown_model_lists_the_choices():
  with pytest.raises(UserError, match='resnet_small'):
    models.create('resnet_smal', 7)


def test_unknown_model_setting_names_it():
  with pytest.raises(UserError, match='config.model.widht'):
    models.create('resnet_small', 7, widht=3)


def test_mobilenetv2_small_parameter_count_matches_reference_study():
  variables = _init(models.create('mobilenetv2_small', 7))
  num_params = models.count_params(variables['params'])
  assert 125_000 <= num_params <= 135_000  # The study's ~130k.


@pytest.mark.parametrize('train', [False, True])
def test_mobilenetv2_small_outputs_logits_and_pre_logits(train):
  model = models.create('mobilenetv2_small', 5)
  variables = _init(model)
  logits, state = _apply(model, train=train,
                         mutable=['intermediates', 'batch_stats'])(
      variables, jnp.ones((3, 48, 48, 1)), rngs={'dropout': jax.random.key(1)})
  assert logits.shape == (3, 5)
  (pre_logits,) = state['intermediates']['pre_logits']
  assert pre_logits.shape == (3, 128)


def test_mobilenetv2_small_config_lists_every_setting():
  config = sweeps.load_config(os.path.join(ROOT, 'configs',
                                           'mobilenetv2_small.py'))
  settings = rundir.as_json(config)['model']  # As a run reads it back.
  name = settings.pop('name')
  assert settings.pop('init_from') == ''  # The run's, not a model field.
  fields = {f.name for f in dataclasses.fields(models.MODELS[name])}
  assert set(settings) == fields - {'num_classes', 'parent', 'name', 'dtype'}
  variables = _init(models.create(name, 7, **settings))
  assert models.count_params(variables['params']) == models.count_params(
      _init(models.create(name, 7))['params'])


def test_mobilenetv2_small_trains():
  # Narrow, so that it is quick on a CPU; every kind of block is still there.
  model = models.create('mobilenetv2_small', 7, stem_features=8,
                        stages=((1, 8, 1, 1), (6, 16, 1, 2), (6, 16, 2, 2)),
                        head_features=32, dropout=0.0)
  train_config = default_config().train
  train_config.update(learning_rate=1e-2, schedule='constant')
  optimizer = optim.create(train_config, steps_per_epoch=10)
  state = step.init_state(model, optimizer, SPEC, jax.random.key(0))
  train_step = jax.jit(step.make_train_step(model, optimizer, SPEC,
                                            np.ones(7, np.float32), 0.0))
  labels = np.arange(28) % 7
  batch = {'image': fakedata.class_images(labels),
           'label': labels.astype(np.int32)}
  losses = []
  for _ in range(15):
    state, metrics = train_step(state, batch, jax.random.key(1))
    losses.append(float(metrics['loss']))
  assert losses[-1] < 0.7 * losses[0], losses


def test_mobilenetv2_small_computes_in_bfloat16_with_float32_params():
  model = models.create('mobilenetv2_small', 7, compute_dtype='bfloat16')
  variables = _init(model)
  assert all(leaf.dtype == jnp.float32
             for leaf in jax.tree.leaves(variables['params']))
  logits, state = _apply(model, mutable=['intermediates'])(
      variables, jnp.ones((2, 48, 48, 1)))
  assert logits.dtype == jnp.float32
  assert state['intermediates']['pre_logits'][0].dtype == jnp.bfloat16
