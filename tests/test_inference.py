"""Batched forward passes, ten-crop test-time augmentation, evaluation."""

import pathlib
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import inference, models, rundir
from fer_jax.config import default_config
from fer_jax.data import preprocess
from fer_jax.errors import UserError
from fer_jax.predict import predictor

SPEC = preprocess.InputSpec(48, 1, (127.5,), (127.5,))


def _model():
  model = models.create('resnet_small', 7, stem_features=8,
                        block_features=(8, 16))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 48, 48, 1)))
  return model, variables


def _images(n, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), np.uint8)


def test_batched_logits_pad_without_changing_results():
  model, variables = _model()
  logits_fn = inference.make_logits_fn(model, SPEC)
  images = _images(17)
  batched = inference.batched_logits(logits_fn, variables, images, 8)
  one_by_one = np.concatenate([logits_fn(variables, images[i:i + 1])
                               for i in range(17)])
  assert batched.shape == (17, 7)
  np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
  assert logits_fn._cache_size() == 2  # Batch 8 and batch 1, nothing else.


def test_fewer_images_than_a_batch_pad_to_a_power_of_two():
  """A split of 5 faces runs as a batch of 8, not of the 512 asked for."""
  shapes = []
  logits_fn = lambda variables, images: shapes.append(images.shape) or (
      np.zeros((len(images), 7), np.float32))
  for count in (5, 8, 1, 600):
    logits = inference.batched_logits(logits_fn, None, _images(count), 512)
    assert logits.shape == (count, 7)
  assert [shape[0] for shape in shapes] == [8, 8, 1, 512, 512]


def test_ten_crops_are_corners_centre_and_mirrors():
  images = jnp.arange(48 * 48, dtype=jnp.float32).reshape(1, 48, 48)
  crops = inference.ten_crops(images, 0.5)
  assert crops.shape == (10, 1, 48, 48)
  # Top-left 24x24 crop, upsampled x2: its top-left pixel is the image's.
  assert np.isclose(crops[0, 0, 0, 0], images[0, 0, 0])
  np.testing.assert_allclose(crops[1], crops[0][:, :, ::-1])
  # Each crop holds its corner of the image; the centre one starts at 12.
  assert np.isclose(crops[2, 0, 0, -1], images[0, 0, -1])  # Top-right.
  assert np.isclose(crops[4, 0, -1, 0], images[0, -1, 0])  # Bottom-left.
  assert np.isclose(crops[6, 0, -1, -1], images[0, -1, -1])  # Bottom-right.
  assert np.isclose(crops[8, 0, 0, 0], images[0, 12, 12])  # Centre.
  for corner in (2, 4, 6, 8):
    np.testing.assert_allclose(crops[corner + 1], crops[corner][:, :, ::-1])


def test_ten_crop_returns_log_mean_probabilities():
  model, variables = _model()
  images = _images(3)
  logits = inference.make_logits_fn(model, SPEC, ten_crop=True)(
      variables, images)
  np.testing.assert_allclose(np.exp(logits).sum(axis=1), 1.0, rtol=1e-5)
  # The mean of the ten crops' probabilities, one crop at a time.
  probabilities = [
      jax.nn.softmax(model.apply(variables, SPEC(crop), train=False))
      for crop in inference.ten_crops(images, 44 / 48)]
  np.testing.assert_allclose(logits, np.log(np.mean(probabilities, axis=0)),
                             rtol=1e-5, atol=1e-6)


class _Certain(nn.Module):
  """Logits 0 and -1000 for every face: class 1's probability underflows
  to 0 in float32."""

  @nn.compact
  def __call__(self, images, train=False):
    return jnp.zeros((len(images), 2)) + jnp.array([0.0, -1000.0])


def test_ten_crop_log_probabilities_stay_finite():
  logits = inference.make_logits_fn(_Certain(), SPEC, ten_crop=True)(
      {}, _images(2))
  np.testing.assert_allclose(logits, [[0.0, -1000.0]] * 2, rtol=1e-6)


def test_evaluate_reports_loss_and_metrics():
  model, variables = _model()
  logits_fn = inference.make_logits_fn(model, SPEC)
  labels = np.arange(14) % 7
  result = inference.evaluate(logits_fn, variables, _images(14), labels,
                              tuple('abcdefg'), 8)
  logits = inference.batched_logits(logits_fn, variables, _images(14), 8)
  expected = -np.mean(jax.nn.log_softmax(logits)[np.arange(14), labels])
  assert np.isclose(result['loss'], expected, rtol=1e-5)
  assert np.isclose(result['accuracy'],
                    np.mean(logits.argmax(1) == labels))


def test_forward_mflops_counts_a_convolution_exactly():
  class OneConvolution(nn.Module):

    @nn.compact
    def __call__(self, x):
      return nn.Conv(4, (3, 3), padding='VALID', use_bias=False)(x[..., None])

  model = OneConvolution()
  image = np.zeros((1, 8, 8), np.float32)
  variables = model.init(jax.random.key(0), image)
  # A multiply-add per output pixel (6 x 6), channel and kernel tap.
  expected = 2 * 6 * 6 * 4 * 3 * 3 / 1e6
  assert inference.forward_mflops(jax.jit(model.apply), variables,
                                  image) == expected


def test_a_run_stopped_before_loading_its_data_is_named(tmp_path):
  # Killed before its first epoch: config.json, but no dataset.json.
  run = rundir.RunDir(str(tmp_path / 'stopped'))
  run.save_config(default_config())
  with pytest.raises(UserError) as error:
    inference.load_trained(run)
  message = str(error.value)
  assert f'{run.path} has no dataset.json' in message
  assert f'python -m fer_jax.main --workdir={run.path}' in message


def damage(run, kind, step):
  """Empties the array files of checkpoint `kind`/`step`, as a kill while
  writing or a full disk leaves them."""
  for data_file in pathlib.Path(run.checkpoint_dir(kind, step)).glob(
      'model/**/d/*'):
    data_file.write_bytes(b'')


def test_a_damaged_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
  run = rundir.RunDir(str(tmp_path / 'run'))
  for step in (1, 2):
    run.save('latest', step, loop={'epoch': step},
             model={'params': {'w': np.full(3, step, np.float32)}})
  run.wait_until_finished()
  template = {'params': {'w': jax.ShapeDtypeStruct((3,), np.float32)}}
  damage(run, 'latest', 2)
  restored = run.restore('latest', model=template)
  assert restored['step'] == 1 and restored['loop'] == {'epoch': 1}
  np.testing.assert_array_equal(restored['model']['params']['w'], [1, 1, 1])
  assert 'Checkpoint latest/2 is unreadable' in caplog.text
  # The file that failed, without TensorStore's specs.
  assert 'local file' in caplog.text
  assert 'tensorstore_spec' not in caplog.text
  damage(run, 'latest', 1)
  with pytest.raises(UserError) as error:
    run.restore('latest', model=template)
  # Training can start again; its resume offers that.
  assert str(error.value) == (
      f'No readable latest checkpoint in {run.path} (tried steps [2, 1]); '
      f'delete {run.path}/checkpoints to start afresh.')


def test_a_damaged_model_to_evaluate_asks_for_another_not_to_delete_it(
    tmp_path):
  # The packaged model, say, damaged in site-packages: deleting its
  # checkpoints, training's remedy, would leave no model at all.
  copy = shutil.copytree(predictor.PRETRAINED_DIR, tmp_path / 'pretrained')
  run = rundir.RunDir(str(copy), create=False)
  damage(run, 'best', run.latest_step('best'))
  with pytest.raises(UserError) as error:
    inference.load_trained(run)
  message = str(error.value)
  assert f'No readable best checkpoint in {run.path}' in message
  assert 'train the run again, or give another run' in message
  assert 'reinstall fer_jax' in message and 'delete' not in message
