"""FER2013 and FER+ packed small enough to travel to the lent accelerator.

The device tool sends at most 64 MiB with each call, and FER2013's smallest
downloads (fer2013.tar.gz, 94 MB; the JPEG folder zip, 62 MB and lossy)
leave no room for the wheels the device lacks. This packs the challenge
CSV's pixels as uint8 behind xz's delta filter (vertical neighbours, 48
bytes apart), about 58 MB, with labels, usages and fer2013new.csv; unpacking
writes fer2013.csv and fer2013new.csv back, byte for byte (both are checked
against the sha256 taken when packing).

  python experiments/device_pack.py pack \
      --fer2013=../shared/datasets/fer2013/fer2013.tar.gz \
      --ferplus=../shared/datasets/ferplus/fer2013new.csv --out=.device/fer.xz
  python experiments/device_pack.py unpack --src=.device/fer.xz --out=DIR

Only NumPy and the standard library: it runs before any wheel is installed.
"""

import argparse
import hashlib
import io
import json
import lzma
import os
import sys
import tarfile
import time

import numpy as np

SIZE = 48 * 48
# Delta over the previous image row, then LZMA2 at its strongest: about 5%
# smaller than plain xz on these faces.
FILTERS = [{'id': lzma.FILTER_DELTA, 'dist': 48},
           {'id': lzma.FILTER_LZMA2, 'preset': 9 | lzma.PRESET_EXTREME}]
FER2013_CSV = 'fer2013.csv'
FERPLUS_CSV = 'fer2013new.csv'


class PackError(Exception):
  """A file that cannot be packed or unpacked exactly."""


def _read_challenge_bytes(path: str) -> bytes:
  if path.lower().endswith(('.tar.gz', '.tgz', '.tar')):
    with tarfile.open(path) as tar:
      members = [m for m in tar.getmembers()
                 if m.isfile() and m.name.endswith('.csv')]
      if len(members) != 1:
        raise PackError(f'{path}: expected one .csv inside, found '
                        f'{[m.name for m in members]}')
      return tar.extractfile(members[0]).read()
  with open(path, 'rb') as f:
    return f.read()


def _csv_text(header: bytes, newline: bytes, emotions: np.ndarray,
              usage_names: list[str], usages: np.ndarray,
              pixels: np.ndarray) -> bytes:
  """The challenge CSV that these arrays were read from."""
  names = [name.encode() for name in usage_names]
  lines = [header]
  for emotion, usage, row in zip(emotions.tolist(), usages.tolist(), pixels):
    lines.append(b'%d,%s,%s' % (emotion, ' '.join(map(str, row.tolist()))
                                .encode(), names[usage]))
  return newline.join(lines) + newline


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def pack(fer2013: str, ferplus: str, out: str) -> None:
  start = time.time()
  text = _read_challenge_bytes(fer2013)
  newline = b'\r\n' if b'\r\n' in text[:10_000] else b'\n'
  header, *rows = text.rstrip(newline).split(newline)
  emotions, usage_names, usages = [], [], []
  pixels = np.empty((len(rows), SIZE), np.uint8)
  for i, row in enumerate(rows):
    emotion, values, usage = row.split(b',')
    emotions.append(int(emotion))
    name = usage.decode()
    if name not in usage_names:
      usage_names.append(name)
    usages.append(usage_names.index(name))
    pixels[i] = np.array(values.split(), np.uint8)
  emotions = np.asarray(emotions, np.uint8)
  usages = np.asarray(usages, np.uint8)
  if _csv_text(header, newline, emotions, usage_names, usages,
               pixels) != text:
    raise PackError(f'{fer2013}: its CSV text is not in the form that '
                    'unpack writes back; nothing packed.')
  with open(ferplus, 'rb') as f:
    votes = f.read()
  meta = {'header': header.decode(), 'newline': newline.decode(),
          'usage_names': usage_names, 'rows': len(rows),
          'sha256': {FER2013_CSV: _sha256(text), FERPLUS_CSV: _sha256(votes)}}
  buffer = io.BytesIO()
  np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
           emotions=emotions, usages=usages, pixels=pixels,
           ferplus=np.frombuffer(votes, np.uint8))
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  with open(out, 'wb') as f:
    f.write(lzma.compress(buffer.getvalue(), format=lzma.FORMAT_XZ,
                          filters=FILTERS))
  print(f'{out}: {os.path.getsize(out) / 2**20:.1f} MiB, {len(rows)} rows, '
        f'{time.time() - start:.0f} s')


def unpack(src: str, out: str) -> None:
  start = time.time()
  with open(src, 'rb') as f:
    arrays = np.load(io.BytesIO(lzma.decompress(f.read())))
  meta = json.loads(arrays['meta'].tobytes())
  files = {
      FER2013_CSV: _csv_text(meta['header'].encode(), meta['newline'].encode(),
                             arrays['emotions'], meta['usage_names'],
                             arrays['usages'], arrays['pixels']),
      FERPLUS_CSV: arrays['ferplus'].tobytes()}
  os.makedirs(out, exist_ok=True)
  for name, data in files.items():
    if _sha256(data) != meta['sha256'][name]:
      raise PackError(f'{src}: {name} does not unpack to the file that was '
                      'packed (sha256 differs); pack it again.')
    with open(os.path.join(out, name), 'wb') as f:
      f.write(data)
  print(f'{out}: {", ".join(files)} ({meta["rows"]} rows, sha256 checked), '
        f'{time.time() - start:.0f} s')


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  commands = parser.add_subparsers(dest='command', required=True)
  packing = commands.add_parser('pack')
  packing.add_argument('--fer2013', required=True,
                       help='fer2013.tar.gz or fer2013.csv')
  packing.add_argument('--ferplus', required=True, help='fer2013new.csv')
  packing.add_argument('--out', required=True)
  unpacking = commands.add_parser('unpack')
  unpacking.add_argument('--src', required=True)
  unpacking.add_argument('--out', required=True, help='a directory')
  args = parser.parse_args(argv)
  try:
    if args.command == 'pack':
      pack(args.fer2013, args.ferplus, args.out)
    else:
      unpack(args.src, args.out)
  except (OSError, PackError, lzma.LZMAError, ValueError,
          OverflowError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  sys.exit(main())
