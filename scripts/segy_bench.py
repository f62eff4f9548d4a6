"""Times `segment` on a synthetic post-stack SEG-Y volume: peak resident memory and sections per second.

    python scripts/segy_bench.py --workdirs=runs/cpu_small --data_dir=../shared/tgs \
        --inlines=500 --crosslines=500 --samples=1000 --batch_size=16      # a ~1 GB float32 volume
    python scripts/segy_bench.py --random_model=configs/tiny.py --inlines=120 --crosslines=120 --samples=200

The volume (inlines x crosslines x samples, 4-byte IEEE floats) is written in a temporary folder: inline i
is a window of a mosaic of real training tiles (from --data_dir; standard normal noise without it), shifted
by i columns, so sections look like the competition's tiles (depth down) and neighbouring ones differ.
`segment` then runs on it as its own process (`python -m salt_jax.segment`), so its peak resident memory
(resource.getrusage of the children) counts only the segmentation, not the building; with --dask it is
the largest process, the command's or one worker's. Without --workdirs, --random_model builds a workdir
holding one snapshot of random weights of that config (speed and memory do not depend on the weights).
--volume keeps the volume (built once, reused by later runs). Prints one JSON line: the volume, the
segment record, wall time and peak RSS.
"""
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np
import pandas as pd
import segyio
from absl import app, flags

from salt_jax import cli, configlib, errors, models
from salt_jax.geometry import TILE
from salt_jax.workdir import checkpoints, rundir

FLAGS = flags.FLAGS
AMPLITUDE_SCALE = 100.0  # grey level -> amplitude: (grey - 128) * scale, any positive scale will do


def define_flags() -> None:
  flags.DEFINE_list("workdirs", None, "Trained workdirs for segment (or --random_model).")
  flags.DEFINE_string("random_model", None, "Config file of a random-weight model to time instead.")
  flags.DEFINE_string("data_dir", None, "Kaggle data folder whose train tiles make the volume (else noise).")
  flags.DEFINE_integer("inlines", 500, "Inlines of the volume.")
  flags.DEFINE_integer("crosslines", 500, "Crosslines of the volume.")
  flags.DEFINE_integer("samples", 1000, "Samples per trace.")
  flags.DEFINE_enum("sections", "inline", ["inline", "crossline", "both"], "segment --sections.")
  flags.DEFINE_integer("stride", 101, "segment --stride.")
  flags.DEFINE_integer("batch_size", 16, "segment --batch_size (0: segment's default, the config's).")
  flags.DEFINE_list("folds", None, "segment --folds: only these folds' snapshots vote (default: all).")
  flags.DEFINE_integer("seed", 0, "Which tiles (or noise) build the volume.")
  flags.DEFINE_string("tmp_dir", None, "Where the temporary folder goes (default: the system's).")
  flags.DEFINE_string("volume", None, "Keep the volume at this path (built when absent, reused when there) "
                      "instead of in the temporary folder.")
  flags.DEFINE_string("select_inlines", None, "segment --inlines=A:B (default: every inline).")
  flags.DEFINE_integer("chunk_sections", None, "segment --chunk_sections (default: segment's).")
  flags.DEFINE_string("dask", None, "segment --dask (default: one process).")


def mosaic(height: int, width: int, data_dir, seed: int) -> np.ndarray:
  """(height, width) float32 amplitudes: random real train tiles side by side (or normal noise)."""
  rng = np.random.default_rng(seed)
  if data_dir is None:
    return rng.normal(size=(height, width)).astype(np.float32)
  ids = pd.read_csv(pathlib.Path(data_dir) / "train.csv", dtype=str)["id"].to_numpy()
  rows, cols = -(-height // TILE), -(-width // TILE)
  picks = rng.choice(ids, rows * cols)
  tiles = [cv2.imread(str(pathlib.Path(data_dir) / "train" / "images" / f"{i}.png"), cv2.IMREAD_GRAYSCALE)
           for i in picks]
  grid = np.stack(tiles).reshape(rows, cols, TILE, TILE).transpose(0, 2, 1, 3)
  grid = grid.reshape(rows * TILE, cols * TILE)
  return (grid[:height, :width].astype(np.float32) - 128.0) * AMPLITUDE_SCALE


def build_volume(path, n_il: int, n_xl: int, n_samples: int, data_dir, seed: int) -> None:
  """Writes an inline-sorted float32 SEG-Y: inline i's section (samples, crosslines) is the mosaic's
  columns i .. i + n_xl; inline numbers from 1, crossline numbers from 1, 4 ms sampling, CDP coordinates
  25 m apart (scalar 1) and an ASCII text header, so that multidimio imports and exports it."""
  image = mosaic(n_samples, n_xl + n_il, data_dir, seed)
  spec = segyio.spec()
  spec.ilines, spec.xlines = np.arange(1, n_il + 1), np.arange(1, n_xl + 1)
  spec.samples = np.arange(n_samples)
  spec.format = segyio.SegySampleFormat.IEEE_FLOAT_4_BYTE
  spec.sorting = segyio.TraceSortingFormat.INLINE_SORTING
  with segyio.create(str(path), spec) as f:
    f.text[0] = segyio.tools.create_text_header({1: "scripts/segy_bench.py volume of real training tiles"})
    f.bin.update({segyio.BinField.Interval: 4000})
    for i in range(n_il):
      traces = np.ascontiguousarray(image[:, i:i + n_xl].T)
      for j in range(n_xl):
        t = i * n_xl + j
        f.header[t] = {segyio.TraceField.INLINE_3D: i + 1, segyio.TraceField.CROSSLINE_3D: j + 1,
                       segyio.TraceField.CDP_X: 25 * j, segyio.TraceField.CDP_Y: 25 * i,
                       segyio.TraceField.SourceGroupScalar: 1}  # coordinates, as MDIO's import wants them
        f.trace[t] = traces[j]


def random_workdir(config_file, root) -> str:
  """A workdir with one max_map snapshot of random weights (He-scaled kernels, unit BatchNorm statistics)."""
  import jax
  config = configlib.load_config_file(config_file)
  model = models.build(**configlib.section(config, "model"))
  shapes = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0), size=config.input_size))
  rng = np.random.default_rng(0)

  def fill(path, leaf):
    if path[-1].key == "kernel":
      return rng.normal(0, np.prod(leaf.shape[:-1]) ** -0.5, leaf.shape).astype(leaf.dtype)
    return (np.ones if path[-1].key in ("scale", "var") else np.zeros)(leaf.shape, leaf.dtype)
  run = rundir.RunDir(root)
  run.record_run(config)
  checkpoints.save_snapshot(run.snapshot_dir(0, 0, "max_map"), jax.tree_util.tree_map_with_path(fill, shapes),
                            {"val_threshold": 0.0, "val_map": 0.0, "fold": 0, "cycle": 0})
  return str(run.root)


def main(argv):
  del argv
  if (FLAGS.workdirs is None) == (FLAGS.random_model is None):
    raise app.UsageError("give exactly one of --workdirs and --random_model")
  with tempfile.TemporaryDirectory(dir=FLAGS.tmp_dir) as tmp:
    tmp = pathlib.Path(tmp)
    workdirs = FLAGS.workdirs or [random_workdir(FLAGS.random_model, tmp / "random_model")]
    source = pathlib.Path(FLAGS.volume) if FLAGS.volume else tmp / "volume.sgy"
    t0 = time.perf_counter()
    if not source.exists():
      build_volume(source, FLAGS.inlines, FLAGS.crosslines, FLAGS.samples, FLAGS.data_dir, FLAGS.seed)
    built = time.perf_counter() - t0
    command = [sys.executable, "-m", "salt_jax.segment", f"--workdirs={','.join(workdirs)}",
               f"--input={source}", f"--out={tmp / 'out'}", f"--sections={FLAGS.sections}",
               f"--stride={FLAGS.stride}"]
    for flag, value in (("batch_size", FLAGS.batch_size or None), ("inlines", FLAGS.select_inlines),
                        ("chunk_sections", FLAGS.chunk_sections), ("dask", FLAGS.dask),
                        ("folds", FLAGS.folds and ",".join(FLAGS.folds))):
      if value is not None:
        command.append(f"--{flag}={value}")
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
      raise errors.Refusal(f"segment failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    record = json.loads(done.stdout.strip().splitlines()[-1])
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB, the largest child
    result = {"volume": [FLAGS.inlines, FLAGS.crosslines, FLAGS.samples],
              "file_gib": round(source.stat().st_size / 2 ** 30, 3), "tiles": FLAGS.data_dir is not None,
              "build_s": round(built, 1), "segment_wall_s": round(wall, 1),
              "peak_rss_gib": round(peak_kib / 2 ** 20, 3), "sections": record["sections"],
              "sections_per_s": record["sections_per_s"], "segment_seconds": record["seconds"],
              "chunks": record["chunks"], "workers": record["workers"],
              "range_traces": record["range_traces"],
              "stride": FLAGS.stride, "batch_size": FLAGS.batch_size or "default", "folds": FLAGS.folds,
              "workdirs": FLAGS.workdirs or f"random {FLAGS.random_model}"}
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  cli.run(main, define_flags, prog="scripts/segy_bench.py")
