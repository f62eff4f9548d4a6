"""Loads the Kaggle TGS train and test splits, prints counts and wall times, optionally writes one npz.

  python scripts/load_data.py [--data_dir ../shared/tgs] [--cache_dir /tmp/tgs_cache] [--out tgs.npz]

With --cache_dir the splits are loaded twice: cold (decoding PNGs, writing the cache) and warm (from it).
--out writes train_ids/train_images/train_masks/test_ids/test_images (uint8) with np.savez_compressed.
"""
import pathlib
import sys
import time

import numpy as np
from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from salt_jax import cli  # noqa: E402
from salt_jax.data import kaggle  # noqa: E402

FLAGS = flags.FLAGS


def _load(data_dir, cache_dir, label):
  """Loads both splits; prints counts and times; returns (train, test)."""
  out = []
  for split in kaggle.SPLITS:
    start = time.perf_counter()
    samples = kaggle.load_split(data_dir, split, cache_dir=cache_dir)
    seconds = time.perf_counter() - start
    extra = ""
    if samples.masks is not None:
      extra = f", {int(samples.masks.reshape(len(samples), -1).any(1).sum())} with salt"
    print(f"{label:5s} {split:5s}: {len(samples):6d} tiles{extra} in {seconds:6.2f} s", flush=True)
    out.append(samples)
  return out


def define_flags() -> None:
  flags.DEFINE_string("data_dir", str(REPO.parent / "shared" / "tgs"), "Kaggle TGS folder.")
  flags.DEFINE_string("cache_dir", "", "Cache the decoded splits here (tgs_<split>.npz).")
  flags.DEFINE_string("out", "", "Optional compact npz of train and test arrays.")


def main(argv) -> None:
  del argv
  start = time.perf_counter()
  train, test = _load(FLAGS.data_dir, FLAGS.cache_dir or None, "cold")
  print(f"cold  total: {time.perf_counter() - start:.2f} s")
  if FLAGS.cache_dir:
    start = time.perf_counter()
    _load(FLAGS.data_dir, FLAGS.cache_dir, "warm")
    print(f"warm  total: {time.perf_counter() - start:.2f} s")
  if FLAGS.out:
    start = time.perf_counter()
    out = pathlib.Path(FLAGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, train_ids=train.ids, train_images=train.images, train_masks=train.masks,
                        test_ids=test.ids, test_images=test.images)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - start:.2f} s")


if __name__ == "__main__":
  cli.run(main, define_flags, prog="scripts/load_data.py")
