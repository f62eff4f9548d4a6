"""SEG-Y volumes through `segment`: geometry, orientation, the output file's headers and values, both
directions, range selection, and the bad files refused in one line."""
import json
import pathlib
import shutil

import cv2
import numpy as np
import pytest
import segyio

from salt_jax.geometry import TILE
from salt_jax.seismic import files, infer, sections, segy
from salt_jax.seismic import volume as vol
from test_segment import (_FakeLoader, _contextual, _padded_prediction, _real_tiles, _run,  # noqa: F401
                          _workdir, tiny_model)

N_SAMPLES = 110


def _write_segy(path, traces, ilxl, fmt=segyio.SegySampleFormat.IEEE_FLOAT_4_BYTE, endian="big"):
  """A SEG-Y file of (n, n_samples) traces with the (inline, crossline) numbers ilxl at bytes 189/193, a
  CDP number per trace, a text header and a 4 ms sample interval."""
  spec = segyio.spec()
  spec.samples, spec.format, spec.tracecount = list(range(traces.shape[1])), int(fmt), len(traces)
  spec.endian = endian
  with segyio.create(str(path), spec) as f:
    f.text[0] = segyio.tools.create_text_header({1: "salt_jax test volume", 2: str(pathlib.Path(path).name)})
    f.bin.update({segyio.BinField.Interval: 4000, segyio.BinField.SortingCode: 2})
    for t, (il, xl) in enumerate(ilxl):
      f.header[t] = {segyio.TraceField.INLINE_3D: il, segyio.TraceField.CROSSLINE_3D: xl,
                     segyio.TraceField.CDP: 1000 + t, segyio.TraceField.TRACE_SAMPLE_INTERVAL: 4000}
      f.trace[t] = np.ascontiguousarray(traces[t])
  return pathlib.Path(path)


def _amplitudes(images):
  """uint8 grey -> float32 amplitudes; the volume's 0th and 100th percentile are 0 and 255 after mapping."""
  return (images.astype(np.float32) - 128.0) * 37.5


def _strip(data_dir):
  """(N_SAMPLES, 808) uint8: 8 real tiles side by side (depth down, as the competition draws them), each
  extended downwards by its own top rows."""
  return np.concatenate([np.concatenate([t, t[:N_SAMPLES - TILE]], 0) for t in _real_tiles(data_dir, 8)], 1)


def _real_cube(data_dir, n_il, n_xl):
  """(n_il, n_xl, N_SAMPLES) uint8 whose inline i section (samples down, crosslines across) is the strip's
  columns from 37 i on; one sample 0 and one 255 fix the volume's scaling."""
  strip = _strip(data_dir)
  cube = np.stack([strip[:, 37 * i % (strip.shape[1] - n_xl):][:, :n_xl].T for i in range(n_il)])
  cube[0, 0, 0], cube[0, 0, 1] = 0, 255
  return cube


def _cube_file(path, cube, ilines, xlines, fmt=segyio.SegySampleFormat.IEEE_FLOAT_4_BYTE, endian="big",
               amplitudes=_amplitudes):
  ilxl = [(il, xl) for il in ilines for xl in xlines]
  return _write_segy(path, amplitudes(cube).reshape(-1, cube.shape[2]), ilxl, fmt, endian)


def _fill_unassigned_bytes(path, width, endian):
  """Writes distinct non-zero bytes into binary header bytes 3261-3264 and trace header bytes 233-240 of
  every trace (unassigned in SEG-Y rev 1: segyio neither reads nor writes them) of a file with `width`-byte
  samples and no extended text header."""
  data = bytearray(pathlib.Path(path).read_bytes())
  data[3260:3264] = b"\x11\x22\x33\x44"
  record = 240 + width * int.from_bytes(data[3220:3222], endian)
  for t in range((len(data) - 3600) // record):
    data[3600 + t * record + 232:3600 + t * record + 240] = b"SEG%05d" % t
  pathlib.Path(path).write_bytes(bytes(data))


def _raw_headers(path, width, endian):
  """(the first 3,600 bytes, [each trace's 240 header bytes]) of a file with `width`-byte samples."""
  data = pathlib.Path(path).read_bytes()
  record = 240 + width * int.from_bytes(data[3220:3222], endian)
  return data[:3600], [data[start:start + 240] for start in range(3600, len(data), record)]


def _scaled(volume, percentiles=(1, 99)):
  """(n_il, n_xl, n_samples) uint8: the whole volume scaled as segment scales it (vol.volume_range)."""
  lo, hi, _ = vol.volume_range(volume, percentiles)
  return files.scale_uint8(volume.read_sections("inline", *segy.select(volume)), lo, hi)


def _segment_cube(cube, direction, snapshots, loader, value):
  """(n_il, n_xl, n_samples) float32: every section of a uint8 cube in one direction segmented on its own
  (infer.segment_section, stride 101): its blended probabilities ("probs") or its vote ("votes")."""
  out = np.zeros(cube.shape, np.float32)
  for k in range(cube.shape[0] if direction == "inline" else cube.shape[1]):
    result = infer.segment_section((cube[k] if direction == "inline" else cube[:, k]).T, snapshots, loader,
                                   TILE, value == "probs")
    values = (result.probs if value == "probs" else result.votes).T
    if direction == "inline":
      out[k] = values
    else:
      out[:, k] = values
  return out


def _headers(path, **kw):
  with segyio.open(str(path), ignore_geometry=True, **kw) as f:
    return f.text[0], dict(f.bin), [dict(h) for h in f.header]


def _traces(path):
  with segyio.open(str(path), ignore_geometry=True) as f:
    return f.trace.raw[:], f.format


def _check_copy_of(source, output, formatted, endian="big"):
  """The output has the source's text header, binary header (format 5) and trace headers."""
  text, binary, headers = _headers(source, endian=endian)
  out_text, out_binary, out_headers = _headers(output, endian=endian)
  assert out_text == text and out_headers == headers
  assert out_binary.pop(segyio.BinField.Format) == segy.IEEE_FLOAT
  assert binary.pop(segyio.BinField.Format) == formatted and out_binary == binary


ILINES = np.arange(21, 21 + 4)
XLINES = np.arange(300, 300 + 2 * 150, 2)


def test_geometry_orientation_and_volume_scaling(tmp_path, data_dir):
  cube = _real_cube(data_dir, len(ILINES), len(XLINES))
  volume = segy.open_volume(_cube_file(tmp_path / "v.sgy", cube, ILINES, XLINES))
  assert volume.is_3d and volume.shape == cube.shape
  np.testing.assert_array_equal(volume.ilines, ILINES)
  np.testing.assert_array_equal(volume.xlines, XLINES)
  il_index, xl_index = segy.select(volume, (22, 23), (304, 309))
  np.testing.assert_array_equal(il_index, [1, 2])
  np.testing.assert_array_equal(xl_index, [2, 3, 4])
  lo, hi, n = vol.volume_range(volume, (0, 100))
  assert (lo, hi, n) == (-128 * 37.5, 127 * 37.5, len(ILINES) * len(XLINES))
  full = _scaled(volume, (0, 100))
  np.testing.assert_array_equal(full, cube)  # the mapping inverts the amplitudes exactly here
  np.testing.assert_array_equal(full[1].T, _strip(data_dir)[:, 37:37 + len(XLINES)])  # samples down
  crossline = volume.read_sections("crossline", np.array([7]), np.arange(len(ILINES)))
  crossline = files.scale_uint8(crossline, lo, hi)
  np.testing.assert_array_equal(crossline[0], cube[:, 7])
  line = segy.open_volume(_write_segy(tmp_path / "l.sgy", _amplitudes(cube[0]), [(0, 0)] * len(XLINES)))
  assert not line.is_3d and line.shape == (1, len(XLINES), N_SAMPLES)


def test_a_3d_volume_and_a_2d_line_through_the_tiny_model(tmp_path, tiny_model, data_dir, capsys):
  workdir = _workdir(tmp_path / "wd", tiny_model)
  cube = _real_cube(data_dir, len(ILINES), len(XLINES))
  source = _cube_file(tmp_path / "ibm.sgy", cube, ILINES, XLINES, segyio.SegySampleFormat.IBM_FLOAT_4_BYTE)
  out = tmp_path / "out"
  record = _run([f"--workdirs={workdir}", f"--input={source}", f"--out={out}", "--inlines=22:23",
                 "--stride=101", "--batch_size=8", "--png_inlines=23"])[0]
  assert json.loads(capsys.readouterr().out) == record
  assert record["sections"] == 2 and record["shape"] == [2, len(XLINES), N_SAMPLES]
  output = out / "ibm_probs.sgy"
  _check_copy_of(source, output, segyio.SegySampleFormat.IBM_FLOAT_4_BYTE)
  with segyio.open(str(output)) as g:
    np.testing.assert_array_equal(g.ilines, ILINES)
    np.testing.assert_array_equal(g.xlines, XLINES)
    assert len(g.samples) == N_SAMPLES and str(g.format) == "4-byte IEEE float"
    probs = segyio.tools.cube(g)
  assert probs.dtype == np.float32 and 0 <= probs.min() and probs.max() <= 1
  assert not probs[[0, 3]].any() and probs[1:3].std() > 0  # unselected inlines hold 0
  # The selected inlines are the library's result on the volume-scaled cube.
  volume = segy.open_volume(source)
  il_index, xl_index = segy.select(volume, (22, 23))
  selected = _scaled(volume)[il_index][:, xl_index]
  expected = _segment_cube(selected, "inline", infer.find_snapshots([workdir]),
                           infer.SnapshotLoader(batch_size=8, keep=True), "probs")
  np.testing.assert_allclose(probs[1:3], expected, rtol=0, atol=1e-6)
  mask_png = cv2.imread(str(out / "ibm_inline23_mask.png"), cv2.IMREAD_UNCHANGED)
  assert mask_png.shape == (N_SAMPLES, len(XLINES)) and set(np.unique(mask_png)) <= {0, 255}
  assert cv2.imread(str(out / "ibm_inline23_overlay.png")).shape == (N_SAMPLES, len(XLINES), 3)
  # A 2-D line (no inline/crossline numbers): one section of its traces, the mask written.
  line = _write_segy(tmp_path / "line.segy", _amplitudes(cube[1]), [(0, 0)] * len(XLINES))
  _run([f"--workdirs={workdir}", f"--input={line}", f"--out={out}", "--stride=101", "--batch_size=8",
        "--write=mask"])
  _check_copy_of(line, out / "line_mask.segy", segyio.SegySampleFormat.IEEE_FLOAT_4_BYTE)
  mask, _ = _traces(out / "line_mask.segy")
  assert mask.shape == (len(XLINES), N_SAMPLES) and set(np.unique(mask)) <= {0.0, 1.0}
  assert sorted(p.name for p in out.iterdir()) == ["ibm_inline23_mask.png", "ibm_inline23_overlay.png",
                                                   "ibm_probs.sgy", "line_mask.segy"]


@pytest.fixture
def fake_model(tmp_path, tiny_model, monkeypatch):
  """A workdir whose one snapshot is replaced by a window function that depends on the whole window."""
  monkeypatch.setattr(infer, "SnapshotLoader", lambda kind="max_map", batch_size=None, keep=False:
                      _FakeLoader(_contextual, {0: 0.3}))
  return _workdir(tmp_path / "wd", tiny_model)


def test_both_directions_average_the_inline_and_crossline_volumes(tmp_path, data_dir, fake_model):
  ilines, xlines = np.arange(1, 103), np.arange(1, 106)
  cube = _real_cube(data_dir, len(ilines), len(xlines))
  source = _cube_file(tmp_path / "v.sgy", cube, ilines, xlines)
  volume = segy.open_volume(source)
  scaled = _scaled(volume)
  snaps = infer.find_snapshots([fake_model])
  direction = {(d, v): _segment_cube(scaled, d, snaps, infer.SnapshotLoader(), v)
               for d in ("inline", "crossline") for v in ("probs", "votes")}
  assert not np.array_equal(direction["inline", "probs"], direction["crossline", "probs"])
  for write, value in (("probs", "probs"), ("mask", "votes")):
    _run([f"--workdirs={fake_model}", f"--input={source}", f"--out={tmp_path / 'out'}", "--sections=both",
          "--stride=101", f"--write={write}"])
    with segyio.open(str(tmp_path / "out" / f"v_{write}.sgy")) as g:
      written = segyio.tools.cube(g)
    mean = (direction["inline", value] + direction["crossline", value]) / 2
    if write == "mask":
      mean = (mean >= 0.5).astype(np.float32)
      assert set(np.unique(written)) == {0.0, 1.0}
    np.testing.assert_array_equal(written, mean)
  # One direction alone is that direction's volume; a crossline range keeps the rest of the volume at 0.
  _run([f"--workdirs={fake_model}", f"--input={source}", f"--out={tmp_path / 'x'}", "--sections=crossline",
        "--stride=101", "--crosslines=3:4"])
  with segyio.open(str(tmp_path / "x" / "v_probs.sgy")) as g:
    written = segyio.tools.cube(g)
  np.testing.assert_array_equal(written[:, 2:4], direction["crossline", "probs"][:, 2:4])
  assert not written[:, :2].any() and not written[:, 4:].any()


@pytest.mark.filterwarnings("ignore:Unknown trace value format 4:UserWarning")  # segyio, writing fixed.sgy
def test_bad_files_and_outputs_are_refused_in_one_line(tmp_path, data_dir, fake_model, capsys):
  cube = _real_cube(data_dir, len(ILINES), len(XLINES))
  good = _cube_file(tmp_path / "good.sgy", cube, ILINES, XLINES)
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "text.sgy").write_bytes(b"not a seg-y file\n" * 400)
  (bad / "cut.sgy").write_bytes(good.read_bytes()[:-100])
  flat = _amplitudes(cube).reshape(-1, N_SAMPLES)
  fixed = _write_segy(bad / "fixed.sgy", flat[:150], [(0, 0)] * 150,
                      segyio.SegySampleFormat.FIXED_POINT_WITH_GAIN_4_BYTE)
  (bad / "code.sgy").write_bytes(good.read_bytes()[:3224] + b"\x00\x00" + good.read_bytes()[3226:])
  (bad / "short.sgy").write_bytes(good.read_bytes()[:3000])
  holes = [(il, xl) for il in ILINES for xl in XLINES][:-1]
  _write_segy(bad / "holes.sgy", flat[:-1], holes)
  nan = flat[:150].copy()
  nan[3, 5] = np.nan
  _write_segy(bad / "nan.sgy", nan, [(0, 0)] * 150)
  taken = tmp_path / "taken"
  taken.mkdir()
  (taken / "good_probs.sgy").write_bytes(b"an earlier result")
  (tmp_path / "a_file").write_text("")
  cases = {
      "not a SEG-Y": ([f"--input={bad / 'text.sgy'}"], f"{bad / 'text.sgy'}: not a readable SEG-Y file"),
      "truncated": ([f"--input={bad / 'cut.sgy'}"], f"{bad / 'cut.sgy'}: not a readable SEG-Y file "
                    "(segyio: trace count inconsistent with file size"),
      "no format code": ([f"--input={bad / 'code.sgy'}"], f"{bad / 'code.sgy'}: not a readable SEG-Y file "
                         "(its sample format code reads 0 big-endian and 0 little-endian; neither is a SEG-Y "
                         "format)"),
      "headers cut": ([f"--input={bad / 'short.sgy'}"], f"{bad / 'short.sgy'}: not a readable SEG-Y file "
                      "(3000 bytes, shorter than its 3,600-byte headers)"),
      "fixed point": ([f"--input={fixed}"], f"{fixed}: sample format 4 (4-byte fixed point with gain) is not "
                      "supported; segment reads formats 1, 2, 3, 5, 6, 8, 9, 10, 11, 12, 16 (segyio's)"),
      "irregular": ([f"--input={bad / 'holes.sgy'}"], f"{bad / 'holes.sgy'}: the traces' inline and "
                    "crossline numbers (bytes 189, 193) do not form a complete sorted grid (4 inlines x 150 "
                    "crosslines for 599 traces)"),
      "NaN": ([f"--input={bad / 'nan.sgy'}"], f"{bad / 'nan.sgy'}: 1 NaN or infinite sample(s)"),
      "empty selection": ([f"--input={good}", "--inlines=500:600"], f"{good}: --inlines=500:600 selects "
                          "nothing; the volume's numbers run from 21 to 24"),
      "png outside": ([f"--input={good}", "--png_inlines=30"], f"{good}: --png_inlines 30 is not a selected "
                      "inline (21..24)"),
      "output exists": ([f"--input={good}", f"--out={taken}"], f"--out {taken / 'good_probs.sgy'} already "
                        "exists; pass --overwrite"),
      "unwritable": ([f"--input={good}", f"--out={tmp_path / 'a_file' / 'out'}"], "cannot write --out "
                     f"{tmp_path / 'a_file' / 'out' / 'good_probs.sgy'}: {tmp_path / 'a_file'} is a file"),
  }
  for what, (argv, message) in cases.items():
    out = tmp_path / f"out_{what}"
    has_out = any(a.startswith("--out=") for a in argv)
    with pytest.raises(SystemExit) as info:
      _run([f"--workdirs={fake_model}", "--stride=101", *argv] + ([] if has_out else [f"--out={out}"]))
    err = capsys.readouterr().err
    assert info.value.code == 1, what
    assert err.startswith(f"salt_jax.segment: {message}") and err.count("\n") == 1, (what, err)
    assert not out.exists(), what
  assert [p.name for p in taken.iterdir()] == ["good_probs.sgy"]
  assert (taken / "good_probs.sgy").read_bytes() == b"an earlier result"
  with pytest.raises(SystemExit) as info:  # a SEG-Y flag with a PNG input is a usage error
    _run([f"--workdirs={fake_model}", f"--input={tmp_path / 'x.png'}", f"--out={tmp_path / 'o'}",
          "--sections=both"])
  assert info.value.code == 2 and "--sections applies to a volume --input" in capsys.readouterr().err


@pytest.mark.parametrize("fmt, endian, amplitudes", [
    (segyio.SegySampleFormat.SIGNED_SHORT_2_BYTE, "little", lambda g: (g.astype(np.int16) - 128) * 32),
    (segyio.SegySampleFormat.SIGNED_CHAR_1_BYTE, "big", lambda g: (g.astype(np.int16) - 128).astype(np.int8)),
    (segyio.SegySampleFormat.IEEE_FLOAT_4_BYTE, "little", _amplitudes),
])
def test_narrow_samples_and_little_endian_files(tmp_path, data_dir, fake_model, fmt, endian, amplitudes):
  """1- and 2-byte samples and little-endian files read as the same cube as a big-endian float file of the
  same section, and are written as float32 in the source's byte order with its headers trace for trace."""
  cube = _real_cube(data_dir, len(ILINES), len(XLINES))
  reference = _cube_file(tmp_path / "ref.sgy", cube, ILINES, XLINES)
  source = _cube_file(tmp_path / "v.sgy", cube, ILINES, XLINES, fmt, endian, amplitudes)
  width = {segyio.SegySampleFormat.SIGNED_SHORT_2_BYTE: 2, segyio.SegySampleFormat.SIGNED_CHAR_1_BYTE: 1,
           segyio.SegySampleFormat.IEEE_FLOAT_4_BYTE: 4}[fmt]
  _fill_unassigned_bytes(source, width, endian)
  volume = segy.open_volume(source)
  assert (volume.endian, volume.sample_format, volume.is_3d) == (endian, int(fmt), True)
  full = _scaled(volume, (0, 100))
  np.testing.assert_array_equal(full, cube)  # an exact linear map of the grey levels in every format
  for path in (reference, source):
    _run([f"--workdirs={fake_model}", f"--input={path}", f"--out={tmp_path / 'out'}", "--stride=101",
          "--clip_percentiles=0,100"])
  output = tmp_path / "out" / "v_probs.sgy"
  _check_copy_of(source, output, int(fmt), endian)
  source_head, source_traces = _raw_headers(source, width, endian)
  head, traces = _raw_headers(output, 4, endian)
  assert head[:3224] + head[3226:] == source_head[:3224] + source_head[3226:]  # every byte but the format
  assert int.from_bytes(head[3224:3226], endian) == segy.IEEE_FLOAT
  assert traces == source_traces and len(traces) == len(ILINES) * len(XLINES)
  with segyio.open(str(output), endian=endian) as g, segyio.open(str(tmp_path / "out" / "ref_probs.sgy")) as r:
    assert str(g.format) == "4-byte IEEE float"
    np.testing.assert_array_equal(g.ilines, ILINES)
    np.testing.assert_array_equal(segyio.tools.cube(g), segyio.tools.cube(r))
  assert segy.format_code(output) == (endian, segy.IEEE_FLOAT)


def _gathers_file(path, data_dir, **fields):
  """A SEG-Y of 4 shot gathers of 120 traces (real-tile amplitudes): trace header byte 9 the shot (1..4),
  byte 13 the trace in its gather (1..120), byte 37 the offset (25 m per trace), bytes 189/193 zero."""
  traces = _amplitudes(_strip(data_dir)[:, :480].T)
  spec = segyio.spec()
  spec.samples, spec.format, spec.tracecount = list(range(N_SAMPLES)), 5, 480
  with segyio.create(str(path), spec) as f:
    for t in range(480):
      f.header[t] = {segyio.TraceField.FieldRecord: 1 + t // 120, segyio.TraceField.TraceNumber: 1 + t % 120,
                     segyio.TraceField.offset: 25 * (1 + t % 120), **fields}
      f.trace[t] = np.ascontiguousarray(traces[t])
  return pathlib.Path(path)


def test_pre_stack_lines_empty_files_and_counts(tmp_path, data_dir, fake_model, capsys):
  """Shot gathers (offsets that change from trace to trace) are refused as pre-stack, whatever the byte
  flags say; a file without traces says so; a single trace is "1 trace"."""
  gathers = _gathers_file(tmp_path / "gathers.sgy", data_dir)
  empty = tmp_path / "empty.sgy"
  empty.write_bytes(gathers.read_bytes()[:3600])
  zero = bytearray(gathers.read_bytes()[:3600 + 240])
  zero[3220:3222] = zero[3600 + 114:3600 + 116] = b"\x00\x00"  # 0 samples per trace
  (tmp_path / "zero.sgy").write_bytes(bytes(zero))
  pre_stack = (f"{gathers}: its traces hold 120 different offsets (trace header byte 37): pre-stack data; "
               "segment reads post-stack data (one trace per position)")
  cases = {"2-D gathers": ([f"--input={gathers}"], pre_stack),
           "by shot and trace": ([f"--input={gathers}", "--iline_byte=9", "--xline_byte=13"], pre_stack),
           "by shot and CDP": ([f"--input={gathers}", "--iline_byte=9", "--xline_byte=21"], pre_stack),
           "no traces": ([f"--input={empty}"], f"{empty}: no traces (the file ends after its headers); "
                         "nothing to segment"),
           "no samples": ([f"--input={tmp_path / 'zero.sgy'}"], f"{tmp_path / 'zero.sgy'}: 1 trace of 0 "
                          "samples; nothing to segment")}
  for what, (argv, message) in cases.items():
    out = tmp_path / f"out_{what}"
    with pytest.raises(SystemExit) as info:
      _run([f"--workdirs={fake_model}", f"--out={out}", *argv])
    err = capsys.readouterr().err
    assert info.value.code == 1 and err == f"salt_jax.segment: {message}\n", (what, err)
    assert not out.exists(), what


def test_sections_smaller_than_a_tile_are_reflect_padded(tmp_path, data_dir, fake_model, caplog):
  """A 4 x 18 x 75 volume of real tiles (inline sections 75 x 18, crossline sections 75 x 4) and a 2-D line
  of one trace are segmented with a note per direction; each section's result is the window function on
  the section reflect-padded to a tile, cropped back."""
  ilines, xlines = np.arange(1, 5), np.arange(10, 28)
  cube = _real_cube(data_dir, len(ilines), len(xlines))[:, :, :75]
  source = _cube_file(tmp_path / "small.sgy", cube, ilines, xlines)
  line = _write_segy(tmp_path / "trace.sgy", _amplitudes(cube[1, 3:4]), [(0, 0)])
  with caplog.at_level("INFO"):
    _run([f"--workdirs={fake_model}", f"--input={source}", f"--out={tmp_path / 'out'}", "--sections=both",
          "--clip_percentiles=0,100"])
    _run([f"--workdirs={fake_model}", f"--input={line}", f"--out={tmp_path / 'out'}"])
  notes = [r.getMessage() for r in caplog.records if "smaller than a 101 x 101 tile" in r.getMessage()]
  assert notes == [f"{source}: its {d} sections are 75 samples x {n}, smaller than a 101 x 101 tile; each "
                   "is reflect-padded to a tile, its result keeps its size"
                   for d, n in (("inline", "18 crosslines"), ("crossline", "4 inlines"))] + [
                   f"{line}: its inline sections are 75 samples x 1 trace, smaller than a 101 x 101 tile; "
                   "each is reflect-padded to a tile, its result keeps its size"]
  inline = np.stack([_padded_prediction(cube[i].T, _contextual).T for i in range(len(ilines))])
  crossline = np.stack([_padded_prediction(cube[:, j].T, _contextual).T for j in range(len(xlines))], 1)
  with segyio.open(str(tmp_path / "out" / "small_probs.sgy")) as g:
    np.testing.assert_array_equal(segyio.tools.cube(g), (inline + crossline) / 2)
  one, _ = _traces(tmp_path / "out" / "trace_probs.sgy")
  assert one.shape == (1, 75)
  scaled = _scaled(segy.open_volume(line))
  np.testing.assert_array_equal(one, _padded_prediction(scaled[0].T, _contextual).T)


class _Killed(BaseException):
  """A stand-in for SIGKILL: nothing in the command catches it."""


def _run_killed(argv, where, monkeypatch):
  """Runs the command until `where(chunk index, stage)` says to stop: stage "written" is after a chunk's
  traces are written (its marker not yet), "done" after the chunk is recorded finished."""
  real_run_chunk, real_write = vol.run_chunk, segy.Volume.write_output
  current = {}

  def run_chunk(job, chunk, snapshots, loader):
    current["chunk"] = chunk.index
    real_run_chunk(job, chunk, snapshots, loader)
    if where(chunk.index, "done"):
      raise _Killed()

  def write_output(self, target, il_pos, xl_pos, values):
    real_write(self, target, il_pos, xl_pos, values)
    if where(current["chunk"], "written"):
      raise _Killed()
  with monkeypatch.context() as m:
    m.setattr(vol, "run_chunk", run_chunk)
    m.setattr(segy.Volume, "write_output", write_output)
    with pytest.raises(_Killed):
      _run(argv)


def test_a_killed_run_resumes_to_the_same_bytes(tmp_path, data_dir, fake_model, monkeypatch, capsys):
  """Chunks of 2 sections: a run killed after some chunks (or after writing a chunk's traces, before its
  marker, in the crossline pass of --sections=both) and run again gives the bytes of an uninterrupted run;
  finished chunks' traces are in the partial output as the chunks finish; other options are refused."""
  ilines, xlines = np.arange(1, 8), np.arange(1, 106)
  cube = _real_cube(data_dir, len(ilines), len(xlines))
  source = _cube_file(tmp_path / "v.sgy", cube, ilines, xlines)
  for directions, write, kill in (("inline", "probs", lambda c, stage: c == 1 and stage == "done"),
                                ("both", "mask", lambda c, stage: c == 30 and stage == "written")):
    argv = [f"--workdirs={fake_model}", f"--input={source}", f"--sections={directions}", f"--write={write}",
            "--chunk_sections=2"]
    whole = _run(argv + [f"--out={tmp_path / 'whole'}"])[0]
    out = tmp_path / f"resumed_{directions}"
    _run_killed(argv + [f"--out={out}"], kill, monkeypatch)
    partial = out / f".v_{write}.sgy.partial"
    assert sorted(p.name for p in out.iterdir()) == [partial.name]  # nothing under the final name
    if directions == "inline":  # chunks 0 and 1 (inlines 1-4) finished: their traces are written
      with segyio.open(str(tmp_path / "whole" / f"v_{write}.sgy")) as g:
        expected = segyio.tools.cube(g)
      with segyio.open(str(partial / "output.sgy")) as g:
        written = segyio.tools.cube(g)
      np.testing.assert_array_equal(written[:4], expected[:4])
      assert not written[4:].any()
      for flag in ("--stride=50", "--clip_percentiles=2,98"):
        with pytest.raises(SystemExit):
          _run(argv + [f"--out={out}", flag])
        err = capsys.readouterr().err
        assert err.startswith(f"salt_jax.segment: --out {out / 'v_probs.sgy'}: an unfinished run started "
                              "with other options or input is there (") and err.count("\n") == 1, err
    capsys.readouterr()
    record = _run(argv + [f"--out={out}"])[0]
    assert record["chunks_resumed"] > 0 and record["chunks"] == whole["chunks"]
    assert (out / f"v_{write}.sgy").read_bytes() == (tmp_path / "whole" / f"v_{write}.sgy").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == [f"v_{write}.sgy"]
    assert record["mean"] == whole["mean"]
    with pytest.raises(SystemExit):  # finished: a third run is refused
      _run(argv + [f"--out={out}"])
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "whole")


def test_chunks_depend_on_the_selection_only_and_batches_run_across_sections():
  shape = (102, 105, 110)
  chunks = vol.plan_chunks(shape, 102, 105, ("inline", "crossline"))
  assert [c.direction for c in chunks] == ["inline", "crossline"]  # 102 x 105 x 110 px: one chunk each
  assert vol.plan_chunks(shape, 10, 105, ("inline",), 3) == [
      vol.Chunk(0, "inline", 0, 3), vol.Chunk(1, "inline", 3, 6), vol.Chunk(2, "inline", 6, 9),
      vol.Chunk(3, "inline", 9, 10)]
  big = vol.plan_chunks((500, 3000, 2000), 500, 3000, ("inline",))
  assert len(big) == 500 and {c.n_sections for c in big} == {1}  # a section above CHUNK_PIXELS: one a chunk
  assert {c.n_sections for c in vol.plan_chunks((500, 300, 200), 500, 300, ("inline",))} == {
      vol.CHUNK_PIXELS // (300 * 200), 500 % (vol.CHUNK_PIXELS // (300 * 200))}
  # An output stored in blocks of 4 inlines, the selection from inline index 3: no chunk crosses a block.
  aligned = vol.plan_chunks(shape, 10, 105, ("inline",), 3, {"inline": (3, 4)})
  assert [(c.start, c.stop) for c in aligned] == [(0, 1), (1, 4), (4, 5), (5, 8), (8, 9), (9, 10)]
  # 102 sections of 110 x 105 px, 4 windows each: one stack fills batches of 64 across the sections.
  stack = np.random.default_rng(0).integers(0, 256, (102, 110, 105), dtype=np.uint8)
  lay = sections.layout(stack.shape[1:], TILE)
  calls = []
  fn = lambda w: (calls.append(len(w)), _contextual(w))[1]
  out = sections.blend_stack(np.stack([sections.pad(s, lay) for s in stack]), lay, fn, 64)
  assert calls == [64] * 6 + [408 - 6 * 64]
  for k in (0, 57, 101):
    np.testing.assert_array_equal(out[k], sections.blend(sections.pad(stack[k], lay), lay,
                                                                  _contextual, 64))


def test_percentiles_are_exact_below_the_limit_and_from_evenly_spaced_traces_above(tmp_path, data_dir):
  cube = _real_cube(data_dir, len(ILINES), len(XLINES))
  volume = segy.open_volume(_cube_file(tmp_path / "v.sgy", cube, ILINES, XLINES))
  amplitudes = _amplitudes(cube).reshape(-1, N_SAMPLES)
  lo, hi, n = vol.volume_range(volume, (1, 99))
  assert n == 600 and (lo, hi) == tuple(np.percentile(amplitudes, (1, 99)))
  lo, hi, n = vol.volume_range(volume, (1, 99), max_samples=50 * N_SAMPLES)
  picks = segy.sample_positions(600, 50)
  assert n == len(picks) == 50 and picks[0] == 0 and picks[-1] == 599
  np.testing.assert_array_equal(np.diff(picks) >= 12, True)  # spread evenly through the file
  assert (lo, hi) == tuple(np.percentile(amplitudes[picks], (1, 99)))


def test_dask_local_workers_write_the_same_bytes_as_one_process(tmp_path, tiny_model, data_dir, capsys):
  """--dask=local:2 (two worker processes, the random tiny model compiled in each) writes the bytes of
  one process, chunk by chunk, and its record says both workers ran tasks."""
  workdir = _workdir(tmp_path / "wd", tiny_model)
  ilines, xlines = np.arange(1, 7), np.arange(1, 120)
  source = _cube_file(tmp_path / "v.sgy", _real_cube(data_dir, len(ilines), len(xlines)), ilines, xlines)
  argv = [f"--workdirs={workdir}", f"--input={source}", "--chunk_sections=1", "--batch_size=8",
          "--png_inlines=3"]
  here = _run(argv + [f"--out={tmp_path / 'here'}"])[0]
  spread = _run(argv + [f"--out={tmp_path / 'dask'}", "--dask=local:2"])[0]
  assert (here["workers"], spread["workers"], spread["chunks"]) == (1, 2, 6)
  for name in ("v_probs.sgy", "v_inline3_mask.png", "v_inline3_overlay.png"):
    assert (tmp_path / "dask" / name).read_bytes() == (tmp_path / "here" / name).read_bytes(), name
  assert here["mean"] == spread["mean"]
  with pytest.raises(SystemExit) as info:
    _run(argv + [f"--out={tmp_path / 'x'}", "--dask=local:0"])
  err = capsys.readouterr().err
  assert info.value.code == 2 and "--dask must be local:N (N >= 1 workers started here)" in err


def test_an_mdio_volume_made_by_multidimio_is_segmented_and_exported_with_the_source_headers(
    tmp_path, data_dir, fake_model, monkeypatch):
  """A SEG-Y of real tiles, converted by multidimio (`segy_to_mdio`, file headers kept), is segmented into
  <stem>_probs.mdio: its default variable holds the SEG-Y run's values, its coordinates and headers are
  the input's, and the library's exporter writes a SEG-Y with the source's trace headers."""
  import pandas
  mdio = pytest.importorskip("mdio")
  if int(pandas.__version__.split(".")[0]) >= 3:
    pytest.skip("multidimio 1.1's SEG-Y reader (segy) needs pandas < 3, which requirements.txt resolves to")
  from mdio.builder.template_registry import get_template
  from segy.schema import ScalarType
  from segy.standards import get_segy_standard
  ilines, xlines = np.arange(1, 6), np.arange(1, 106)
  cube = _real_cube(data_dir, len(ilines), len(xlines))
  spec = segyio.spec()
  spec.ilines, spec.xlines, spec.samples = ilines, xlines, np.arange(N_SAMPLES)
  spec.format, spec.sorting = 5, segyio.TraceSortingFormat.INLINE_SORTING
  source = tmp_path / "v.sgy"
  with segyio.create(str(source), spec) as f:
    f.text[0] = segyio.tools.create_text_header({1: "salt_jax test volume for MDIO"})
    f.bin.update({segyio.BinField.Interval: 4000})
    for t, (i, j) in enumerate((i, j) for i in range(len(ilines)) for j in range(len(xlines))):
      f.header[t] = {segyio.TraceField.INLINE_3D: int(ilines[i]),
                     segyio.TraceField.CROSSLINE_3D: int(xlines[j]),
                     segyio.TraceField.CDP_X: 1000 + 25 * j, segyio.TraceField.CDP_Y: 2000 + 25 * i,
                     segyio.TraceField.SourceGroupScalar: 1, segyio.TraceField.CDP: 7 + t}
      f.trace[t] = _amplitudes(cube[i, j])
  monkeypatch.setenv("MDIO__IMPORT__SAVE_SEGY_FILE_HEADER", "true")
  mdio.segy_to_mdio(get_segy_standard(1.0), get_template("PostStack3DTime"), str(source),
                    str(tmp_path / "v.mdio"))
  for path in (source, tmp_path / "v.mdio"):
    _run([f"--workdirs={fake_model}", f"--input={path}", f"--out={tmp_path / 'out'}", "--sections=both",
          "--chunk_sections=2"])
  out = mdio.open_mdio(str(tmp_path / "out" / "v_probs.mdio"))
  with segyio.open(str(tmp_path / "out" / "v_probs.sgy")) as g:
    expected = segyio.tools.cube(g)
  assert out.attrs["attributes"]["defaultVariableName"] == "salt" and "amplitude" not in out
  np.testing.assert_array_equal(out["salt"].values, expected)
  original = mdio.open_mdio(str(tmp_path / "v.mdio"))
  for name in ("inline", "crossline", "time", "cdp_x", "cdp_y", "trace_mask"):
    np.testing.assert_array_equal(out[name].values, original[name].values)
  assert out["headers"].values.tobytes() == original["headers"].values.tobytes()
  assert out["salt"].encoding["chunks"] == original["amplitude"].encoding["chunks"]
  assert out["salt"].dtype == np.float32 and out["salt"].encoding["dtype"] == np.float32  # stored so
  export = get_segy_standard(1.0)  # its traces default to IBM floats; the result is IEEE float32
  export.trace.data.format = ScalarType.FLOAT32
  mdio.mdio_to_segy(export, str(tmp_path / "out" / "v_probs.mdio"), str(tmp_path / "e.sgy"))
  _, _, source_headers = _headers(source)
  _, _, exported_headers = _headers(tmp_path / "e.sgy")
  assert exported_headers == source_headers
  with segyio.open(str(tmp_path / "e.sgy")) as g:
    np.testing.assert_array_equal(segyio.tools.cube(g), expected)
