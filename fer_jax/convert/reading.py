"""What every weights reader checks first: the file, then its library."""

import importlib
import os
import types

from fer_jax.errors import UserError


def library_for(path: str, module: str, extra: str,
                how_to_obtain_it: str) -> types.ModuleType:
  """`module`, imported to read `path`; a UserError if `path` is no file
  (saying `how_to_obtain_it`) or `module` is not installed (naming the
  package extra that has it)."""
  if not os.path.isfile(path):
    raise UserError(f'No weights file {path!r}: {how_to_obtain_it}.')
  try:
    return importlib.import_module(module)
  except ImportError:
    raise UserError(f'Reading {path} needs {module.split(".")[0]}: '
                    f'pip install -e ".[{extra}]".') from None
