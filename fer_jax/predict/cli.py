"""Command line: emotions of the faces in photos, folders of photos, videos.

  python -m fer_jax.predict --workdir=runs/resnet_small photo.jpg photos/ \
      --out=preds/
  python -m fer_jax.predict --backend=onnx --model=model.onnx clip.mp4 \
      --every=5 --smooth=0.6 --out=preds/

One JSON line per image file (per processed frame of a video, with `frame`
and `time_s`) on stdout, or CSV rows with --format=csv; a readable table on
stderr and, with --out, annotated copies, at the inputs' paths relative to
their common folder. Folders are searched for images only (a video can take
long: give it as an argument); stderr counts the other files left out. Exit
status: 0 if any file gave faces, 1 if none did, 2 for a usage error.

The ONNX backend imports no JAX: this module loads the JAX one lazily.
"""

import argparse
import csv
import json
import os
import sys

from fer_jax.errors import UserError
from fer_jax.predict import annotate, images, opencv, predictor, video

NO_FACE = ('no face found; try a smaller --min-face-size, or --no-detect if '
           'the image is a face crop')
EMPTY_FOLDER = 'folder holds no image files'


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m fer_jax.predict',
      description='Finds the faces in photos and classifies their emotion.')
  parser.add_argument('paths', nargs='+', metavar='PATH',
                      help='image or video files, or folders searched '
                      'recursively for images (not videos)')
  parser.add_argument('--backend', choices=('jax', 'onnx'),
                      help='jax (a training run) or onnx (an exported '
                      '--model; no JAX needed); default: onnx with --model, '
                      'else jax')
  parser.add_argument('--model', help='ONNX file from python -m '
                      'fer_jax.export (the onnx backend)')
  parser.add_argument('--workdir', help='training run directory (default: '
                      f'the model in {predictor.PRETRAINED_DIR})')
  parser.add_argument('--checkpoint', choices=predictor.CHECKPOINTS,
                      default='best',
                      help='which checkpoint of the run (default %(default)s)')
  parser.add_argument('--out', help='folder for annotated copies (videos as '
                      '.mp4), at the inputs\' paths relative to their common '
                      'folder')
  parser.add_argument('--format', choices=('json', 'csv'), default='json',
                      help='stdout: JSON lines or CSV rows, one per face '
                      '(default %(default)s)')
  parser.add_argument('--every', type=int, default=1,
                      help='videos: classify every Nth frame (default '
                      '%(default)s)')
  parser.add_argument('--smooth', type=float, default=0.0,
                      help='videos: moving-average factor in [0, 1) of each '
                      "face track's probabilities, p = s * p_before + "
                      '(1 - s) * p_frame (default %(default)s: off)')
  parser.add_argument('--no-detect', action='store_true',
                      help='each image already is one face crop (its centre '
                      'square is classified)')
  parser.add_argument('--ten-crop', action='store_true',
                      help='average over ten crops (slower, often better)')
  parser.add_argument('--batch-size', type=int, default=32,
                      help='largest batch of faces per forward pass '
                      '(default %(default)s)')
  parser.add_argument('--margin', type=float, default=0.2,
                      help="crop margin on each side, as a fraction of the "
                      "face box's long side (default %(default)s)")
  parser.add_argument('--min-face-size', type=int, default=32,
                      help='smallest face side, in image pixels (default '
                      '%(default)s)')
  return parser


def _model(args) -> predictor.FacePredictor:
  """The predictor of the chosen backend; only the JAX one imports JAX."""
  options = dict(detect_faces=not args.no_detect, margin=args.margin,
                 min_face_size=args.min_face_size, batch_size=args.batch_size)
  if (args.backend or ('onnx' if args.model else 'jax')) == 'jax':
    if args.model:
      raise UserError('--model is an ONNX file: use it with --backend=onnx, '
                      'or pass --workdir=<run> for the JAX backend.')
    return predictor.Predictor.from_workdir(
        args.workdir, args.checkpoint, ten_crop=args.ten_crop, **options)
  if not args.model:
    raise UserError('--backend=onnx needs --model=<file.onnx>; export one '
                    'with python -m fer_jax.export --workdir=<run> '
                    '--out=model.onnx.')
  if args.workdir or args.ten_crop:
    raise UserError('--backend=onnx runs the --model file: drop '
                    f'{"--workdir" if args.workdir else "--ten-crop"} (JAX '
                    'backend only).')
  # pylint: disable-next=import-outside-toplevel
  from fer_jax.predict import onnx_predictor
  return onnx_predictor.OnnxPredictor(args.model, **options)


class _Output:
  """Result lines on stdout: JSON lines, or CSV rows with a header."""

  def __init__(self, fmt: str, class_names: tuple[str, ...]):
    self._class_names = class_names
    self._csv = None
    if fmt == 'csv':
      self._csv = csv.writer(sys.stdout, lineterminator='\n')
      self._csv.writerow(['file', 'frame', 'time_s', 'face', 'track', 'x',
                          'y', 'width', 'height', 'label', *class_names,
                          'error'])

  def write(self, path: str, faces: list[predictor.Face],
            error: str | None, frame: video.Frame | None = None) -> None:
    if self._csv is None:
      line = {'file': path}
      if frame is not None:
        line.update(frame=frame.index, time_s=frame.time_s)
      line['faces'] = [f.to_json() for f in faces]
      if frame is not None:
        for face_json, track in zip(line['faces'], frame.tracks):
          face_json['track'] = track
      line['error'] = error
      print(json.dumps(line), flush=True)
      return
    when = ['', ''] if frame is None else [frame.index, frame.time_s]
    tracks = [''] * len(faces) if frame is None else frame.tracks
    for number, (face, track) in enumerate(zip(faces, tracks), 1):
      self._csv.writerow(
          [path, *when, number, track, *face.box, face.label,
           *(round(face.probs[name], 6) for name in self._class_names), ''])
    if not faces:
      self._csv.writerow([path, *when, *[''] * (7 + len(self._class_names)),
                          error or ''])
    sys.stdout.flush()


def _video(model: predictor.FacePredictor, path: str, out_name: str,
           args, output: _Output) -> bool:
  """Writes the lines of video `path` (and, with --out, its annotated copy);
  whether any frame gave a face."""
  out = os.path.join(args.out, out_name) if args.out else None
  processed = with_faces = 0
  try:
    for frame in video.frames(model, path, args.every, args.smooth, out):
      output.write(path, frame.faces, None, frame)
      processed += 1
      with_faces += bool(frame.faces)
  except video.UnreadableVideo as e:
    output.write(path, [], e.reason)
    print(f'{path:<32} error: {e.reason}', file=sys.stderr, flush=True)
    return False
  print(f'{path:<32} video: {processed} frames classified, {with_faces} '
        'with faces' + ('' if with_faces else f'; {NO_FACE}'),
        file=sys.stderr, flush=True)
  return bool(with_faces)


def _inputs(paths: list[str]) -> list[tuple[str, str | None]]:
  """(path, name under --out) for each file argument and each image file in
  each folder argument; an empty folder comes with None. A name is the path
  relative to the folder that holds every file argument and every folder
  argument: distinct files never share an annotated copy (a/x.jpg and
  b/x.jpg, or one/photos/ and two/photos/)."""
  abspaths = [os.path.abspath(path) for path in paths]
  common = os.path.commonpath([os.path.dirname(path) for path in abspaths])
  inputs = []
  for path, abspath in zip(paths, abspaths):
    if not os.path.isdir(path):
      inputs.append((path, os.path.relpath(abspath, common)))
      continue
    found, others = images.files_under(path)
    if others:
      videos = sum(map(video.is_video, others))
      print(f'{path:<32} left out {len(others)} non-image file(s)'
            + (f', {videos} of them video(s): give videos as arguments'
               if videos else ''), file=sys.stderr, flush=True)
    inputs += [(os.path.join(path, name),
                os.path.relpath(os.path.join(abspath, name), common))
               for name in found] or [(path, None)]
  return inputs


def _faces(model: predictor.FacePredictor, path: str, out_name: str | None,
           out: str | None) -> tuple[list[predictor.Face], str | None]:
  """The faces in the file at `path` and None, or [] and why there are none;
  with `out`, writes the annotated copy."""
  if out_name is None:
    return [], EMPTY_FOLDER
  try:
    rgb = images.load_rgb(path)
  except images.UnreadableImage as e:
    return [], e.reason
  faces = model.predict(rgb)
  if out:
    annotate.write(os.path.join(out, out_name), annotate.draw(rgb, faces))
  return faces, None if faces else NO_FACE


def _table_lines(path: str, faces: list[predictor.Face],
                 error: str | None) -> str:
  if error:
    return f'{path:<32} error: {error}'
  lines = []
  for number, face in enumerate(faces, 1):
    x, y, w, h = face.box
    top = '  '.join(face.top(annotate.TOP_CLASSES))
    lines.append(f'{path:<32} face {number:<3} {w}x{h} at ({x}, {y})    {top}')
  return '\n'.join(lines)


def run(argv: list[str]) -> int:
  """Runs the command line `argv` (without the program); the exit status."""
  args = _parser().parse_args(argv)
  if args.out:
    try:
      os.makedirs(args.out, exist_ok=True)
    except OSError as e:
      raise UserError(f'Cannot create --out={args.out} ({e.strerror}); '
                      'choose another folder.') from None
  if args.every < 1:
    raise UserError(f'--every={args.every} must be at least 1.')
  if not 0 <= args.smooth < 1:
    raise UserError(f'--smooth={args.smooth} must be in [0, 1) (0: off).')
  inputs = _inputs(args.paths)
  # Without OpenCV, say so before any file is done.
  if args.out:
    opencv.require('--out (annotated copies)')
  if any(name is not None and video.is_video(path) for path, name in inputs):
    opencv.require('Reading videos')
  model = _model(args)
  output = _Output(args.format, model.class_names)
  processed = 0
  for path, out_name in inputs:
    if out_name is not None and video.is_video(path):
      processed += _video(model, path, out_name, args, output)
      continue
    faces, error = _faces(model, path, out_name, args.out)
    processed += error is None
    output.write(path, faces, error)
    print(_table_lines(path, faces, error), file=sys.stderr, flush=True)
  if not processed:
    print('error: no input gave a face; see the errors above.',
          file=sys.stderr)
  return 0 if processed else 1


def main() -> None:
  try:
    sys.exit(run(sys.argv[1:]))
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
