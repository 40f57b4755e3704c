"""`python -m fer_jax.export`: see onnx_export.py."""

import argparse
import os
import sys

from fer_jax import cli
from fer_jax.predict import predictor


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m fer_jax.export',
      description='Exports a trained model to an ONNX file of grey face '
      'crops -> class probabilities.')
  parser.add_argument('--workdir', help='training run directory (default: '
                      f'the model in {predictor.PRETRAINED_DIR})')
  parser.add_argument('--out', required=True, help='the .onnx file to write')
  parser.add_argument('--checkpoint', choices=predictor.CHECKPOINTS,
                      default='best',
                      help='which checkpoint of the run (default %(default)s)')
  return parser


def main() -> None:
  args = _parser().parse_args()
  # Imported once the arguments have parsed, as in fer_jax.main: a mistyped
  # one is answered without JAX and Flax.
  from fer_jax.export import onnx_export  # pylint: disable=import-outside-toplevel
  with cli.exits_on_user_errors():
    path = onnx_export.export(args.workdir, args.out, args.checkpoint)
  size = os.path.getsize(path)
  print(f'Wrote {path} ({size / 1e6:.1f} MB).', file=sys.stderr)


if __name__ == '__main__':
  main()
