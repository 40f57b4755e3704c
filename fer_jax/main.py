"""Trains a FER model, then reports its best checkpoint on val and test.

  python -m fer_jax.main --config=configs/resnet_small.py \
      --workdir=runs/resnet_small \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

Re-running the same command on an existing workdir resumes it.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from fer_jax.errors import Interrupted, UserError
from fer_jax.evaluate import report
from fer_jax.train import loop

config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory: config, metrics, '
                    'checkpoints and reports; resumed if it exists.')
flags.mark_flags_as_required(['config', 'workdir'])


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a mistyped override as one line, not a traceback."""
  try:
    argv = flags.FLAGS(argv)
    flags.FLAGS.config.keys()  # config_flags defers load errors to first use.
    return argv
  except OSError as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
  except flags.Error as e:
    print(f'error: {_one_line(e)} Pass --helpfull for the flags.',
          file=sys.stderr)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # config_flags raises these for an override of a missing config field
    # or of the wrong type.
    overrides = [a for a in argv[1:] if a.lstrip('-').startswith('config.')]
    print(f'error: bad config override in {" ".join(overrides)}: '
          f'{_one_line(e)} Every knob is listed with its default in '
          'fer_jax/config.py and the config file.', file=sys.stderr)
  sys.exit(2)


def _one_line(error: Exception) -> str:
  """The message of `error` on one line, ending in punctuation."""
  # ConfigDict wraps a KeyError in an AttributeError; a KeyError's str() is
  # the repr of its message.
  while error.args and isinstance(error.args[0], Exception):
    error = error.args[0]
  if isinstance(error, KeyError) and error.args:
    message = str(error.args[0])
  else:
    message = str(error)
  message = ' '.join(message.split())
  return message if message.endswith(('.', '?', '!')) else message + '.'


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  logging.set_verbosity(logging.INFO)
  try:
    run, data = loop.train(flags.FLAGS.config, flags.FLAGS.workdir)
    result = report.write_report(run, data)
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except Interrupted as e:
    print(str(e), file=sys.stderr)
    sys.exit(128 + e.signal_number)
  print(f'val accuracy {result["val"]["accuracy"]:.4f} macro-F1 '
        f'{result["val"]["macro_f1"]:.4f} | test accuracy '
        f'{result["test"]["accuracy"]:.4f} macro-F1 '
        f'{result["test"]["macro_f1"]:.4f} | report: {run.file("report.json")}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
