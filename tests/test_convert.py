"""The ImageNet ports against torchvision, weight conversion and init_from.

The torchvision comparisons need the `torch` extra and skip without it.
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fakedata
from fer_jax import convert, inference, models, rundir, sweeps
from fer_jax.config import default_config
from fer_jax.errors import UserError
from fer_jax.models import heads, vgg
from fer_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('name, num_params', [
    ('vgg16', 138_357_544), ('resnet18', 11_689_512),
    ('resnet50', 25_557_032), ('mobilenet_v2', 3_504_872)])
def test_parameter_counts_match_torchvision(name, num_params):
  model = models.create(name, 1000)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x),
      jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  assert models.count_params(variables['params']) == num_params


@pytest.mark.parametrize('size', [7, 9, 14, 20])
def test_adaptive_pool_bins_match_torch_rule(size):
  x = np.random.default_rng(0).normal(size=(2, size, size + 1, 3))
  pooled = np.asarray(vgg.adaptive_avg_pool(jnp.asarray(x), 7))
  for i in range(7):
    for j in range(7):
      rows = slice(i * size // 7, -(-(i + 1) * size // 7))
      cols = slice(j * (size + 1) // 7, -(-(j + 1) * (size + 1) // 7))
      np.testing.assert_allclose(pooled[:, i, j],
                                 x[:, rows, cols].mean(axis=(1, 2)),
                                 rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name', ['vgg16', 'resnet18', 'mobilenet_v2'])
@pytest.mark.parametrize('head', heads.HEADS[1:])
def test_study_heads_give_logits_and_pre_logits(name, head):
  model = models.create(name, 7, head=head, dropout=0.5)
  x = jnp.ones((2, 64, 64, 3))
  variables = model.init(jax.random.key(0), x)
  assert 'head' in variables['params']
  logits, state = model.apply(variables, x, train=True,
                              rngs={'dropout': jax.random.key(1)},
                              mutable=['intermediates', 'batch_stats'])
  assert logits.shape == (2, 7)
  (pre_logits,) = state['intermediates']['pre_logits']
  assert pre_logits.shape == (2, 128 if head == 'dense128' else 256)


def test_unknown_head_lists_the_choices():
  model = models.create('resnet18', 7, head='gap')
  with pytest.raises(UserError, match='dense128'):
    model.init(jax.random.key(0), jnp.ones((1, 32, 32, 3)))


def test_missing_weights_file_says_how_to_get_it(tmp_path):
  with pytest.raises(UserError, match=r"vgg16\(weights='IMAGENET1K_V1'\).*"
                     r'fer_jax.convert --arch=vgg16'):
    convert.read_torch_state_dict(str(tmp_path / 'vgg16.pth'), 'vgg16')
  with pytest.raises(UserError, match=r'init_from=.*holds no converted '
                     r'weights.*torch.save\(torchvision.models.resnet18'):
    convert.load(str(tmp_path), 'resnet18')


def test_convert_cli_missing_file_is_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'fer_jax.convert', '--arch=resnet18',
       f'--src={tmp_path / "nope.pth"}', f'--out={tmp_path / "out"}'],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert result.returncode == 2, result.stderr
  assert result.stderr.count('\n') == 1
  assert 'IMAGENET1K_V1' in result.stderr


# ------------------------------------------- Against torchvision (needs torch).


def _torch_reference(name):
  torch = pytest.importorskip('torch')
  torchvision = pytest.importorskip('torchvision')
  torch.manual_seed(0)
  reference = getattr(torchvision.models, name)(weights=None)
  # Random BatchNorm statistics and affine parameters, so that eval-mode BN
  # (and its mapping) is really exercised.
  for module in reference.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      with torch.no_grad():
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 2.0)
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
  return torch, reference.eval()


@pytest.mark.parametrize('name, size', [
    ('resnet18', 64), ('resnet50', 64), ('vgg16', 112),
    ('mobilenet_v2', 64)])
def test_converted_port_matches_torchvision(name, size, tmp_path):
  torch, reference = _torch_reference(name)
  src = str(tmp_path / f'{name}.pth')
  torch.save(reference.state_dict(), src)
  x = np.random.default_rng(0).normal(size=(2, 3, size, size))
  with torch.no_grad():
    expected = reference(torch.from_numpy(x).float()).numpy()
  del reference

  out = str(tmp_path / 'converted')
  variables = convert.from_torchvision(
      name, convert.read_torch_state_dict(src, name))
  convert.save(out, variables, {'arch': name, 'source': src})
  variables = convert.load(out, name)
  logits = models.create(name, 1000).apply(
      variables, jnp.asarray(x.transpose(0, 2, 3, 1), jnp.float32))
  assert logits.shape == (2, 1000)
  difference = float(np.max(np.abs(np.asarray(logits) - expected)))
  print(f'{name}: max |logit difference| {difference:.2e}, '
        f'max |logit| {np.abs(expected).max():.2f}')
  # 1e-4, relative to the logits' scale where it is above 1 (resnet50's
  # random BatchNorm statistics give logits of ~50).
  assert difference < 1e-4 * max(1.0, float(np.abs(expected).max()))


def test_wrong_architecture_state_dict_names_the_mismatch(tmp_path):
  torch, reference = _torch_reference('resnet18')
  src = str(tmp_path / 'resnet18.pth')
  torch.save(reference.state_dict(), src)
  with pytest.raises(UserError, match='not a torchvision resnet50 one.*'
                     'missing: .*IMAGENET1K_V1'):
    convert.from_torchvision('resnet50',
                             convert.read_torch_state_dict(src, 'resnet50'))


# ------------------------------------------------------ init_from in a run.


def _tiny_run_config(data_path, **model):
  config = default_config()
  config.data.path = data_path
  config.data.update(image_size=32, channels=3, normalization='imagenet')
  config.model.name = 'resnet18'
  config.model.update(model)
  config.train.update(batch_size=16, epochs=1, learning_rate=1e-3,
                      eval_batch_size=32)
  return config


def test_resnet18_trains_from_converted_weights(tmp_path):
  data_path = str(tmp_path / 'fer2013.csv')
  fakedata.write_challenge_csv(data_path, per_class=(12, 4, 4))
  # Stand-in converted weights (the torchvision tests check the real path):
  # a 1000-class resnet18 with its own random init.
  imagenet = models.create('resnet18', 1000).init(
      jax.random.key(42), jnp.zeros((1, 32, 32, 3)))
  weights = str(tmp_path / 'weights')
  convert.save(weights, jax.tree.map(np.asarray, imagenet),
               {'arch': 'resnet18', 'source': 'test'})

  run, _ = loop.train(_tiny_run_config(data_path, init_from=weights),
                      str(tmp_path / 'run'))
  (record,) = run.read_metrics()
  assert record['step'] == 84 // 16 and np.isfinite(record['train/loss'])
  trained = inference.load_trained(run).variables['params']
  # Loaded: 5 Adam steps of 1e-3 away from the converted backbone ...
  assert np.abs(trained['conv1']['kernel']
                - imagenet['params']['conv1']['kernel']).max() < 0.02
  # ... while the classifier is new, for the 7 FER classes.
  assert trained['fc']['kernel'].shape == (512, 7)


def test_init_from_of_another_architecture_fails_before_training(tmp_path):
  weights = str(tmp_path / 'weights')
  convert.save(weights, {'params': {}}, {'arch': 'vgg16', 'source': 'test'})
  config = _tiny_run_config(str(tmp_path / 'absent.csv'), init_from=weights)
  with pytest.raises(UserError, match="holds vgg16 weights, but "
                     "config.model.name is 'resnet18'"):
    loop.train(config, str(tmp_path / 'run'))


@pytest.mark.parametrize('name', ['vgg16', 'resnet18', 'resnet50',
                                  'mobilenet_v2'])
def test_config_builds_its_model(name):
  config = sweeps.load_config(os.path.join(ROOT, 'configs', f'{name}.py'))
  settings = rundir.as_json(config)['model']  # As a run reads it back.
  assert settings.pop('name') == name
  model = models.create(name, 7, **settings)
  size = config.data.image_size
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x),
      jax.ShapeDtypeStruct((1, size, size, config.data.channels), jnp.float32))
  assert 'head' in variables['params']


def test_convert_cli_writes_what_init_from_reads(tmp_path):
  torch, reference = _torch_reference('resnet18')
  src = str(tmp_path / 'resnet18.pth')
  torch.save(reference.state_dict(), src)
  out = str(tmp_path / 'weights')
  result = subprocess.run(
      [sys.executable, '-m', 'fer_jax.convert', '--arch=resnet18',
       f'--src={src}', f'--out={out}'],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert '11,689,512 parameters' in result.stdout
  assert json.load(open(os.path.join(out, convert.META)))['arch'] == 'resnet18'
  model = models.create('resnet18', 7, head='dense128')
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  params, batch_stats = convert.init_from(out, 'resnet18', variables['params'],
                                          variables['batch_stats'])
  np.testing.assert_array_equal(
      params['layer4_1']['conv2']['kernel'],
      reference.layer4[1].conv2.weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(batch_stats['bn1']['var'],
                                reference.bn1.running_var.numpy())
  assert params['head']['dense']['kernel'].shape == (512, 128)  # Fresh.
