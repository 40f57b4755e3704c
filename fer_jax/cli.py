"""What every command line here shares: flag parsing, logging and exits on
user errors.

A mistake a user can make ends in one `error:` line and exit status 2, never
a traceback; an interrupted run in its resume hint and 128 + the signal.
"""

import ast
import contextlib
import logging
import os
import sys

from absl import flags
from absl import logging as absl_logging

from fer_jax.errors import Interrupted, UserError


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with an unknown or missing flag, a missing config file
  or a mistyped override as one line, not a traceback."""
  try:
    unparsed = flags.FLAGS(argv)
    if 'config' in flags.FLAGS:
      flags.FLAGS.config.keys()  # config_flags defers load errors to use.
    return unparsed
  except OSError as e:
    print(f'error: {_config_file_error(e, _config_path(argv))}',
          file=sys.stderr)
  except flags.Error as e:
    print(f'error: {_one_line(e)} Pass --helpfull for the flags.',
          file=sys.stderr)
  except (SyntaxError, ImportError) as e:
    print(f'error: --config={_config_path(argv)} cannot be loaded as a '
          f'config file: {_one_line(e)}', file=sys.stderr)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # config_flags raises these for an override of a missing config field
    # or of the wrong type, and for a file without get_config().
    overrides = [a for a in argv[1:] if a.lstrip('-').startswith('config.')]
    if overrides and _is_config_file(_config_path(argv)):
      print(f'error: bad config override in {" ".join(overrides)}: '
            f'{_one_line(e)} Every knob is listed with its default in '
            'fer_jax/config.py and the config file.', file=sys.stderr)
    else:
      print(f'error: --config={_config_path(argv)}: {_one_line(e)} A config '
            'file defines get_config(), as those in configs/ do.',
            file=sys.stderr)
  sys.exit(2)


def _config_path(argv: list[str]) -> str:
  """--config's file as given in `argv`, less a `:<config string>`: a file
  that fails to load leaves the flag unparsed, and so does an override
  parsed after it."""
  for index, arg in enumerate(argv):
    name, equals, value = arg.lstrip('-').partition('=')
    if name == 'config':
      value = value if equals else ' '.join(argv[index + 1:index + 2])
      return value.partition(':')[0]
  return ''


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _info_from_fer_jax_only(record: logging.LogRecord) -> bool:
  return (record.levelno >= logging.WARNING
          or os.path.abspath(record.pathname).startswith(_PACKAGE_DIR))


def log_info() -> None:
  """Logs fer_jax's INFO lines and the libraries' warnings and errors.

  At INFO, orbax logs about 50 lines per checkpoint saved, two checkpoints
  an epoch, which buried the epoch lines; JAX and Grain add their own.
  """
  absl_logging.set_verbosity(absl_logging.INFO)
  absl_logging.get_absl_handler().addFilter(_info_from_fer_jax_only)


def _is_config_file(path: str) -> bool:
  """Whether `path` is Python that defines get_config() at its top."""
  if not (path.endswith('.py') and os.path.isfile(path)):
    return False
  with open(path, encoding='utf-8') as f:
    try:
      module = ast.parse(f.read())
    except (SyntaxError, ValueError):
      return False
  return any(isinstance(node, ast.FunctionDef) and node.name == 'get_config'
             for node in module.body)


def _config_file_error(error: OSError, path: str) -> str:
  """A missing --config file `path` named with the config files beside it;
  any other failure to read it as ml_collections words it."""
  if os.path.isfile(path):
    return ' '.join(str(error).split())
  folder = os.path.dirname(path) or '.'
  choices = (sorted(name for name in os.listdir(folder)
                    if _is_config_file(os.path.join(folder, name)))
             if os.path.isdir(folder) else [])
  return (f'--config={path}: no such file' + (
      f'; the config files in {folder}: {", ".join(choices)}.' if choices
      else '.'))


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


@contextlib.contextmanager
def exits_on_user_errors():
  """Turns a UserError into `error: ...` and exit 2, an Interrupted run into
  its message and exit 128 + the signal number."""
  try:
    yield
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except Interrupted as e:
    print(str(e), file=sys.stderr)
    sys.exit(128 + e.signal_number)
