"""ONNX export, the onnxruntime predictor (without JAX) and videos."""

import functools
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

pytest.importorskip('jax2onnx')
pytest.importorskip('onnxruntime')

import jax
import jax.numpy as jnp
import onnx
import onnxruntime

import fakedata
from test_detect import draw_face
from fer_jax import config as config_lib
from fer_jax import inference, models, rundir
from fer_jax.data.preprocess import InputSpec
from fer_jax.errors import UserError
from fer_jax.export import onnx_export
from fer_jax.predict import cli, onnx_predictor, predictor, video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = ('angry', 'happy', 'neutral', 'sad', 'surprise')
IMAGENET = InputSpec(48, 3, (0.485 * 255, 0.456 * 255, 0.406 * 255),
                     (0.229 * 255, 0.224 * 255, 0.225 * 255))
SPECS = {
    'resnet_small': InputSpec(48, 1, (127.5,), (127.5,)),
    # Three channels, per-channel statistics: exercised inside the graph.
    'mobilenetv2_small': InputSpec(48, 3, (120.0, 115.0, 100.0),
                                   (60.0, 58.0, 62.0)),
    # The ImageNet ports' max-pool calls (written for jax2onnx), at 48x48.
    'resnet18': IMAGENET,
    'vgg16': IMAGENET,
}
# config.model settings besides the name.
SETTINGS = {
    'resnet_small': {'stem_features': 8, 'block_features': (8, 16)},
    'vgg16': {'head': 'gap_bn_dropout_dense256'},
}


# Weight noise that leaves the random models' probabilities far from both
# uniform and one-hot, so that matching them within 1e-5 means something.
NOISE = {'resnet_small': 0.02, 'mobilenetv2_small': 0.07, 'resnet18': 0.01,
         'vgg16': 0.015}


def _perturbed(variables, scale: float):
  """`variables` plus Gaussian noise; batch variances scaled by a random
  factor around 1 (they stay positive)."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(variables)
  # NumPy's generator: JAX's would compile its ops for every leaf shape.
  rng = np.random.default_rng(2)
  noisy = []
  for path, leaf in leaves:
    leaf = np.asarray(leaf)
    noise = rng.standard_normal(leaf.shape, np.float32)
    if getattr(path[-1], 'key', None) == 'var':
      noisy.append(jnp.asarray(leaf * np.exp(0.3 * noise)))
    else:
      noisy.append(jnp.asarray(leaf + scale * noise))
  return jax.tree.unflatten(tree, noisy)


def _random_run(path: str, name: str, spec: InputSpec | None = None) -> str:
  """A run directory of model `name` with random weights (batch statistics
  too), as a trained run holds it; `spec` defaults to SPECS[name]."""
  config = config_lib.default_config()
  config.model.name = name
  config.model.update(SETTINGS.get(name, {}))
  spec = spec or SPECS[name]
  run = rundir.RunDir(path)
  run.save_config(config)
  run.write_json(rundir.DATASET, {'class_names': list(CLASSES),
                                  'input_spec': spec.to_json()})
  settings = config.model.to_dict()
  settings.pop('init_from', None)
  model = models.create(settings.pop('name'), len(CLASSES), **settings)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(1),
      jnp.zeros((1, spec.image_size, spec.image_size, spec.channels)))
  run.save('best', 1, model=_perturbed(variables, NOISE[name]),
           loop={'epoch': 1})
  run.wait_until_finished()
  run.close()
  return path


def _export(tmp_path_factory, name):
  """(run directory, ONNX path) of model `name`."""
  folder = tmp_path_factory.mktemp(name)
  workdir = _random_run(str(folder / 'run'), name)
  return workdir, onnx_export.export(workdir, str(folder / 'model.onnx'))


@pytest.fixture(scope='module', params=sorted(SPECS))
def exported(request, tmp_path_factory):
  """(run directory, ONNX path) of each model."""
  return _export(tmp_path_factory, request.param)


@pytest.fixture(scope='module')
def resnet(tmp_path_factory):
  """(run directory, ONNX path) of resnet_small."""
  return _export(tmp_path_factory, 'resnet_small')


def _faces(count, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (count, 48, 48),
                                              np.uint8)


@functools.cache
def _trained(workdir: str) -> inference.TrainedModel:
  return inference.load_trained(rundir.RunDir(workdir, create=False))


@pytest.mark.parametrize('count', [1, 7])
def test_onnx_probabilities_match_jax(exported, count):
  workdir, path = exported
  trained = _trained(workdir)
  faces = _faces(count, seed=count)
  logits = np.asarray(inference.make_logits_fn(
      trained.model, trained.input_spec)(trained.variables, faces))
  expected = predictor.softmax(logits)
  session = onnxruntime.InferenceSession(
      path, providers=['CPUExecutionProvider'])
  got, = session.run(None, {onnx_export.INPUT_NAME:
                            faces[..., None].astype(np.float32)})
  assert got.shape == (count, len(CLASSES))
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
  # Neither uniform nor saturated.
  assert (expected.max(axis=1) > 0.23).all()
  assert (expected.max(axis=1) < 0.99).all()
  # The predictor class gives the same through its batches of 4.
  model = onnx_predictor.OnnxPredictor(path, detect_faces=False,
                                       batch_size=4)
  np.testing.assert_allclose(model.classify(faces), expected, atol=1e-5,
                             rtol=0)


def test_onnx_file_holds_metadata_and_a_dynamic_batch(exported):
  workdir, path = exported
  model = onnx.load(path)
  metadata = {p.key: p.value for p in model.metadata_props}
  assert json.loads(metadata['classes']) == list(CLASSES)
  assert metadata['input_size'] == '48'
  with open(os.path.join(workdir, rundir.CONFIG)) as f:
    assert metadata['config'] == f.read()
  assert json.loads(metadata['input_spec'])['channels'] in (1, 3)
  shape = model.graph.input[0].type.tensor_type.shape.dim
  assert shape[0].dim_param and [d.dim_value for d in shape[1:]] == [48, 48, 1]


def test_a_224_input_model_takes_48_px_faces_and_resizes_them(tmp_path):
  # What training fed it: 48 px faces, resized in the graph by its InputSpec.
  spec = InputSpec(224, 1, (127.5,), (127.5,))
  workdir = _random_run(str(tmp_path / 'run'), 'resnet_small', spec)
  path = onnx_export.export(workdir, str(tmp_path / 'model.onnx'))
  model = onnx.load(path)
  metadata = {p.key: p.value for p in model.metadata_props}
  assert metadata['input_size'] == '48'
  assert json.loads(metadata['input_spec'])['image_size'] == 224
  shape = model.graph.input[0].type.tensor_type.shape.dim
  assert [d.dim_value for d in shape[1:]] == [48, 48, 1]
  trained = _trained(workdir)
  faces = _faces(3)
  expected = predictor.softmax(np.asarray(inference.make_logits_fn(
      trained.model, trained.input_spec)(trained.variables, faces)))
  onnx_model = onnx_predictor.OnnxPredictor(path, detect_faces=False)
  assert onnx_model.input_size == 48
  np.testing.assert_allclose(onnx_model.classify(faces), expected, atol=1e-5,
                             rtol=0)


def test_export_command_line_errors_in_one_line(tmp_path):
  stopped = rundir.RunDir(str(tmp_path / 'stopped'))
  stopped.save_config(config_lib.default_config())
  for args, message in (
      ([f'--workdir={tmp_path / "nowhere"}'], 'no such directory'),
      ([f'--workdir={tmp_path}'], 'not a run directory'),
      ([f'--workdir={stopped.path}'], 'stopped has no dataset.json')):
    result = subprocess.run(
        [sys.executable, '-m', 'fer_jax.export', *args,
         f'--out={tmp_path / "m.onnx"}'], capture_output=True, text=True,
        cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _without_jax(folder, names=('jax', 'flax')) -> dict:
  """An environment where importing `names` (jax, flax) raises ImportError."""
  for name in names:
    (folder / name).mkdir(parents=True)
    (folder / name / '__init__.py').write_text(
        f'raise ImportError("{name} is not installed here")\n')
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(
      [str(folder), ROOT] + [p for p in [env.get('PYTHONPATH')] if p])
  return env


def test_onnx_backend_predicts_where_jax_cannot_be_imported(resnet,
                                                             tmp_path):
  _, path = resnet
  env = _without_jax(tmp_path / 'site')
  check = subprocess.run([sys.executable, '-c', 'import jax'], env=env,
                         capture_output=True, text=True, timeout=60)
  assert 'jax is not installed here' in check.stderr
  crop = str(tmp_path / 'crop.png')
  cv2.imwrite(crop, fakedata.class_images(np.array([1]))[0])
  result = subprocess.run(
      [sys.executable, '-m', 'fer_jax.predict', '--backend=onnx',
       f'--model={path}', '--no-detect', crop], capture_output=True,
      text=True, cwd=ROOT, env=env, timeout=120)
  assert result.returncode == 0, result.stderr
  line, = [json.loads(line) for line in result.stdout.splitlines()]
  assert line['error'] is None and line['faces'][0]['box'] == [0, 0, 48, 48]
  assert sorted(line['faces'][0]['probs']) == sorted(CLASSES)


def test_onnx_backend_classifies_crops_without_opencv(resnet, tmp_path):
  _, path = resnet
  env = _without_jax(tmp_path / 'site', ('jax', 'flax', 'cv2'))
  grey = fakedata.class_images(np.array([1, 3]))
  crops = [str(tmp_path / 'grey.png'), str(tmp_path / 'colour.png')]
  Image.fromarray(grey[0]).save(crops[0])
  # RGB at twice the size (2x2 blocks): Pillow's resize is OpenCV's here.
  colour = np.stack([grey[1], 255 - grey[1], grey[1] // 2], axis=-1)
  Image.fromarray(colour.repeat(2, axis=0).repeat(2, axis=1)).save(crops[1])
  result = subprocess.run(
      [sys.executable, '-m', 'fer_jax.predict', f'--model={path}',
       '--no-detect', *crops], capture_output=True, text=True, cwd=ROOT,
      env=env, timeout=120)
  assert result.returncode == 0, result.stderr
  lines = [json.loads(line) for line in result.stdout.splitlines()]
  # The same probabilities as with OpenCV (its grey and resize).
  model = onnx_predictor.OnnxPredictor(path, detect_faces=False)
  for crop, line in zip(crops, lines, strict=True):
    face, = line['faces']
    expected, = model.predict(crop)
    assert face['box'] == list(expected.box)
    np.testing.assert_allclose([face['probs'][c] for c in CLASSES],
                               [expected.probs[c] for c in CLASSES],
                               atol=2e-6)
  # Detection, --out and videos say what is missing, in one line.
  clip = tmp_path / 'clip.mp4'
  clip.write_bytes(b'')
  for args, message in (([crops[0]], 'Face detection needs OpenCV'),
                        (['--no-detect', f'--out={tmp_path / "out"}',
                          crops[0]], '--out (annotated copies) needs OpenCV'),
                        (['--no-detect', str(clip)],
                         'Reading videos needs OpenCV')):
    result = subprocess.run(
        [sys.executable, '-m', 'fer_jax.predict', f'--model={path}', *args],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and 'opencv-python-headless' in (
        result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1


def test_onnx_and_jax_backends_print_the_same(resnet, tmp_path, capsys):
  workdir, path = resnet
  crop = str(tmp_path / 'crop.png')
  cv2.imwrite(crop, fakedata.class_images(np.array([2]))[0])
  lines = []
  for args in ([f'--workdir={workdir}'], [f'--model={path}']):
    assert cli.run([*args, '--no-detect', crop]) == 0
    lines.append(json.loads(capsys.readouterr().out))
  onnx_line, jax_line = lines[1], lines[0]
  assert onnx_line['faces'][0]['label'] == jax_line['faces'][0]['label']
  np.testing.assert_allclose(
      [onnx_line['faces'][0]['probs'][c] for c in CLASSES],
      [jax_line['faces'][0]['probs'][c] for c in CLASSES], atol=1e-5)


@pytest.mark.parametrize('args, message', [
    (['--backend=onnx'], 'needs --model'),
    (['--model=nowhere.onnx'], 'no such file'),
    (['--model=m.onnx', '--backend=jax'], '--backend=onnx'),
    (['--model=m.onnx', '--ten-crop'], '--ten-crop'),
    (['--every=0'], '--every'),
    (['--smooth=1'], '--smooth'),
])
def test_backend_usage_errors(args, message, capsys, monkeypatch):
  with pytest.raises(SystemExit) as exit_info:
    monkeypatch.setattr(sys, 'argv', ['fer_jax.predict', *args, 'x.jpg'])
    cli.main()
  assert exit_info.value.code == 2
  error = capsys.readouterr().err
  assert message in error and len(error.strip().splitlines()) == 1


# ------------------------------------------------------------------- Video.


def _write_video(path, count=10, fps=10.0, shape=(480, 640)):
  """`count` frames of a cartoon face drifting right."""
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), fps,
                           (shape[1], shape[0]))
  assert writer.isOpened()
  for i in range(count):
    grey = np.full(shape, 110, np.uint8)
    draw_face(grey, 300 + 4 * i, shape[0] // 2, 200)
    writer.write(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR))
  writer.release()
  return path


def _frame_count(path):
  capture = cv2.VideoCapture(path)
  count = 0
  while capture.read()[0]:
    count += 1
  capture.release()
  return count


def test_video_gives_a_line_per_processed_frame_and_an_annotated_copy(
    resnet, tmp_path, capsys):
  _, path = resnet
  clip = _write_video(str(tmp_path / 'clip.avi'))
  out = tmp_path / 'out'
  status = cli.run([f'--model={path}', '--every=2', '--smooth=0.5',
                    f'--out={out}', clip])
  captured = capsys.readouterr()
  assert status == 0, captured.err
  lines = [json.loads(line) for line in captured.out.splitlines()]
  assert [line['frame'] for line in lines] == [0, 2, 4, 6, 8]
  assert [line['time_s'] for line in lines] == [0.0, 0.2, 0.4, 0.6, 0.8]
  for line in lines:
    assert set(line) == {'file', 'frame', 'time_s', 'faces', 'error'}
    face, = line['faces']
    assert face['track'] == 0  # One face, followed throughout.
    assert np.isclose(sum(face['probs'].values()), 1, atol=1e-5)
  assert '5 frames classified, 5 with faces' in captured.err
  written = out / 'clip.avi.mp4'
  assert _frame_count(str(written)) == 10


def test_video_as_csv_and_unreadable_videos(resnet, tmp_path, capsys):
  _, path = resnet
  clip = _write_video(str(tmp_path / 'clip.mp4'), count=3)
  bad = tmp_path / 'bad.mkv'
  bad.write_text('not a video\n')
  status = cli.run([f'--model={path}', '--format=csv', clip, str(bad)])
  assert status == 0
  rows = capsys.readouterr().out.splitlines()
  assert rows[0].split(',')[:10] == ['file', 'frame', 'time_s', 'face',
                                     'track', 'x', 'y', 'width', 'height',
                                     'label']
  assert rows[0].split(',')[10:] == [*CLASSES, 'error']
  assert [row.split(',')[1] for row in rows[1:4]] == ['0', '1', '2']
  assert rows[4].startswith(str(bad)) and 'OpenCV' in rows[4]
  assert len(rows) == 5


def test_tracks_follow_the_nearest_box_and_smooth():
  tracker = video.Tracker(smooth=0.5)
  one, two = np.array([1.0, 0.0]), np.array([0.0, 1.0])
  first = tracker.update(np.array([[0, 0, 10, 10], [100, 0, 10, 10]]),
                         np.stack([one, two]))
  assert [n for n, _ in first] == [0, 1]
  # Swapped order, moved a little: same tracks; probabilities averaged.
  second = tracker.update(np.array([[102, 0, 10, 10], [2, 0, 10, 10]]),
                          np.stack([one, one]))
  assert [n for n, _ in second] == [1, 0]
  np.testing.assert_allclose(second[0][1], [0.5, 0.5])
  np.testing.assert_allclose(second[1][1], [1.0, 0.0])
  # Far away: a new track.
  third = tracker.update(np.array([[300, 300, 10, 10]]), one[None])
  assert [n for n, _ in third] == [2]


def test_export_refuses_a_graph_that_disagrees_with_jax(resnet):
  _, path = resnet

  def uniform(faces):
    return jnp.full((faces.shape[0], len(CLASSES)), 1 / len(CLASSES))

  with pytest.raises(UserError, match='away from JAX'):
    # pylint: disable-next=protected-access
    onnx_export._check_against_jax(onnx.load(path), uniform, 48)
