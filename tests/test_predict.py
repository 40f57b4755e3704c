"""Predictor, image loading, annotation and the command line, on a tiny
trained run and generated photos."""

import functools
import io
import json
import os
import shutil
import subprocess
import sys

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import fakedata
from conftest import encode
from test_detect import GRACE_HOPPER, group_photo
from test_loop import tiny_config
from fer_jax import inference, models, rundir
from fer_jax.data import sources
from fer_jax.data.preprocess import InputSpec
from fer_jax.errors import UserError
from fer_jax.predict import annotate, cli, images, predictor
from fer_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  data = str(tmp_path_factory.mktemp('data') / 'fer2013.csv')
  fakedata.write_challenge_csv(data, per_class=(4, 2, 2))
  path = str(tmp_path_factory.mktemp('run'))
  loop.train(tiny_config(data, epochs=1), path)
  return path


@pytest.fixture(scope='module')
def trained(workdir):
  return inference.load_trained(rundir.RunDir(workdir, create=False))


def _noise(shape, seed=0):
  return np.random.default_rng(seed).integers(0, 256, shape, np.uint8)


def _boxes(count, seed=0):
  rng = np.random.default_rng(seed)
  sizes = rng.integers(20, 120, count)
  return np.stack([rng.integers(0, 500, count), rng.integers(0, 350, count),
                   sizes, sizes], axis=1)


def _fixed_detector(boxes):
  return lambda grey, min_size: boxes


# ----------------------------------------------------------------- Predictor.


def test_batches_of_1_3_and_17_faces_match_one_face_at_a_time(trained):
  photo = _noise((480, 640))
  batched = predictor.Predictor(trained, batch_size=8)
  alone = predictor.Predictor(trained, batch_size=8)
  for count in (1, 3, 17):
    boxes = _boxes(count, seed=count)
    batched._detector = _fixed_detector(boxes)
    faces = batched.predict(photo)
    assert len(faces) == count
    for face in faces:
      alone._detector = _fixed_detector(np.array([face.box]))
      single, = alone.predict(photo)
      assert single.box == face.box
      assert list(single.probs) == list(face.probs)
      np.testing.assert_allclose(list(single.probs.values()),
                                 list(face.probs.values()), atol=1e-5)
  # Padded to 1, 4 and 8 (17 = 8 + 8 + 1 padded): one compile per size.
  assert batched._logits_fn._cache_size() == 3
  assert alone._logits_fn._cache_size() == 1


def test_faces_have_sorted_probabilities_and_the_top_label(trained):
  model = predictor.Predictor(
      trained, detector=_fixed_detector(_boxes(5)))
  faces = model.predict(_noise((480, 640)))
  for face in faces:
    probs = list(face.probs.values())
    assert sorted(face.probs) == sorted(trained.class_names)
    assert probs == sorted(probs, reverse=True)
    assert face.label == next(iter(face.probs))
    assert np.isclose(sum(probs), 1, atol=1e-5)
    assert set(face.to_json()) == {'box', 'label', 'probs'}


def test_no_detect_classifies_the_whole_image_as_one_face(trained):
  crop = fakedata.class_images(np.array([3]))[0]
  model = predictor.Predictor(trained, detect_faces=False)
  face, = model.predict(crop)
  assert face.box == (0, 0, 48, 48)
  np.testing.assert_allclose(list(face.probs.values()),
                             np.sort(model.classify(crop[None])[0])[::-1],
                             atol=1e-6)


def test_ten_crop_gives_other_probabilities_that_sum_to_one(trained):
  crops = fakedata.class_images(np.arange(4))
  plain = predictor.Predictor(trained).classify(crops)
  averaged = predictor.Predictor(trained, ten_crop=True).classify(crops)
  np.testing.assert_allclose(averaged.sum(axis=1), 1, rtol=1e-5)
  assert not np.allclose(plain, averaged)


def test_a_224_input_model_is_fed_48_px_faces_as_in_training():
  model = models.create('resnet_small', len(sources.FER2013_CLASSES),
                        stem_features=8, block_features=(8, 16))
  spec = InputSpec(224, 1, (127.5,), (127.5,))
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, 224, 224, 1)))
  trained = inference.TrainedModel(model, variables, spec,
                                   sources.FER2013_CLASSES, {})
  photo = _noise((120, 160))
  face_predictor = predictor.Predictor(
      trained, detector=_fixed_detector(np.array([[40, 20, 60, 60]])),
      margin=0)
  fed = []
  logits_fn = face_predictor._logits_fn
  face_predictor._logits_fn = lambda variables, faces: (
      fed.append(np.asarray(faces)), logits_fn(variables, faces))[1]
  face, = face_predictor.predict(photo)
  # Training decodes a face image to 48 px (area resizing); the model's
  # InputSpec resizes that to 224 inside the graph.
  expected = sources._decode_grey(encode(photo[20:80, 40:100], '.png'))
  np.testing.assert_array_equal(fed[0], expected[None])
  probs = predictor.softmax(np.asarray(inference.make_logits_fn(model, spec)(
      variables, expected[None])))[0]
  np.testing.assert_allclose(
      [face.probs[name] for name in sources.FER2013_CLASSES], probs,
      atol=1e-6)


def test_predict_takes_paths_pil_images_and_arrays_alike(trained, tmp_path):
  rgb = np.stack([_noise((120, 160), seed) for seed in range(3)], axis=-1)
  path = str(tmp_path / 'photo.png')
  Image.fromarray(rgb).save(path)
  model = predictor.Predictor(trained, detector=_fixed_detector(_boxes(2)))
  expected = model.predict(path)
  for image in (Image.fromarray(rgb), rgb,
                cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)):
    assert model.predict(image) == expected


@pytest.mark.parametrize('image', [np.zeros((4, 4), np.float32),
                                   np.zeros((4, 4, 4), np.uint8)])
def test_predict_rejects_other_arrays(trained, image):
  with pytest.raises(UserError, match='uint8'):
    predictor.Predictor(trained).predict(image)


def test_from_workdir_uses_the_pretrained_model_when_there_is_one(
    workdir, monkeypatch, tmp_path):
  monkeypatch.setattr(predictor, 'PRETRAINED_DIR', str(tmp_path))
  with pytest.raises(UserError, match='--workdir'):
    predictor.Predictor.from_workdir()
  monkeypatch.setattr(predictor, 'PRETRAINED_DIR', workdir)
  model = predictor.Predictor.from_workdir(detect_faces=False)
  assert len(model.predict(_noise((48, 48)))) == 1


def test_from_workdir_rejects_what_is_not_a_run(tmp_path, workdir):
  with pytest.raises(UserError, match='not a run directory'):
    predictor.Predictor.from_workdir(str(tmp_path))
  with pytest.raises(UserError, match='checkpoint'):
    predictor.Predictor.from_workdir(workdir, checkpoint='last')


# --------------------------------------------------------------- Loading.


def _pattern():
  """An asymmetric RGB image, 60 high and 80 wide."""
  rgb = np.zeros((60, 80, 3), np.uint8)
  rgb[:10, :20] = (200, 100, 50)
  return rgb


def _grey(rgb):
  return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def test_exif_orientation_turns_the_image_upright(tmp_path):
  path = str(tmp_path / 'rotated.jpg')
  exif = Image.Exif()
  exif[0x0112] = 6  # Shown turned 90 degrees clockwise.
  Image.fromarray(_pattern()).save(path, exif=exif, quality=95)
  loaded = images.load_rgb(path)
  assert loaded.shape == (80, 60, 3)
  expected = np.rot90(_pattern(), k=-1)
  assert np.abs(_grey(loaded).astype(int) - _grey(expected)).mean() < 3


def _saved(tmp_path, name, image):
  path = str(tmp_path / name)
  image.save(path)
  return path


def test_transparent_pixels_become_white(tmp_path):
  rgba = np.zeros((10, 10, 4), np.uint8)
  rgba[:5] = (0, 0, 0, 255)
  path = _saved(tmp_path, 'rgba.png', Image.fromarray(rgba))
  grey = _grey(images.load_rgb(path))
  assert (grey[:5] == 0).all() and (grey[5:] == 255).all()

  palette = Image.fromarray(rgba[..., 0]).convert('P')
  palette.info['transparency'] = 0  # Index 0, the black half.
  grey = _grey(images.load_rgb(_saved(tmp_path, 'palette.png', palette)))
  assert (grey[:5] == 255).all()


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
  levels = np.array([[0, 257 * 100, 65535]], np.uint16)
  path = _saved(tmp_path, 'deep.png', Image.fromarray(levels))
  assert Image.open(path).mode == 'I;16'
  np.testing.assert_array_equal(_grey(images.load_rgb(path)), [[0, 100, 255]])


def test_cmyk_and_grey_images_load_as_rgb(tmp_path):
  cmyk = _saved(tmp_path, 'cmyk.jpg', Image.fromarray(_pattern()).convert(
      'CMYK'))
  grey = _saved(tmp_path, 'grey.png', Image.fromarray(_grey(_pattern())))
  for path in (cmyk, grey):
    loaded = images.load_rgb(path)
    assert loaded.shape == (60, 80, 3) and loaded.dtype == np.uint8
    assert np.abs(_grey(loaded).astype(int) - _grey(_pattern())).mean() < 3


def _jpeg_bytes():
  buffer = io.BytesIO()
  Image.fromarray(_noise((64, 64))).save(buffer, 'JPEG')
  return buffer.getvalue()


BAD_FILES = {
    'missing.jpg': None,
    'empty.png': b'',
    'text.jpg': b'not an image\n',
    'truncated.jpg': _jpeg_bytes()[:400],
}
BAD_REASONS = {'missing.jpg': 'no such file', 'empty.png': 'empty file',
               'text.jpg': 'not an image', 'truncated.jpg': 'truncated'}


def _write_bad_files(folder) -> list[str]:
  for name, data in BAD_FILES.items():
    if data is not None:
      (folder / name).write_bytes(data)
  return [str(folder / name) for name in BAD_FILES]


def test_bad_files_raise_one_reason_each(tmp_path):
  for path in _write_bad_files(tmp_path):
    with pytest.raises(images.UnreadableImage) as error:
      images.load_rgb(path)
    assert BAD_REASONS[os.path.basename(path)] in error.value.reason
    assert str(error.value).startswith(path)


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
  path = _saved(tmp_path, 'big.png', Image.fromarray(_pattern()))
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
  with pytest.raises(images.UnreadableImage, match='downscale'):
    images.load_rgb(path)


def test_folders_are_walked_for_image_files(tmp_path):
  for name in ('b.png', 'a/c.JPG', 'a/deeper/d.webp', 'notes.txt',
               'a/clip.mp4', '.hidden.png', '.git/e.png'):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b'')
  assert images.files_under(str(tmp_path)) == (
      ['a/c.JPG', 'a/deeper/d.webp', 'b.png'], ['a/clip.mp4', 'notes.txt'])


# ------------------------------------------------------------- Annotation.


def test_annotation_draws_boxes_and_labels(tmp_path):
  rgb = np.full((300, 400, 3), 128, np.uint8)
  face = predictor.Face((150, 120, 100, 100), 'happy',
                        {'happy': 0.8, 'sad': 0.15, 'fear': 0.05})
  drawn = annotate.draw(rgb, [face])
  changed = np.any(drawn != 128, axis=2)
  assert changed[120, 150:250].all()  # The box's top edge.
  assert changed[:120, 150:200].any() and not changed[:120, 300:].any()
  path = annotate.write(str(tmp_path / 'sub' / 'photo.gif'), drawn)
  assert path == str(tmp_path / 'sub' / 'photo.gif.png')
  np.testing.assert_array_equal(cv2.imread(path), drawn)


def test_a_label_at_the_right_edge_moves_left_into_the_image():
  rgb = np.full((200, 200, 3), 128, np.uint8)
  face = predictor.Face((150, 80, 50, 50), 'surprise',
                        {'surprise': 1.0, 'happy': 0.0, 'fear': 0.0})
  drawn = annotate.draw(rgb, [face])
  # Above the box and its 2 px edge.
  label_rows = np.any(drawn[:75] != 128, axis=2)
  # "surprise 100%" is about 100 px wide: it starts left of the box.
  assert label_rows[:, :140].any()
  assert label_rows[:, 199].any()


# ----------------------------------------------------------- Command line.


def _photos(folder):
  """A group photo (3 cartoon faces), a face-less photo, and a folder that
  holds a real portrait, deeper down, and the bad files; the CLI's paths."""
  cv2.imwrite(str(folder / 'group.jpg'), group_photo())
  cv2.imwrite(str(folder / 'blank.png'), np.full((480, 640), 110, np.uint8))
  (folder / 'more' / 'deeper').mkdir(parents=True)
  shutil.copy(GRACE_HOPPER, folder / 'more' / 'deeper' / 'portrait.jpg')
  bad = _write_bad_files(folder / 'more')
  return [str(folder / 'group.jpg'), str(folder / 'blank.png'),
          str(folder / 'more'), bad[0]]


def test_command_line_end_to_end(workdir, tmp_path):
  paths = _photos(tmp_path)
  out = tmp_path / 'out'
  result = subprocess.run(
      [sys.executable, '-m', 'fer_jax.predict', f'--workdir={workdir}',
       *paths, f'--out={out}'], capture_output=True, text=True, cwd=ROOT,
      timeout=300)
  assert result.returncode == 0, result.stderr
  assert 'Traceback' not in result.stderr
  lines = [json.loads(line) for line in result.stdout.splitlines()]
  by_name = {os.path.relpath(line['file'], tmp_path): line for line in lines}
  assert list(by_name) == [
      'group.jpg', 'blank.png', 'more/deeper/portrait.jpg', 'more/empty.png',
      'more/text.jpg', 'more/truncated.jpg', 'more/missing.jpg']
  for line in lines:
    assert set(line) == {'file', 'faces', 'error'}
  assert by_name['group.jpg']['error'] is None
  assert by_name['more/deeper/portrait.jpg']['error'] is None
  group = by_name['group.jpg']['faces']
  assert [face['box'][0] < 640 for face in group] == [True, True, False]
  portrait = by_name['more/deeper/portrait.jpg']['faces']
  assert len(portrait) == 1
  for face in group + portrait:
    assert set(face) == {'box', 'label', 'probs'}
    assert face['label'] == next(iter(face['probs']))
  assert 'no face found' in by_name['blank.png']['error']
  for name, reason in BAD_REASONS.items():
    assert reason in by_name[f'more/{name}']['error']
    assert by_name[f'more/{name}']['faces'] == []
  assert 'face 3' in result.stderr and 'no such file' in result.stderr

  written = sorted(os.path.relpath(os.path.join(root, name), out)
                   for root, _, names in os.walk(out) for name in names)
  assert written == ['blank.png', 'group.jpg', 'more/deeper/portrait.jpg']
  assert (cv2.imread(str(out / 'group.jpg'), cv2.IMREAD_GRAYSCALE).shape
          == (480, 1280))


def test_same_named_inputs_get_distinct_names_under_out(tmp_path, capsys):
  # Two files and two folders of the same name: each input its own copy.
  for name in ('a/x.png', 'b/x.png', 'one/photos/y.png',
               'two/photos/y.png', 'two/photos/clip.mp4', 'two/photos/z.txt'):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_bytes(b'')
  paths = [str(tmp_path / name) for name in ('a/x.png', 'b/x.png',
                                             'one/photos', 'two/photos/')]
  assert [name for _, name in cli._inputs(paths)] == [
      'a/x.png', 'b/x.png', 'one/photos/y.png', 'two/photos/y.png']
  # Videos in a folder are not searched for, but counted.
  assert capsys.readouterr().err.split(maxsplit=1) == [
      paths[-1], 'left out 2 non-image file(s), 1 of them video(s): give '
      'videos as arguments\n']


def test_annotated_copies_are_written_under_their_relative_paths(
    workdir, tmp_path, capsys):
  crops = fakedata.class_images(np.array([0, 5]))
  for folder, crop in zip('ab', crops):
    (tmp_path / folder).mkdir()
    cv2.imwrite(str(tmp_path / folder / 'x.png'), crop)
  out = tmp_path / 'out'
  status, _ = _cli(capsys, f'--workdir={workdir}', '--no-detect',
                   f'--out={out}', str(tmp_path / 'a' / 'x.png'),
                   str(tmp_path / 'b' / 'x.png'))
  assert status == 0
  first, second = (cv2.imread(str(out / folder / 'x.png'), cv2.IMREAD_GRAYSCALE)
                   for folder in 'ab')
  assert first.shape == second.shape and (first != second).any()


def _cli(capsys, *args):
  status = cli.run(list(args))
  captured = capsys.readouterr()
  return status, [json.loads(line) for line in captured.out.splitlines()]


def test_no_detect_on_a_face_crop(workdir, tmp_path, capsys):
  path = str(tmp_path / 'crop.png')
  cv2.imwrite(path, fakedata.class_images(np.array([0]))[0])
  status, (line,) = _cli(capsys, f'--workdir={workdir}', '--no-detect',
                         '--ten-crop', path)
  assert status == 0
  assert line['error'] is None and line['faces'][0]['box'] == [0, 0, 48, 48]


def test_exit_status_1_when_nothing_could_be_processed(workdir, tmp_path,
                                                       capsys):
  (tmp_path / 'empty_folder').mkdir()
  blank = str(tmp_path / 'blank.png')
  cv2.imwrite(blank, np.full((64, 64), 110, np.uint8))
  status, lines = _cli(capsys, f'--workdir={workdir}',
                       str(tmp_path / 'empty_folder'), blank,
                       *_write_bad_files(tmp_path))
  assert status == 1
  assert [line['error'].split(';')[0] for line in lines[:2]] == [
      cli.EMPTY_FOLDER, 'no face found']
  assert len(lines) == 2 + len(BAD_FILES)
  assert all(line['error'] and not line['faces'] for line in lines)


@pytest.mark.parametrize('args, message', [
    (['--workdir=/nowhere', 'x.jpg'], 'not a run directory'),
    (['x.jpg'], 'pass --workdir'),
])
def test_user_errors_exit_2_in_one_line(args, message, monkeypatch, capsys,
                                        tmp_path):
  monkeypatch.setattr(predictor, 'PRETRAINED_DIR', str(tmp_path))
  monkeypatch.setattr(sys, 'argv', ['fer_jax.predict', *args])
  with pytest.raises(SystemExit) as exit_info:
    cli.main()
  assert exit_info.value.code == 2
  error = capsys.readouterr().err
  assert message in error and len(error.strip().splitlines()) == 1
