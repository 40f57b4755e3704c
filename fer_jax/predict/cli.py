"""Command line: emotions of the faces in photos and folders of photos.

  python -m fer_jax.predict --workdir=runs/resnet_small photo.jpg photos/ \
      --out=preds/

One JSON line per image file on stdout, a readable table on stderr and,
with --out, annotated copies. Exit status: 0 if any file gave faces, 1 if
none did, 2 for a usage error.
"""

import argparse
import json
import os
import sys

from fer_jax.errors import UserError
from fer_jax.predict import annotate, images, predictor

NO_FACE = ('no face found; try a smaller --min-face-size, or --no-detect if '
           'the image is a face crop')
EMPTY_FOLDER = 'folder holds no image files'


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m fer_jax.predict',
      description='Finds the faces in photos and classifies their emotion.')
  parser.add_argument('paths', nargs='+', metavar='PATH',
                      help='image files, or folders searched recursively')
  parser.add_argument('--workdir', help='training run directory (default: '
                      f'the model in {predictor.PRETRAINED_DIR})')
  parser.add_argument('--checkpoint', choices=predictor.CHECKPOINTS,
                      default='best',
                      help='which checkpoint of the run (default %(default)s)')
  parser.add_argument('--out', help='folder for annotated copies')
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


def _inputs(paths: list[str]) -> list[tuple[str, str | None]]:
  """(path, name under --out) for each file argument and each image file in
  each folder argument; an empty folder comes with None."""
  inputs = []
  for path in paths:
    if not os.path.isdir(path):
      inputs.append((path, os.path.basename(path)))
      continue
    found = images.files_under(path)
    top = os.path.basename(os.path.normpath(path))
    inputs += [(os.path.join(path, name), os.path.join(top, name))
               for name in found] or [(path, None)]
  return inputs


def _faces(model: predictor.Predictor, path: str, out_name: str | None,
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
  model = predictor.Predictor.from_workdir(
      args.workdir, args.checkpoint, detect_faces=not args.no_detect,
      margin=args.margin, min_face_size=args.min_face_size,
      ten_crop=args.ten_crop, batch_size=args.batch_size)
  processed = 0
  for path, out_name in _inputs(args.paths):
    faces, error = _faces(model, path, out_name, args.out)
    processed += error is None
    print(json.dumps({'file': path, 'faces': [f.to_json() for f in faces],
                      'error': error}), flush=True)
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
