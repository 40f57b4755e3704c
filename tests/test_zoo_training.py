"""Every model of the zoo trains from its own config, as `fer_jax.main` runs
it (loop.train, then the report), on a tiny synthetic FER2013 at 32x32 (here
or, NOT_TRAINED, in another test); one ImageNet port starts from converted
weights (`config.model.init_from`)."""

import hashlib
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import fakedata
from fer_jax import convert, inference, models, rundir, sweeps
from fer_jax.evaluate import report
from fer_jax.predict import predictor
from fer_jax.train import loop, warm_start

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PER_CLASS = (2, 1, 1)  # Training, PublicTest, PrivateTest images per class.
BATCH_SIZE = 7
IMAGE_SIZE = 32  # The ImageNet ports downsample by 32.
# Started from stand-in converted weights; tests/test_convert.py checks the
# real conversion of every port (and init_from of resnet18 and swin_tiny).
INIT_FROM = ('resnet18',)
# Trained from their configs elsewhere, or through a sibling here (each one
# 30-50 s of the suite's CPU time):
NOT_TRAINED = (
    # resnet18's code with bottleneck blocks, which tests/test_convert.py
    # checks against torchvision.
    'resnet50',
    # Trained by tests/test_resume.py and tests/test_distributed.py as
    # `python -m fer_jax.main --config=configs/resnet_small.py ...`.
    'resnet_small',
    # tests/test_models.py builds it from its config and trains a narrower
    # one.
    'mobilenetv2_small',
    # As expensive as swin_tiny (49 s, 83 s with a cold compilation cache:
    # tracing and compiling 17 blocks of shifted depthwise products). Its
    # config is imagenet_port_config like resnet18's; tests/test_convert.py
    # checks its port against torchvision and traces its train mode
    # (dropout, batch statistics) with each head; tests/test_depthwise.py
    # checks the gradients of its depthwise convolutions.
    'mobilenet_v2',
    # The same reasons (37-56 s in the suite, 33 s alone: its 16 blocks of
    # depthwise products take 17 s to trace and compile the train step at
    # the tests' compile settings), and its config is imagenet_port_config
    # too. tests/test_convert.py checks its port against torchvision and
    # traces its train mode with each head.
    'shufflenet_v2',
    # The most expensive here (50 s); tests/test_convert.py checks its port
    # against timm, init_from, its phase groups and its train mode (drop
    # path), tests/test_train_step.py its config's weight-decay mask.
    'swin_tiny',
)


@pytest.fixture(scope='module')
def csv_path(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('data') / 'fer2013.csv')
  fakedata.write_challenge_csv(path, per_class=PER_CLASS)
  return path


def test_every_model_has_a_config():
  configs = {name.removesuffix('.py')
             for name in os.listdir(os.path.join(ROOT, 'configs'))}
  assert set(models.MODELS) <= configs


def test_ferplus_config_fits_the_shipped_model():
  """configs/resnet_small_ferplus.py fine-tunes fer_jax/pretrained: same
  model settings, so every array but the classifier loads
  (tests/test_real_data.py trains it on the real votes)."""
  config = sweeps.load_config(os.path.join(ROOT, 'configs',
                                           'resnet_small_ferplus.py'))
  assert config.model.init_from == predictor.PRETRAINED_DIR
  warm_start.check(config)  # Its model, its normalisation, a checkpoint.
  shipped = rundir.RunDir(predictor.PRETRAINED_DIR, create=False)
  settings = [dict(rundir.as_json(c)['model'], init_from=None)
              for c in (config, shipped.load_config())]
  assert settings[0] == settings[1]


def _stand_in_imagenet_weights(config, out: str) -> dict:
  """Saves what `python -m fer_jax.convert` writes, for a 1000-class model
  with its own random init (tests/test_convert.py checks real conversions);
  returns its flat params."""
  settings = rundir.as_json(config)['model']
  name = settings.pop('name')
  model = models.create(name, 1000, **settings)
  variables = jax.jit(model.init)(  # Jitted: eager init compiles op by op.
      jax.random.key(42), jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE,
                                     config.data.channels)))
  variables = jax.tree.map(np.asarray, variables)
  convert.save(out, variables, {'arch': name, 'source': 'test',
                                'normalization': config.data.normalization})
  return traverse_util.flatten_dict(variables['params'])


@pytest.mark.parametrize('name', sorted(set(models.MODELS) - set(NOT_TRAINED)))
def test_model_trains_from_its_config_and_reports(name, csv_path, tmp_path,
                                                  capsys):
  config = sweeps.load_config(os.path.join(ROOT, 'configs', f'{name}.py'))
  config.data.path = csv_path
  config.data.image_size = IMAGE_SIZE
  config.train.update(epochs=1, batch_size=BATCH_SIZE,
                      eval_batch_size=2 * BATCH_SIZE)
  if name in INIT_FROM:
    config.model.init_from = str(tmp_path / 'imagenet')
    imagenet = _stand_in_imagenet_weights(config, config.model.init_from)

  run, data = loop.train(config, str(tmp_path / 'run'))
  result = report.write_report(run, data)

  printed = capsys.readouterr().out
  match = re.search(rf'^{name}: ([\d,]+) parameters, ([\d,.]+) MFLOPs per '
                    'image$', printed, re.MULTILINE)
  assert match, printed
  trained = traverse_util.flatten_dict(
      inference.load_trained(run).variables['params'])
  assert int(match[1].replace(',', '')) == sum(x.size for x in
                                               trained.values())
  assert float(match[2].replace(',', '')) > 0
  (record,) = run.read_metrics()  # One epoch.
  assert record['step'] == 7 * PER_CLASS[0] // BATCH_SIZE
  assert np.isfinite(record['train/loss'])
  for split in ('val', 'test'):
    assert 0.0 <= result[split]['accuracy'] <= 1.0
  if name in INIT_FROM:
    # Two small steps away from the converted backbone (a fresh init would
    # be far off) ...
    loaded = [key for key in trained if key in imagenet
              and imagenet[key].shape == trained[key].shape]
    assert len(loaded) >= len(trained) - 4
    for key in loaded:
      np.testing.assert_allclose(trained[key], imagenet[key], atol=0.01,
                                 err_msg='/'.join(key))
    # ... while the classifier is new, for the 7 FER classes.
    assert any(value.shape[-1] == 7 for value in trained.values())
    variables_file = os.path.join(config.model.init_from, convert.VARIABLES)
    assert run.read_json(rundir.INIT_FROM) == {
        'path': config.model.init_from,
        'variables_sha256': hashlib.sha256(
            open(variables_file, 'rb').read()).hexdigest(),
        'converted': {'arch': name, 'source': 'test',
                      'normalization': config.data.normalization}}
