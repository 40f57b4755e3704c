"""The ImageNet ports against torchvision, weight conversion and init_from.

The torchvision (and timm, for swin_tiny) comparisons need the `torch`
extra and skip without it; the Keras .h5 ones need h5py (and keras for the
reference: the `keras` extra).
"""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fer_jax import convert, models, rundir, sweeps
from fer_jax.config import default_config
from fer_jax.convert import timm_swin
from fer_jax.data import preprocess
from fer_jax.errors import UserError
from fer_jax.models import heads, vgg
from fer_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('name, num_params', [
    ('vgg16', 138_357_544), ('resnet18', 11_689_512),
    ('resnet50', 25_557_032), ('mobilenet_v2', 3_504_872),
    ('shufflenet_v2', 2_278_604),
    ('swin_tiny', 28_288_354)])  # timm's.
def test_parameter_counts_match_torchvision(name, num_params):
  model = models.create(name, 1000)
  variables = models.variable_shapes(model, (1, 224, 224, 3))
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


@pytest.mark.parametrize('name', ['vgg16', 'resnet18', 'mobilenet_v2',
                                  'shufflenet_v2', 'swin_tiny'])
@pytest.mark.parametrize('head', heads.HEADS[1:])
def test_study_heads_give_logits_and_pre_logits(name, head):
  model = models.create(name, 7, head=head, dropout=0.5)

  def init_and_apply(x):
    variables = model.init(jax.random.key(0), x)
    return variables, model.apply(variables, x, train=True,
                                  rngs={'dropout': jax.random.key(1)},
                                  mutable=['intermediates', 'batch_stats'])

  # Shapes only: traced, not compiled (tests/test_zoo_training.py runs them).
  variables, (logits, state) = jax.eval_shape(init_and_apply,
                                              jnp.ones((2, 64, 64, 3)))
  assert 'head' in variables['params']
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
  with pytest.raises(UserError, match=r'models.shufflenet_v2_x1_0\(weights'):
    convert.read_torch_state_dict(str(tmp_path / 'x.pth'), 'shufflenet_v2')


def test_a_file_that_is_no_state_dict_is_one_line(tmp_path):
  pytest.importorskip('torch')
  path = tmp_path / 'resnet18.pth'
  path.write_bytes(bytes(range(256)) * 8)
  with pytest.raises(UserError, match=r'resnet18\.pth is not a torch state '
                     r'dict that torch.load reads with weights_only=True '
                     r'\(\w+\); .*resnet18\(weights=') as error:
    convert.read_torch_state_dict(str(path), 'resnet18')
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('arch, src, how_to_obtain', [
    ('resnet18', 'nope.pth', 'IMAGENET1K_V1'),
    ('vgg16', 'nope.h5', "VGG16(weights='imagenet')")])
def test_convert_cli_missing_file_is_one_line(arch, src, how_to_obtain,
                                              tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'fer_jax.convert', f'--arch={arch}',
       f'--src={tmp_path / src}', f'--out={tmp_path / "out"}'],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert result.returncode == 2, result.stderr
  assert result.stderr.count('\n') == 1
  assert how_to_obtain in result.stderr


# ------------------------------------------- Against torchvision (needs torch).


def _torch_reference(name):
  torch = pytest.importorskip('torch')
  torchvision = pytest.importorskip('torchvision')
  torch.manual_seed(0)
  builder = convert.TORCHVISION_BUILDERS.get(name, name)
  reference = getattr(torchvision.models, builder)(weights=None)
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
    ('mobilenet_v2', 64), ('shufflenet_v2', 64)])
def test_converted_port_matches_torchvision(name, size, tmp_path):
  torch, reference = _torch_reference(name)
  src = str(tmp_path / f'{name}.pth')
  torch.save(reference.state_dict(), src)
  x = np.random.default_rng(0).normal(size=(2, 3, size, size))
  with torch.no_grad():
    expected = reference(torch.from_numpy(x).float()).numpy()
  del reference

  # Saving and loading the converted weights: tested by
  # test_convert_cli_writes_what_init_from_reads (here, 8 s for vgg16's
  # 550 MB).
  variables = convert.from_torchvision(
      name, convert.read_torch_state_dict(src, name))
  logits = jax.jit(models.create(name, 1000).apply)(
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


def test_init_from_of_another_architecture_fails_before_training(tmp_path):
  weights = str(tmp_path / 'weights')
  convert.save(weights, {'params': {}}, {'arch': 'vgg16', 'source': 'test'})
  config = _tiny_run_config(str(tmp_path / 'absent.csv'), init_from=weights)
  with pytest.raises(UserError, match="holds vgg16 weights, but "
                     "config.model.name is 'resnet18'"):
    loop.train(config, str(tmp_path / 'run'))


@pytest.mark.parametrize('name', ['vgg16', 'resnet18', 'resnet50',
                                  'mobilenet_v2', 'shufflenet_v2',
                                  'swin_tiny'])
def test_config_builds_its_model(name):
  config = sweeps.load_config(os.path.join(ROOT, 'configs', f'{name}.py'))
  settings = rundir.as_json(config)['model']  # As a run reads it back.
  assert settings.pop('name') == name
  model = models.create(name, 7, **settings)
  size = config.data.image_size
  variables = models.variable_shapes(
      model, (1, size, size, config.data.channels))
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
  meta = json.load(open(os.path.join(out, convert.META)))
  assert (meta['arch'], meta['format'], meta['normalization']) == (
      'resnet18', 'torchvision', 'imagenet')
  model = models.create('resnet18', 7, head='dense128')
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  params, batch_stats = convert.init_from(out, 'resnet18', variables['params'],
                                          variables['batch_stats'])
  np.testing.assert_array_equal(
      params['layer4_1']['conv2']['kernel'],
      reference.layer4[1].conv2.weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(batch_stats['bn1']['var'],
                                reference.bn1.running_var.numpy())
  assert params['head']['dense']['kernel'].shape == (512, 128)  # Fresh.


def test_init_from_with_other_normalization_fails_before_training(tmp_path):
  weights = str(tmp_path / 'weights')
  convert.save(weights, {'params': {}},
               {'arch': 'resnet18', 'format': 'keras',
                'normalization': 'caffe', 'source': 'test'})
  config = _tiny_run_config(str(tmp_path / 'absent.csv'), init_from=weights)
  with pytest.raises(UserError, match="expect 'caffe' input normalisation, "
                     "but config.data.normalization is 'imagenet'; set "
                     '--config.data.normalization=caffe'):
    loop.train(config, str(tmp_path / 'run'))


def test_caffe_normalization_subtracts_the_bgr_means():
  spec = preprocess.input_spec('caffe', 4, 3, np.zeros((1, 4, 4), np.uint8))
  x = np.asarray(spec(jnp.full((1, 4, 4), 200, jnp.uint8)))
  np.testing.assert_allclose(x[0, 0, 0], [200 - 103.939, 200 - 116.779,
                                          200 - 123.68], rtol=1e-6)
  with pytest.raises(UserError, match="normalization='caffe' needs "
                     'config.data.channels=3'):
    preprocess.input_spec('caffe', 48, 1, None)


# ------------------------------ Keras's VGG16 .h5 (needs h5py; keras too).

KERAS_H5 = 'vgg16_weights_tf_dim_ordering_tf_kernels.h5'


def _write_keras2_h5(path, layers, *, model_weights=False):
  """`layers` ({name: [kernel, bias]}, [] for a layer without weights) in
  the layout of Keras 2's published files: root attribute `layer_names`,
  per layer `weight_names` and `<layer>/<layer>/kernel:0`; under
  `model_weights` as model.save('model.h5') writes it."""
  h5py = pytest.importorskip('h5py')
  with h5py.File(path, 'w') as f:
    root = f.create_group('model_weights') if model_weights else f
    root.attrs['layer_names'] = np.array([n.encode() for n in layers])
    root.attrs['backend'] = b'tensorflow'
    root.attrs['keras_version'] = b'2.2.4'
    for name, arrays in layers.items():
      group = root.create_group(name)
      names = [f'{name}/{leaf}:0'
               for leaf in ('kernel', 'bias')[:len(arrays)]]
      group.attrs['weight_names'] = np.array([n.encode() for n in names])
      for weight_name, array in zip(names, arrays):
        group.create_dataset(weight_name, data=array)


def _keras_notop_layers(seed=0):
  """Keras VGG16(include_top=False)'s layers with random weights."""
  rng = np.random.default_rng(seed)
  layers, channels, block = {'input_1': []}, 3, 1
  conv = 1
  for layer in vgg.VGG16_LAYERS:
    if layer == 'M':
      layers[f'block{block}_pool'] = []
      block, conv = block + 1, 1
    else:
      layers[f'block{block}_conv{conv}'] = [
          rng.normal(0, 0.05, (3, 3, channels, layer)).astype(np.float32),
          rng.normal(0, 0.1, (layer,)).astype(np.float32)]
      channels, conv = layer, conv + 1
  return layers


@pytest.mark.filterwarnings('ignore::DeprecationWarning')  # Keras's numpy 2.
def test_converted_keras_vgg16_matches_keras(tmp_path):
  os.environ['KERAS_BACKEND'] = 'jax'  # Before keras is first imported.
  keras = pytest.importorskip('keras')
  h5py = pytest.importorskip('h5py')
  keras.utils.set_random_seed(0)
  reference = keras.applications.VGG16(weights=None,
                                       classifier_activation=None)
  rng = np.random.default_rng(0)
  for layer in reference.layers:  # Random biases too (Keras's are zeros).
    if layer.weights:
      kernel, bias = layer.get_weights()
      layer.set_weights([kernel, rng.uniform(-0.1, 0.1, bias.shape)])
  src = str(tmp_path / KERAS_H5)
  try:  # Keras's own writer of the legacy layout, where it still has one.
    # pylint: disable-next=g-import-not-at-top
    from keras.src.legacy.saving import legacy_h5_format
  except ImportError:
    legacy_h5_format = None
  if legacy_h5_format is not None:
    with h5py.File(src, 'w') as f:
      legacy_h5_format.save_weights_to_hdf5_group(f, reference)
  else:
    _write_keras2_h5(src, {layer.name: layer.get_weights()
                           for layer in reference.layers})
  x = rng.normal(0, 50, (2, 224, 224, 3)).astype(np.float32)
  expected = np.asarray(reference(x, training=False))
  del reference
  # The input matters (Keras's random init does not flatten it away), so a
  # wrong mapping (fc1's flatten order, say) shows far above 1e-4.
  assert np.abs(expected[0] - expected[1]).max() > 1e-2

  variables, meta = convert.read(src, 'vgg16')
  assert meta == {'format': 'keras', 'normalization': 'caffe'}
  assert models.count_params(variables['params']) == 138_357_544
  # Saved and loaded as the command line does in
  # test_keras_notop_model_file_fills_the_conv_layers.
  logits = jax.jit(models.create('vgg16', 1000).apply)(variables,
                                                       jnp.asarray(x))
  difference = float(np.max(np.abs(np.asarray(logits) - expected)))
  print(f'keras vgg16: max |logit difference| {difference:.2e}, '
        f'max |logit| {np.abs(expected).max():.2f}')
  assert difference < 1e-4 * max(1.0, float(np.abs(expected).max()))


def test_keras_notop_model_file_fills_the_conv_layers(tmp_path):
  layers = _keras_notop_layers()
  src = str(tmp_path / 'vgg16_notop_model.h5')
  _write_keras2_h5(src, layers, model_weights=True)  # As model.save() does.
  out = str(tmp_path / 'weights')
  result = subprocess.run(
      [sys.executable, '-m', 'fer_jax.convert', '--arch=vgg16',
       f'--src={src}', f'--out={out}'],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert '14,714,688 parameters' in result.stdout  # The 13 convs.
  meta = json.load(open(os.path.join(out, convert.META)))
  assert (meta['format'], meta['normalization']) == ('keras', 'caffe')

  model = models.create('vgg16', 7, head='flatten_dense256_l2')
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  params, _ = convert.init_from(out, 'vgg16', variables['params'], {})
  np.testing.assert_array_equal(params['features_0']['kernel'],
                                layers['block1_conv1'][0])
  np.testing.assert_array_equal(params['features_28']['bias'],
                                layers['block5_conv3'][1])
  np.testing.assert_array_equal(params['head']['dense']['kernel'],
                                variables['params']['head']['dense']['kernel'])


def test_bad_keras_files_name_the_problem(tmp_path):
  missing = str(tmp_path / KERAS_H5)
  with pytest.raises(UserError, match=r"No weights file .*keras.applications"
                     r".VGG16\(weights='imagenet'\).*--arch=vgg16"):
    convert.read(missing, 'vgg16')
  with pytest.raises(UserError, match='convert for vgg16 only'):
    convert.read(missing, 'resnet18')
  pytest.importorskip('h5py')
  text = tmp_path / 'text.h5'
  text.write_text('not hdf5')
  with pytest.raises(UserError, match='is not an HDF5 file'):
    convert.read(str(text), 'vgg16')

  resnet = str(tmp_path / 'resnet50.h5')
  _write_keras2_h5(resnet, {'conv1_conv': [np.zeros((7, 7, 3, 64)),
                                           np.zeros(64)],
                            'block1_conv1': _keras_notop_layers()[
                                'block1_conv1']})
  with pytest.raises(UserError, match=r'not Keras VGG16 weights \(missing '
                     'layers: block1_conv2, .* and 8 more; unexpected '
                     r'layers: conv1_conv\).*VGG16\(weights'):
    convert.read(resnet, 'vgg16')

  layers = _keras_notop_layers()
  layers['block2_conv1'][0] = layers['block2_conv1'][0][:, :, :32]
  layers['fc1'] = [np.zeros((25088, 8)), np.zeros(8)]  # Half a classifier.
  partial = str(tmp_path / 'partial.h5')
  _write_keras2_h5(partial, layers)
  with pytest.raises(UserError, match=r'missing layers: fc2, predictions'):
    convert.read(partial, 'vgg16')
  del layers['fc1']
  _write_keras2_h5(partial, layers)
  with pytest.raises(UserError, match=r'wrong shapes: block2_conv1 kernel '
                     r'\(3, 3, 32, 128\) \(expected \(3, 3, 64, 128\)\)'):
    convert.read(partial, 'vgg16')


# ------------------------- timm's swin_tiny_patch4_window7_224 (needs torch).

SWIN_TIMM = 'swin_tiny_patch4_window7_224'


def _timm_swin(img_size=224):
  torch = pytest.importorskip('torch')
  timm = pytest.importorskip('timm')
  torch.manual_seed(0)
  reference = timm.create_model(SWIN_TIMM, pretrained=False, img_size=img_size)
  # Random LayerNorm affine parameters and relative position biases (timm
  # starts them at 1, 0 and std 0.02), so that their mapping is exercised.
  with torch.no_grad():
    for module in reference.modules():
      if isinstance(module, torch.nn.LayerNorm):
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
    for name, param in reference.named_parameters():
      if name.endswith('relative_position_bias_table'):
        param.normal_(0.0, 1.0)
  return torch, timm, reference.eval()


def _assert_logits_match(what, logits, expected):
  assert logits.shape == expected.shape
  difference = float(np.max(np.abs(np.asarray(logits) - expected)))
  print(f'{what}: max |logit difference| {difference:.2e}, '
        f'max |logit| {np.abs(expected).max():.2f}')
  assert difference < 1e-4 * max(1.0, float(np.abs(expected).max()))


# timm's bias-table resampling warns about its own tensor handling.
@pytest.mark.filterwarnings('ignore::UserWarning')
def test_swin_converted_port_matches_timm(tmp_path):
  """From a .pth (the API) and a .safetensors (the CLI), at 224 and at 64,
  where the last stages' windows shrink to 4 and 2 (and stage 1's 16x16 map
  is padded to 21x21) and timm resamples the 224 bias tables on loading."""
  torch, timm, reference = _timm_swin()
  safetensors_torch = pytest.importorskip('safetensors.torch')
  state_dict = reference.state_dict()
  pth = str(tmp_path / 'swin_tiny.pth')
  safetensors = str(tmp_path / 'model.safetensors')
  torch.save(state_dict, pth)
  safetensors_torch.save_file(state_dict, safetensors)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 3, 224, 224)).astype(np.float32)
  with torch.no_grad():
    expected = reference(torch.from_numpy(x)).numpy()
  del reference

  variables, meta = convert.read(pth, 'swin_tiny')
  assert meta == {'format': 'timm', 'normalization': 'imagenet'}
  out = str(tmp_path / 'weights')
  result = subprocess.run(
      [sys.executable, '-m', 'fer_jax.convert', '--arch=swin_tiny',
       f'--src={safetensors}', f'--out={out}'],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert '28,288,354 parameters' in result.stdout
  converted = convert.load(out, 'swin_tiny')
  assert (jax.tree.structure(converted) == jax.tree.structure(variables))
  jax.tree.map(np.testing.assert_array_equal, converted, variables)
  apply = jax.jit(models.create('swin_tiny', 1000).apply)
  _assert_logits_match('swin_tiny 224', apply(
      converted, jnp.asarray(x.transpose(0, 2, 3, 1))), expected)

  small = timm.create_model(SWIN_TIMM, pretrained=False, img_size=64)
  small.load_state_dict(timm.models.swin_transformer.checkpoint_filter_fn(
      state_dict, small))
  x = rng.normal(size=(2, 3, 64, 64)).astype(np.float32)
  with torch.no_grad():
    expected = small.eval()(torch.from_numpy(x)).numpy()
  _assert_logits_match('swin_tiny 64', apply(
      converted, jnp.asarray(x.transpose(0, 2, 3, 1))), expected)


def test_swin_original_layout_and_buffers_are_normalised():
  """Microsoft's checkpoints merge patches at the end of a stage and name
  the classifier `head`; older ones hold the computed buffers."""
  original = {'layers.0.downsample.reduction.weight': 1,
              'layers.2.downsample.norm.bias': 2,
              'layers.0.blocks.1.attn_mask': 3,
              'layers.0.blocks.0.attn.relative_position_index': 4,
              'layers.0.blocks.0.attn.relative_position_bias_table': 5,
              'head.weight': 6, 'head.bias': 7, 'norm.weight': 8}
  assert timm_swin.normalise(original) == {
      'layers.1.downsample.reduction.weight': 1,
      'layers.3.downsample.norm.bias': 2,
      'layers.0.blocks.0.attn.relative_position_bias_table': 5,
      'head.fc.weight': 6, 'head.fc.bias': 7, 'norm.weight': 8}
  current = {'layers.1.downsample.reduction.weight': 1, 'head.fc.bias': 7}
  assert timm_swin.normalise(current) == current


def test_swin_missing_weights_say_how_to_get_them(tmp_path):
  for src in ('swin_tiny.pth', 'model.safetensors'):
    with pytest.raises(UserError, match=(
        r"No weights file .*timm.create_model\('swin_tiny_patch4_window7_224'"
        r', pretrained=True\).*model.safetensors.*--arch=swin_tiny')):
      convert.read(str(tmp_path / src), 'swin_tiny')


def test_swin_init_from_renews_the_classifier(tmp_path):
  def shapes(model):
    return models.variable_shapes(model, (1, 224, 224, 3))

  rng = np.random.default_rng(0)
  imagenet = jax.tree.map(
      lambda s: rng.normal(size=s.shape).astype(np.float32),
      shapes(models.create('swin_tiny', 1000)))
  weights = str(tmp_path / 'weights')
  convert.save(weights, imagenet, {'arch': 'swin_tiny', 'source': 'test'})
  model = models.create('swin_tiny', 7)
  fresh = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                       shapes(model))['params']
  params, _ = convert.init_from(weights, 'swin_tiny', fresh, {})
  table = ('layers_2', 'blocks_5', 'attn', 'relative_position_bias_table')
  loaded, original = params, imagenet['params']
  for name in table:
    loaded, original = loaded[name], original[name]
  np.testing.assert_array_equal(loaded, original)
  assert params['head']['fc']['kernel'].shape == (768, 7)
  assert not np.asarray(params['head']['fc']['kernel']).any()  # Kept.
  # For phases: the final LayerNorm goes with the last stage.
  groups = models.parameter_groups(model, (1, 64, 64, 3))
  assert groups.blocks[-1] == ('layers_3', 'norm')
  assert groups.head == ('head',)


def test_swin_small_input_drop_path_in_training_only():
  model = models.create('swin_tiny', 7, drop_path_rate=0.5)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)),
                  jnp.float32)
  # Jitted: eagerly, each of swin's ops compiles on its own (5x slower).
  variables = jax.jit(model.init)(jax.random.key(0), x)
  evaluated = jax.jit(model.apply)(variables, x)

  def train_mode(model):
    return jax.jit(lambda variables, seed: model.apply(
        variables, x, train=True, rngs={'dropout': jax.random.key(seed)}))

  trained = train_mode(model)
  first, second = trained(variables, 1), trained(variables, 2)
  assert first.shape == (2, 7) and np.isfinite(first).all()
  assert not np.allclose(first, second)
  assert not np.allclose(first, evaluated)
  without = train_mode(models.create('swin_tiny', 7, drop_path_rate=0.0))
  np.testing.assert_allclose(without(variables, 1), evaluated, rtol=1e-5,
                             atol=1e-6)
  with pytest.raises(UserError, match='divisible by 32, not 48x48'):
    model.init(jax.random.key(0), jnp.zeros((1, 48, 48, 3)))
