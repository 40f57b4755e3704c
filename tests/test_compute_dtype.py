"""config.train.compute_dtype: bfloat16 activations, float32 params and loss."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fakedata
from fer_jax import models
from fer_jax.config import default_config
from fer_jax.data import preprocess
from fer_jax.errors import UserError
from fer_jax.train import loop, optim, step

SPEC = preprocess.InputSpec(48, 1, (127.5,), (127.5,))


def _tiny(compute_dtype):
  return models.create('resnet_small', 7, compute_dtype=compute_dtype,
                       stem_features=8, block_features=(8, 16), dropout=0.1)


def test_bfloat16_computes_in_bfloat16_with_float32_params_and_logits():
  model = _tiny('bfloat16')
  assert model.dtype == jnp.bfloat16
  optimizer = optim.create(default_config().train, steps_per_epoch=10)
  state = step.init_state(model, optimizer, SPEC, jax.random.key(0))
  for leaf in jax.tree.leaves((state.params, state.batch_stats,
                               state.opt_state)):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32
  images = SPEC(fakedata.class_images(np.arange(4) % 7))
  logits, inter = model.apply(state.model_variables, images,
                              mutable=['intermediates'])
  assert logits.dtype == jnp.float32
  assert inter['intermediates']['pre_logits'][0].dtype == jnp.bfloat16
  # Close to the float32 model with the same parameters.
  reference = _tiny('float32').apply(state.model_variables, images)
  np.testing.assert_allclose(logits, reference, atol=0.1, rtol=0.05)

  labels = np.arange(28) % 7
  batch = {'image': fakedata.class_images(labels),
           'label': labels.astype(np.int32)}
  train_step = jax.jit(step.make_train_step(model, optimizer, SPEC,
                                            np.ones(7, np.float32), 0.0))
  losses = []
  for _ in range(10):
    state, metrics = train_step(state, batch, jax.random.key(1))
    losses.append(float(metrics['loss']))
  assert jax.tree.leaves(state.params)[0].dtype == jnp.float32
  assert losses[-1] < 0.8 * losses[0], losses


def test_unknown_compute_dtype_names_the_knob():
  with pytest.raises(UserError, match=r"config\.train\.compute_dtype='fp8'"):
    models.create('resnet_small', 7, compute_dtype='fp8')


def test_model_without_dtype_field_is_a_user_error(monkeypatch):

  class Float32Only(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, train=False):
      return nn.Dense(self.num_classes)(x.reshape(x.shape[0], -1))

  monkeypatch.setitem(models.MODELS, 'float32_only', Float32Only)
  assert isinstance(models.create('float32_only', 7), Float32Only)
  with pytest.raises(UserError, match='float32_only has no dtype field'):
    models.create('float32_only', 7, compute_dtype='bfloat16')


def test_dtype_is_not_a_config_model_setting():
  with pytest.raises(UserError, match='config.train.compute_dtype'):
    models.create('resnet_small', 7, dtype='bfloat16')


def test_loop_trains_with_device_augmentation_in_bfloat16(tmp_path,
                                                         monkeypatch):
  """The loop wiring: Grain hands over plain uint8 batches, the step
  augments them and the model computes in bfloat16; bad knobs fail early."""
  built = []

  def recording_make_train_step(model, optimizer, spec, weights, smoothing,
                                augment_settings=None, **settings):
    built.append((model.dtype, augment_settings))
    return make_train_step(model, optimizer, spec, weights, smoothing,
                           augment_settings, **settings)

  make_train_step = step.make_train_step
  monkeypatch.setattr(step, 'make_train_step', recording_make_train_step)
  csv_path = str(tmp_path / 'fer2013.csv')
  fakedata.write_challenge_csv(csv_path, per_class=(12, 4, 4))
  config = default_config()
  config.data.path = csv_path
  config.data.augment.update(where='device', brightness=0.1, contrast=0.1)
  config.model.update(stem_features=8, block_features=(8, 16))
  config.train.update(batch_size=16, epochs=2, eval_batch_size=32,
                      compute_dtype='bfloat16')
  run, _ = loop.train(config, str(tmp_path / 'run'))
  records = run.read_metrics()
  assert [r['epoch'] for r in records] == [1, 2]
  assert all(np.isfinite(r['train/loss']) for r in records)
  (dtype, augment_settings), = built
  assert dtype == jnp.bfloat16
  assert augment_settings is not None
  config.data.augment.where = 'tpu'
  with pytest.raises(UserError, match=r'config\.data\.augment\.where'):
    loop.train(config, str(tmp_path / 'other'))
