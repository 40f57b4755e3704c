import dataclasses
import json
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


def test_resnet_small_v2_is_twice_as_deep_under_500k_and_fewer_flops():
  """configs/resnet_small_v2.py: 13 convolutions (resnet_small's 5, not
  counting projections), under 500k parameters, fewer FLOPs."""
  configured = sweeps.load_config(os.path.join(ROOT, 'configs',
                                               'resnet_small_v2.py')).model
  settings = rundir.as_json(configured)
  del settings['name'], settings['init_from']
  deeper, reference = (models.create('resnet_small', 7, **kwargs)
                       for kwargs in (settings, {}))

  def convolutions_params_and_flops(model):
    variables = models.variable_shapes(model, (1, 48, 48, 1))
    kernels = [path for path, x in
               jax.tree_util.tree_flatten_with_path(variables['params'])[0]
               if x.ndim == 4 and 'projection' not in jax.tree_util.keystr(
                   path)]
    flops = jax.jit(functools.partial(model.apply, train=False)).lower(
        variables, jax.ShapeDtypeStruct((1, 48, 48, 1), jnp.float32)
    ).cost_analysis()['flops']
    return len(kernels), models.count_params(variables['params']), flops

  (deep_convs, deep_params, deep_flops), (convs, params, flops) = map(
      convolutions_params_and_flops, (deeper, reference))
  assert (convs, params) == (5, 417_287)
  assert deep_convs == 13 and deep_params == 481_127
  assert deep_flops < 0.8 * flops


def test_resnet_small_outputs_logits_and_pre_logits():
  model = models.create('resnet_small', 5, dropout=0.2, pooling='gap')
  variables = _init(model)
  logits, state = _apply(model, mutable=['intermediates'])(
      variables, jnp.ones((3, 48, 48, 1)))
  assert logits.shape == (3, 5)
  (pre_logits,) = state['intermediates']['pre_logits']
  assert pre_logits.shape == (3, 128)


@pytest.mark.parametrize('name', ['resnet_small', 'mobilenetv2_small',
                                  'vgg_fer'])
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


@pytest.mark.parametrize('config_name', ['mobilenetv2_small', 'vgg_fer'])
def test_config_lists_every_setting_at_the_model_defaults(config_name):
  config = sweeps.load_config(os.path.join(ROOT, 'configs',
                                           f'{config_name}.py'))
  settings = rundir.as_json(config)['model']  # As a run reads it back.
  name = settings.pop('name')
  assert settings.pop('init_from') == ''  # The run's, not a model field.
  fields = {f.name for f in dataclasses.fields(models.MODELS[name])}
  assert set(settings) == fields - {'num_classes', 'parent', 'name', 'dtype'}
  # Each value too, also those that change no shape (dropout, strides).
  defaults = {f.name: f.default for f in dataclasses.fields(models.MODELS[name])
              if f.name in settings}
  assert settings == json.loads(json.dumps(defaults))  # Tuples as lists.
  shape = (1, 48, 48, 1)
  configured = models.variable_shapes(models.create(name, 7, **settings),
                                      shape)
  default = models.variable_shapes(models.create(name, 7), shape)
  assert jax.tree.map(lambda x: x.shape, configured) == jax.tree.map(
      lambda x: x.shape, default)


def test_vgg_fer_matches_khaireddin_and_chen():
  """Their VGGNet's layers at 48x48 (the docstring's parameter count): four
  stages of two 3x3 convolutions, two 4096-unit dense layers."""
  model = models.create('vgg_fer', 7)
  shapes = models.variable_shapes(model, (1, 48, 48, 1))['params']
  assert models.count_params(shapes) == 40_374_599
  kernels = [shapes[f'Conv_{i}']['kernel'].shape for i in range(8)]
  assert [k[-1] for k in kernels] == [64, 64, 128, 128, 256, 256, 512, 512]
  assert all(k[:2] == (3, 3) for k in kernels)
  assert shapes['Dense_0']['kernel'].shape == (3 * 3 * 512, 4096)
  assert shapes['Dense_2']['kernel'].shape == (4096, 7)


def test_vgg_fer_outputs_logits_and_pre_logits_and_trains():
  # Narrow, so that it is quick on a CPU; the same layers in the same order.
  model = models.create('vgg_fer', 7, stage_features=(8, 8, 16, 16),
                        hidden_units=(32, 32), dropout=0.0)
  variables = _init(model)
  logits, state = _apply(model, mutable=['intermediates'])(
      variables, jnp.ones((3, 48, 48, 1)))
  assert logits.shape == (3, 7) and logits.dtype == jnp.float32
  (pre_logits,) = state['intermediates']['pre_logits']
  assert pre_logits.shape == (3, 32)
  _assert_fits_a_batch(model, optimizer='sgd', nesterov=True,
                       learning_rate=0.05)


def _assert_fits_a_batch(model, **train_settings):
  """15 steps on one synthetic batch cut the loss by 30%."""
  train_config = default_config().train
  train_config.update(schedule='constant', **train_settings)
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


def test_mobilenetv2_small_trains():
  # Narrow, so that it is quick on a CPU; every kind of block is still there.
  model = models.create('mobilenetv2_small', 7, stem_features=8,
                        stages=((1, 8, 1, 1), (6, 16, 1, 2), (6, 16, 2, 2)),
                        head_features=32, dropout=0.0)
  _assert_fits_a_batch(model, learning_rate=1e-2)


def test_mobilenetv2_small_computes_in_bfloat16_with_float32_params():
  model = models.create('mobilenetv2_small', 7, compute_dtype='bfloat16')
  variables = _init(model)
  assert all(leaf.dtype == jnp.float32
             for leaf in jax.tree.leaves(variables['params']))
  logits, state = _apply(model, mutable=['intermediates'])(
      variables, jnp.ones((2, 48, 48, 1)))
  assert logits.dtype == jnp.float32
  assert state['intermediates']['pre_logits'][0].dtype == jnp.bfloat16
