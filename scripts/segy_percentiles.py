"""The error of segment's sampled amplitude percentiles against the exact ones on a SEG-Y volume.

    python scripts/segy_percentiles.py --input=/tmp/volume.sgy [--clip_percentiles=1,99]

Above salt_jax.seismic.volume.EXACT_PERCENTILE_SAMPLES samples, `segment` clips the amplitudes to the
percentiles of evenly spaced traces (volume.volume_range); this reads every sample once (the file's size
in memory) for the exact percentiles and prints one JSON line: both pairs, their differences in amplitude
and as a fraction of the exact range hi - lo, and the grey levels (0..255) that differ when a section is
scaled with the sampled pair instead of the exact one (over the sampled traces).
"""
import json

from absl import flags

from salt_jax import cli
from salt_jax.seismic import files, segy, volume

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("input", None, "A SEG-Y volume (e.g. one scripts/segy_bench.py --keep built).")
  flags.DEFINE_list("clip_percentiles", ["1", "99"], "lo,hi as segment takes them.")
  flags.mark_flags_as_required(["input"])


def main(argv):
  del argv
  vol = segy.open_volume(FLAGS.input)
  percentiles = tuple(float(p) for p in FLAGS.clip_percentiles)
  lo, hi, n = volume.volume_range(vol, percentiles)
  exact_lo, exact_hi, n_all = volume.volume_range(vol, percentiles, max_samples=vol.n_traces * vol.n_samples)
  sample, _ = vol.sample_traces(volume.EXACT_PERCENTILE_SAMPLES)
  changed = files.scale_uint8(sample, lo, hi) != files.scale_uint8(sample, exact_lo, exact_hi)
  result = {"input": FLAGS.input, "traces": n_all, "samples": n_all * vol.n_samples, "sampled_traces": n,
            "percentiles": percentiles, "exact": [exact_lo, exact_hi], "sampled": [lo, hi],
            "error": [lo - exact_lo, hi - exact_hi],
            "error_of_range": [(lo - exact_lo) / (exact_hi - exact_lo),
                               (hi - exact_hi) / (exact_hi - exact_lo)],
            "grey_levels_changed": float(changed.mean())}
  print(json.dumps(result))
  return result


if __name__ == "__main__":
  cli.run(main, define_flags, prog="scripts/segy_percentiles.py")
