"""What a device call sends back: its runs, chosen to fit what comes back.

The device tool returns at most 8 files from $OUT, 16 MiB each and 64 MiB
in all. Every run's text (config, metrics, report.json, the sweep's reports
and logs) fits; best checkpoints may not: vgg_fer's holds 142 MiB, more
than a call can return. This lists, for `tar -T`, the given paths' files
(without latest checkpoints, TensorBoard files and figures: the reports
here redraw those), then the best checkpoints, smallest first, while the
archive's size stays within --max_mib. A run whose best checkpoint is left
out gets `checkpoint_left_out.json` (rundir.CHECKPOINT_LEFT_OUT): the
checkpoint's step and sha256, so that experiments/results_entry.py still
names the weights behind its figures.

  python3 experiments/device_results.py --work=/tmp/fer_device \
      --list=/tmp/fer_device/results.list --max_mib=56 \
      bench_b64.txt accuracy_ablation_sweep large_model_sweep
  tar -C /tmp/fer_device -cf - -T /tmp/fer_device/results.list | xz ...

Sizes are counted uncompressed (with tar's 512-byte blocks), an upper
bound: checkpoints hardly compress.
"""

import argparse
import os
import sys

from fer_jax import rundir

BLOCK = 512
# What the reports here regenerate, or what only resuming needs.
SKIPPED_DIRS = ('latest', rundir.TENSORBOARD)
SKIPPED_SUFFIXES = ('.png',)


def _tar_bytes(work: str, files: list[str]) -> int:
  """The bytes that files take in a tar: each a header block, then its
  data's blocks."""
  return sum(BLOCK + -(-os.path.getsize(os.path.join(work, f)) // BLOCK)
             * BLOCK for f in files)


def _files(work: str, top: str) -> tuple[list[str], dict[str, list[str]]]:
  """(the text files under work/top, {run dir: its best checkpoint's
  files}), all relative to work."""
  text, checkpoints = [], {}
  for folder, dirs, names in os.walk(os.path.join(work, top)):
    dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
    relative = os.path.relpath(folder, work)
    parts = relative.split(os.sep)
    files = [os.path.join(relative, name) for name in sorted(names)
             if not name.endswith(SKIPPED_SUFFIXES)]
    if 'checkpoints' in parts:
      run = os.sep.join(parts[:parts.index('checkpoints')])
      checkpoints.setdefault(run, []).extend(files)
    else:
      text.extend(files)
  return text, checkpoints


def leave_out(run_path: str) -> dict:
  """Writes run_path's checkpoint_left_out.json and returns it."""
  run = rundir.RunDir(run_path, create=False)
  left_out = {'kind': 'best', 'step': run.latest_step('best'),
              'sha256': run.checkpoint_sha256('best')}
  run.write_json(rundir.CHECKPOINT_LEFT_OUT, left_out)
  return left_out


def plan(work: str, paths: list[str], max_bytes: int) -> list[str]:
  """The files to send back, relative to work; writes each left-out best
  checkpoint's checkpoint_left_out.json (listed with the text)."""
  text, checkpoints = [], {}
  for path in paths:
    if not os.path.exists(os.path.join(work, path)):
      print(f'{path}: not in {work}, not sent back')
      continue
    if os.path.isfile(os.path.join(work, path)):
      text.append(path)
      continue
    files, runs = _files(work, path)
    text += files
    checkpoints.update(runs)
  # Room for a checkpoint_left_out.json (two blocks) in every run.
  size = _tar_bytes(work, text) + 2 * BLOCK * len(checkpoints)
  run_bytes = {run: _tar_bytes(work, files)
               for run, files in checkpoints.items()}
  sent, left_out_runs = [], 0
  for run in sorted(run_bytes, key=run_bytes.get):
    if size + run_bytes[run] <= max_bytes:
      sent += checkpoints[run]
      size += run_bytes[run]
      continue
    left_out = leave_out(os.path.join(work, run))
    left_out_runs += 1
    text.append(os.path.join(run, rundir.CHECKPOINT_LEFT_OUT))
    print(f'{run}: best checkpoint (step {left_out["step"]}, '
          f'{run_bytes[run] / 2**20:.1f} MiB) stays on the device; '
          f'sha256 {left_out["sha256"]}')
  if size > max_bytes:
    print(f'warning: the runs\' text alone is {size / 2**20:.1f} MiB, over '
          '--max_mib; the parts past what the device returns are lost')
  print(f'{len(text) + len(sent)} files, {size / 2**20:.1f} MiB before '
        f'compression (at most); {len(checkpoints) - left_out_runs} of '
        f'{len(checkpoints)} best checkpoints')
  return text + sent


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--work', required=True,
                      help='the folder the paths are in')
  parser.add_argument('--list', required=True,
                      help='where to write the files to send, one a line')
  parser.add_argument('--max_mib', type=float, default=56.0)
  parser.add_argument('paths', nargs='+',
                      help='files and folders (sweeps, runs) in --work')
  args = parser.parse_args(argv)
  files = plan(args.work, args.paths, int(args.max_mib * 2**20))
  with open(args.list, 'w') as f:
    f.writelines(path + '\n' for path in files)
  return 0


if __name__ == '__main__':
  sys.exit(main())
