"""Trains a FER model, then reports its best checkpoint on val and test.

  python -m fer_jax.main --config=configs/resnet_small.py \
      --workdir=runs/resnet_small \
      --config.data.path=../shared/datasets/fer2013/fer2013.tar.gz

Re-running the same command on an existing workdir resumes it. On several
hosts, run it once per process with --config.distributed.* (README).
"""

from absl import app, flags
from ml_collections import config_flags

from fer_jax import cli

config_flags.DEFINE_config_file('config', None, 'Config file (configs/*.py).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Run directory: config, metrics, '
                    'checkpoints and reports; resumed if it exists.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # Imported once the flags have parsed: JAX, Flax, orbax, Grain and
  # matplotlib take 2.3 s, and a mistyped flag or config override is
  # answered without them.
  # pylint: disable=import-outside-toplevel
  import jax
  from fer_jax import inference
  from fer_jax.evaluate import report
  from fer_jax.train import loop
  # pylint: enable=import-outside-toplevel
  cli.log_info()
  with cli.exits_on_user_errors():
    run, data = loop.train(flags.FLAGS.config, flags.FLAGS.workdir)
    if jax.process_index() != 0:
      # Process 0 writes the report; orbax restores with every process.
      inference.load_trained(run, 'best')
      return
    result = report.write_report(run, data)
  print(f'val accuracy {result["val"]["accuracy"]:.4f} macro-F1 '
        f'{result["val"]["macro_f1"]:.4f} | test accuracy '
        f'{result["test"]["accuracy"]:.4f} macro-F1 '
        f'{result["test"]["macro_f1"]:.4f} | report: {run.file("report.json")}')


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
