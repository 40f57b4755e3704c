"""Timing shared by the benchmark scripts."""

import time

import numpy as np


def median_ms(fn, repeats: int) -> float:
  """Median wall time of `repeats` calls of `fn`, in milliseconds."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))
