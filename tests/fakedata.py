"""Small synthetic FER2013 files that a tiny model can learn from."""

import os

import numpy as np

from fer_jax.data.sources import FER2013_CLASSES

USAGES = ('Training', 'PublicTest', 'PrivateTest')


def class_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
  """uint8 [N, 48, 48]: class c is a bright bar at row 6c+3 over noise."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 90, (len(labels), 48, 48)).astype(np.uint8)
  for image, label in zip(images, labels):
    image[6 * label + 3:6 * label + 8, 4:44] = 230
  return images


def write_challenge_csv(path: str, per_class=(12, 4, 4), seed=0) -> dict:
  """Writes fer2013.csv with `per_class` rows per class and Usage, in Usage
  order as in the real file; returns {usage: (images, labels)}."""
  os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
  written = {}
  with open(path, 'w') as f:
    f.write('emotion,pixels,Usage\n')
    for usage_index, (usage, count) in enumerate(zip(USAGES, per_class)):
      labels = np.repeat(np.arange(len(FER2013_CLASSES)), count)
      labels = np.random.default_rng(seed + usage_index).permutation(labels)
      images = class_images(labels, seed + 10 * usage_index)
      for image, label in zip(images, labels):
        f.write(f'{label},{" ".join(map(str, image.ravel()))},{usage}\n')
      written[usage] = (images, labels)
  return written


# FER2013 class -> its FER+ column (fer_jax.data.ferplus.CLASSES).
FERPLUS_COLUMN = {'angry': 4, 'disgust': 5, 'fear': 6, 'happy': 1, 'sad': 3,
                  'surprise': 2, 'neutral': 0}


def write_ferplus_votes(path: str, written: dict, seed=0) -> None:
  """Writes fer2013new.csv over the rows of `write_challenge_csv`'s file:
  7 of 10 votes for each row's own class, 3 for another emotion."""
  rng = np.random.default_rng(seed)
  lines = ['Usage,Image name,neutral,happiness,surprise,sadness,anger,'
           'disgust,fear,contempt,unknown,NF']
  row = 0
  for usage in USAGES:
    for label in written[usage][1]:
      votes = np.zeros(10, np.int64)
      own = FERPLUS_COLUMN[FER2013_CLASSES[label]]
      votes[own] = 7
      votes[rng.choice([c for c in range(8) if c != own])] = 3
      lines.append(f'{usage},fer{row:07d}.png,{",".join(map(str, votes))}')
      row += 1
  with open(path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
