"""Segment whole seismic sections with trained snapshots, not only 101x101 competition tiles.

    python -m salt_jax.segment --workdirs=runs/model_34[,runs/model_50A] --input=section.png --out=seg/
    python -m salt_jax.segment --workdirs=runs/model_34 --input=sections/ --out=seg/ --save_probs
    python -m salt_jax.segment --workdirs=runs/model_34 --mosaic=0,3 --mosaics=mosaics.csv \
        --data_dir=../shared/tgs --out=seg/

An input is a PNG (grayscale, or RGB read as grayscale), a 2-D `.npy` array or a folder of them. A
uint8 array is used as it is; any other array is clipped to its `--clip_percentiles` (default the 1st and
99th percentile of the section) and mapped linearly onto 0..255. `--mosaic` builds the grey section of a
jigsaw mosaic from its tiles (empty cells black, as `jigsaw render` draws them, without its tints).

Each section is cut into 101x101 windows every `--stride` pixels (default 101) of its reflect-padded copy
(salt_jax.seismic.sections); each window is predicted exactly as `predict` predicts a tile (the same compiled
flip TTA, padded to the model's canvas), in batches of `--batch_size` windows (a positive integer; unset,
the config's eval_batch_size). Per snapshot the windows' probabilities are blended with a smooth weight
and binarised at the snapshot's threshold (the one `predict` recorded for it when its prediction file is
newer than the snapshot, else the one training recorded); the snapshots vote as in `ensemble`: per
workdir the mean of its snapshots' masks, then the equal-weight mean over workdirs, salt where >= 0.5.
Per-tile empty handling (gates) is not applied.

Writes `<name>_mask.png` (0/255, the input's size), `<name>_overlay.png` (the section with the salt
outlined in red) and, with `--save_probs`, `<name>_probs.npy` (float16, the mean over workdirs of the
mean over snapshots of the blended probabilities). Every input, workdir and output path is checked
before anything is written; a bad one stops the command with one line naming it, and so does an output
that already exists (a second run into the same --out), unless `--overwrite` lets the run replace it.

    python -m salt_jax.segment --workdirs=runs/model_34 --input=volume.sgy --out=seg/ --sections=both \
        --inlines=1200:1400 --write=mask --png_inlines=1300

A `.sgy`/`.segy` input is a SEG-Y 3-D volume or 2-D line (salt_jax.seismic.segy): its amplitudes are scaled
with the percentiles of the whole file, its inline sections, crossline sections or both (averaged) are
segmented as (samples, traces) images, depth down, chunk by chunk (salt_jax.seismic.volume: bounded
memory, resumable: the same command continues an unfinished output), and `<stem>_probs.sgy` (or
`_mask.sgy`) is a copy of the file with the float32 result in its traces (README "Whole sections").
`--dask=local:N` or `--dask=tcp://host:port` runs the chunks as Dask tasks (salt_jax.seismic.distribute).

This module is the command; the parts live in salt_jax.seismic: files (section files in and out), infer
(snapshots, their vote on stacks of sections), sections (windows), segy (SEG-Y I/O), volume (chunks).
"""

import contextlib
import json
import pathlib
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import tqdm
from absl import app, flags, logging

from salt_jax.data import kaggle
from salt_jax.geometry import TILE
from salt_jax.seismic import distribute, files, infer, mdio_volume, sections, segy, volume
from salt_jax.workdir import rundir

def segment(workdirs: Sequence[str], inputs: Sequence[files.Section], out_dir, *, kind: str = "max_map",
            folds: Optional[Sequence[int]] = None, stride: int = infer.DEFAULT_STRIDE,
            batch_size: Optional[int] = None, save_probs: bool = False, overwrite: bool = False
            ) -> List[Dict[str, Any]]:
  """Segments every input section and writes its outputs under out_dir; returns one record per section.

  Checks the stride, the batch size, the workdirs' snapshots, every input (each is read once here) and
  the output paths (existing outputs only with `overwrite`) before anything is written, and holds the
  workdirs' locks while it reads their snapshots.
  """
  sections.axis_windows(TILE, stride)  # BadInput for a stride outside 1..101
  loader = infer.SnapshotLoader(kind, batch_size)    # BadInput for a batch size below 1
  snapshots = infer.find_snapshots(workdirs, kind, folds)
  for item in inputs:
    item.load()
  files.check_outputs(out_dir, inputs, save_probs, overwrite)
  records = []
  with volume.locked(workdirs):
    for item in inputs:
      records.append(_segment_one(item, snapshots, loader, out_dir, stride, save_probs))
  return records


def _segment_one(item: files.Section, snapshots: infer.Snapshots, loader: infer.SnapshotLoader, out_dir,
                 stride: int, save_probs: bool) -> Dict[str, Any]:
  """Segments one input, writes its outputs and returns its record (shape, windows, speed, paths)."""
  section = item.load()
  note = files.small_note(section.shape, item.origin)
  if note:
    logging.info("%s", note)
  n_snaps = sum(len(s) for s in snapshots)
  total = sections.layout(section.shape, stride).n_windows * n_snaps
  t0 = time.perf_counter()
  with tqdm.tqdm(total=total, desc=item.name, unit="window", disable=None, leave=False) as bar:
    result = infer.segment_section(section, snapshots, loader, stride, save_probs, bar.update)
  seconds = time.perf_counter() - t0
  paths = files.output_paths(out_dir, item.name, save_probs)
  files.write_outputs(paths, section, result.mask, result.probs)
  record = {"name": item.name, "input": item.origin, "height": section.shape[0], "width": section.shape[1],
            "windows": result.windows, "snapshots": n_snaps, "seconds": round(seconds, 2),
            "windows_per_s": round(total / seconds, 2), "salt_fraction": round(float(result.mask.mean()), 4),
            **{k: str(v) for k, v in paths.items()}}
  logging.info("%s: %d x %d px (height x width), %d windows x %d snapshots in %.1f s (%.1f windows/s)",
               item.name, *section.shape, result.windows, n_snaps, seconds, record["windows_per_s"])
  return record


FLAGS = flags.FLAGS


def define_flags() -> None:
  """Command-line flags (defined only when run as a program, so the module stays importable)."""
  flags.DEFINE_list("workdirs", None, "One workdir per model; every snapshot of --kind votes.")
  flags.DEFINE_string("input", None, "A section: .png, 2-D .npy, or a folder of them.")
  flags.DEFINE_list("mosaic", None, "Instead of --input: jigsaw mosaic ids to segment (needs --mosaics and "
                    "--data_dir).")
  flags.DEFINE_string("mosaics", None, "With --mosaic: the mosaic table of `jigsaw solve`.")
  flags.DEFINE_string("data_dir", None, "With --mosaic: the Kaggle data folder holding the tiles.")
  flags.DEFINE_string("cache_dir", None, "With --mosaic: optional npz cache of the decoded tiles.")
  flags.DEFINE_string("out", None, "Folder for <name>_mask.png, <name>_overlay.png (and _probs.npy).")
  flags.DEFINE_integer("stride", infer.DEFAULT_STRIDE, "Pixels between window origins (1..101).")
  flags.DEFINE_integer("batch_size", None, "Windows per device call, a positive integer (default: the "
                       "config's eval_batch_size).")
  flags.DEFINE_list("clip_percentiles", [str(p) for p in files.DEFAULT_PERCENTILES], "lo,hi: percentiles a "
                    "non-uint8 .npy section is clipped to before it is mapped onto 0..255.")
  flags.DEFINE_bool("save_probs", False, "Also write <name>_probs.npy (float16 probabilities).")
  flags.DEFINE_bool("overwrite", False, "Replace outputs already in --out (without it, they stop the "
                    "command before anything is written).")
  flags.DEFINE_enum("kind", "max_map", list(rundir.SNAPSHOT_KINDS), "Which per-cycle snapshots vote.")
  flags.DEFINE_list("folds", None, "Only these folds' snapshots (default: all).")
  flags.DEFINE_enum("sections", "inline", list(volume.DIRECTIONS), "SEG-Y: predict every inline section, "
                    "every crossline section, or both (the two volumes averaged).")
  flags.DEFINE_string("inlines", None, "SEG-Y: A:B, only inline numbers A..B (inclusive).")
  flags.DEFINE_string("crosslines", None, "SEG-Y: A:B, only crossline numbers A..B (inclusive).")
  flags.DEFINE_enum("write", "probs", list(volume.WRITES), "SEG-Y: the output traces hold the salt "
                    "probability or the mask (1.0 salt, 0.0 not), float32.")
  flags.DEFINE_integer("iline_byte", segy.DEFAULT_ILINE_BYTE, "SEG-Y: trace header byte of the inline "
                       "number.")
  flags.DEFINE_integer("xline_byte", segy.DEFAULT_XLINE_BYTE, "SEG-Y: trace header byte of the crossline "
                       "number.")
  flags.DEFINE_list("png_inlines", [], "SEG-Y: also write mask and overlay PNGs of these inlines (a 2-D "
                    "line is inline 0).")
  flags.DEFINE_integer("chunk_sections", None, "Volumes: sections per chunk (default: as many as hold "
                       f"{volume.CHUNK_PIXELS:,} pixels); a chunk is read, segmented, written and resumed "
                       "whole.")
  flags.DEFINE_string("dask", None, "Volumes: run the chunks as Dask tasks, on local:N (N worker processes "
                      "started here) or tcp://host:port (a running scheduler; its workers must see the same "
                      "paths). Default: this process.")
  flags.mark_flags_as_required(["workdirs", "out"])


VOLUME_SUFFIXES = segy.SUFFIXES + mdio_volume.SUFFIXES
SEGY_FLAGS = ("sections", "inlines", "crosslines", "write", "iline_byte", "xline_byte", "png_inlines",
              "chunk_sections", "dask")


def parse_span(text: Optional[str], flag: str) -> Optional[Tuple[int, int]]:
  """"A:B" -> (A, B) (None stays None); UsageError unless A and B are integers with A <= B."""
  if text is None:
    return None
  try:
    lo, hi = (int(p) for p in text.split(":"))
  except ValueError:
    lo, hi = 1, 0
  if lo > hi:
    raise app.UsageError(f"--{flag} must be A:B with integers A <= B, got {text}")
  return lo, hi


def parse_percentiles(parts: Sequence[str]) -> Tuple[float, float]:
  """["1", "99"] -> (1.0, 99.0); UsageError unless 0 <= lo < hi <= 100."""
  try:
    lo, hi = (float(p) for p in parts)
  except ValueError:
    lo = hi = -1.0
  if not 0 <= lo < hi <= 100:
    raise app.UsageError(f"--clip_percentiles must be lo,hi with 0 <= lo < hi <= 100, got {','.join(parts)}")
  return lo, hi


def _inputs() -> List[files.Section]:
  """The sections the flags name (exactly one of --input and --mosaic)."""
  if (FLAGS.input is None) == (FLAGS.mosaic is None):
    raise app.UsageError("give exactly one of --input and --mosaic")
  if FLAGS.input is not None:
    return files.file_sections(FLAGS.input, parse_percentiles(FLAGS.clip_percentiles))
  if not (FLAGS.mosaics and FLAGS.data_dir):
    raise app.UsageError("--mosaic needs --mosaics and --data_dir")
  return files.mosaic_sections(kaggle.DataSource(FLAGS.data_dir, FLAGS.cache_dir), FLAGS.mosaics,
                         [int(m) for m in FLAGS.mosaic])


def main(argv) -> List[Dict[str, Any]]:
  """Segments as the flags say; prints one JSON line per section."""
  del argv
  if FLAGS.input is not None and pathlib.Path(FLAGS.input).suffix.lower() in VOLUME_SUFFIXES:
    return [_main_volume()]
  given = [f"--{name}" for name in SEGY_FLAGS if FLAGS[name].present]
  if given:
    raise app.UsageError(f"{given[0]} applies to a volume --input ({', '.join(VOLUME_SUFFIXES)}) only")
  records = segment(FLAGS.workdirs, _inputs(), FLAGS.out, kind=FLAGS.kind, stride=FLAGS.stride,
                    folds=[int(f) for f in FLAGS.folds] if FLAGS.folds else None, batch_size=FLAGS.batch_size,
                    save_probs=FLAGS.save_probs, overwrite=FLAGS.overwrite)
  for record in records:
    print(json.dumps(record))
  return records


def _main_volume() -> Dict[str, Any]:
  """Segments the SEG-Y or MDIO --input as the flags say; prints its record as a JSON line."""
  if FLAGS.mosaic is not None or FLAGS.save_probs:
    raise app.UsageError("a volume --input takes neither --mosaic nor --save_probs (see --write)")
  is_mdio = pathlib.Path(FLAGS.input).suffix.lower() in mdio_volume.SUFFIXES
  if is_mdio and (FLAGS["iline_byte"].present or FLAGS["xline_byte"].present):
    raise app.UsageError("--iline_byte and --xline_byte apply to a SEG-Y --input only (MDIO has its grid)")
  try:
    png_inlines = [int(il) for il in FLAGS.png_inlines]
  except ValueError:
    raise app.UsageError(f"--png_inlines must be inline numbers, got {','.join(FLAGS.png_inlines)}") from None
  if FLAGS.dask is not None:
    try:
      distribute.parse(FLAGS.dask)
    except distribute.DaskSpecError as e:
      raise app.UsageError(str(e)) from None
  source = (mdio_volume.open_volume(FLAGS.input) if is_mdio
            else segy.open_volume(FLAGS.input, FLAGS.iline_byte, FLAGS.xline_byte))
  with contextlib.ExitStack() as stack:
    runner = None
    if FLAGS.dask is not None:
      runner = distribute.runner(stack.enter_context(distribute.client(FLAGS.dask)))
    record = _segment_volume(source, png_inlines, runner)
  print(json.dumps(record))
  return record


def _segment_volume(source, png_inlines: Sequence[int], runner: Optional[volume.Runner]) -> Dict[str, Any]:
  """volume.segment_volume of `source` as the flags say, its chunks run by `runner` (None: here)."""
  return volume.segment_volume(
      source, FLAGS.workdirs, FLAGS.out,
      directions=FLAGS.sections, inlines=parse_span(FLAGS.inlines, "inlines"),
      crosslines=parse_span(FLAGS.crosslines, "crosslines"), write=FLAGS.write,
      percentiles=parse_percentiles(FLAGS.clip_percentiles), png_inlines=png_inlines, kind=FLAGS.kind,
      folds=[int(f) for f in FLAGS.folds] if FLAGS.folds else None, stride=FLAGS.stride,
      batch_size=FLAGS.batch_size, chunk_sections=FLAGS.chunk_sections, overwrite=FLAGS.overwrite,
      runner=runner, options={} if isinstance(source, mdio_volume.MdioVolume) else {
          "iline_byte": FLAGS.iline_byte, "xline_byte": FLAGS.xline_byte})
