"""Outputs that cannot be written are refused before the work, in one line naming them; an unusable
decoded-data cache is a warning, not an error."""
import errno
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from salt_jax import cli, fileio
from salt_jax.data import DataSource, kaggle
from salt_jax.inference import ensemble
from salt_jax.workdir import checkpoints

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_check_writable_names_folders_and_files_in_the_way(tmp_path):
  (tmp_path / "dir").mkdir()
  (tmp_path / "file").write_text("x")
  with pytest.raises(fileio.UnwritableError, match=f"--out {tmp_path / 'dir'} is a folder, not a file"):
    fileio.check_writable(tmp_path / "dir", "--out")
  with pytest.raises(fileio.UnwritableError, match=f"{tmp_path / 'file'} is a file, not a folder"):
    fileio.check_writable(tmp_path / "file" / "sub.csv", "--out")
  assert fileio.check_writable(tmp_path / "new" / "sub.csv") == tmp_path / "new" / "sub.csv"


def test_a_failed_write_names_the_target_and_leaves_nothing(tmp_path):
  target = tmp_path / "x.json"
  with pytest.raises(fileio.UnwritableError) as info:
    with fileio.atomic_path(target) as tmp:
      tmp.write_text("partial")
      raise OSError(errno.ENOSPC, "No space left on device")
  assert str(info.value) == f"cannot write {target} ([Errno 28] No space left on device)"
  assert list(tmp_path.iterdir()) == []
  with pytest.raises(ValueError, match="not a write"):  # not the disk: the error as it is (a bug)
    with fileio.atomic_path(target) as tmp:
      tmp.write_text("partial")
      raise ValueError("not a write")
  assert list(tmp_path.iterdir()) == []


def test_ensemble_refuses_an_unwritable_output_before_voting(tmp_path, mini_data_dir, monkeypatch):
  (tmp_path / "out").mkdir()
  monkeypatch.setattr(ensemble, "model_vote", lambda *a, **k: pytest.fail("voted before checking --out"))
  with pytest.raises(fileio.UnwritableError, match="--out .*out is a folder, not a file"):
    ensemble.ensemble([str(tmp_path)], str(tmp_path / "out"), DataSource(str(mini_data_dir)))
  with pytest.raises(fileio.UnwritableError, match="--report .*is a file, not a folder"):
    (tmp_path / "f").write_text("")
    ensemble.ensemble([str(tmp_path)], str(tmp_path / "s.csv"), DataSource(str(mini_data_dir)),
                      report_png=str(tmp_path / "f" / "b.png"))


def test_a_cache_dir_that_is_a_file_warns_and_loads_without_it(tmp_path, mini_data_dir, caplog):
  not_a_dir = tmp_path / "cache"
  not_a_dir.write_text("")
  plain = kaggle.load_test(str(mini_data_dir))
  cached = kaggle.load_test(str(mini_data_dir), cache_dir=str(not_a_dir))
  np.testing.assert_array_equal(cached.images, plain.images)
  assert any("running without the decoded-data cache" in r.getMessage() for r in caplog.records)
  assert not_a_dir.read_text() == ""


def _exit(capsys, main, define, prog, argv):
  """(exit status, stderr) of a program run in this process as a shell would."""
  with pytest.raises(SystemExit) as info:
    cli.run(main, define, prog=prog, argv=argv)
  return info.value.code, capsys.readouterr().err


def test_the_command_lines_refuse_with_exit_1_and_one_line(tmp_path, mini_data_dir, capsys):
  """The refusals of the reliability cases through the command lines: a bad weight file (train), an
  output in the way (ensemble), a full disk (a DiskError, as checkpoints raise it)."""
  bad = tmp_path / "bad.pth"
  bad.write_bytes(b"")
  workdir = tmp_path / "wd"
  done = subprocess.run([sys.executable, "-m", "salt_jax.train", "--config=configs/tiny.py",
                         f"--workdir={workdir}", f"--config.data_dir={mini_data_dir}",
                         f"--config.init_from={bad}"],
                        cwd=REPO, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 1, done.stderr[-2000:]
  line = done.stderr.strip().splitlines()[-1]
  assert line.startswith(f"salt_jax.train: config.init_from: cannot use {bad} as model_tiny")
  assert "Traceback" not in done.stderr and not workdir.exists()
  (tmp_path / "out").mkdir()
  status, err = _exit(capsys, ensemble.main, ensemble.define_flags, "salt_jax.ensemble",
                      [f"--workdirs={tmp_path}", f"--out={tmp_path / 'out'}", f"--data_dir={mini_data_dir}"])
  assert (status, err) == (1, f"salt_jax.ensemble: --out {tmp_path / 'out'} is a folder, not a file\n")

  def full(argv):
    del argv
    checkpoints.check_room(tmp_path, 1 << 60)

  status, err = _exit(capsys, full, None, "salt_jax.train", [])
  assert status == 1 and "[Errno 28] No space left on device" in err and err.count("\n") == 1


def test_a_disk_that_fills_during_the_background_checkpoint_write_is_one_line_and_leaves_nothing(tmp_path):
  """A state written in the background while the disk is full (ENOSPC at orbax's JSON writes, run as a
  command in a subprocess): one line naming the state's path and errno, exit 1, and no
  `0.orbax-checkpoint-tmp` left behind; before, orbax's threads printed pages of tracebacks."""
  done = subprocess.run([sys.executable, str(REPO / "tests" / "checkpoint_faults.py")], cwd=REPO,
                        env=dict(os.environ, JAX_PLATFORMS="cpu", FAULT="full", ROOT=str(tmp_path)),
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 1, done.stderr[-3000:]
  state = tmp_path / "checkpoints" / "0"
  assert done.stderr.startswith(f"checkpoint_faults full: cannot save checkpoint {state} (OSError: "
                                "[Errno 28] No space left on device"), done.stderr[-3000:]
  assert done.stderr.count("\n") == 1 and "resume from the last saved epoch" in done.stderr
  assert list((tmp_path / "checkpoints").iterdir()) == []


def test_console_keeps_our_lines_and_drops_library_info_unless_verbosity(tiny_run, tmp_path):
  """A program's console shows this package's INFO lines but not orbax's checkpoint phases or JAX's backend
  probe; --verbosity=1 brings them back; --log_dir keeps every line in <log_dir>/<prog>.log."""
  import shutil
  _, workdir, _ = tiny_run
  copy = tmp_path / "run"
  shutil.copytree(workdir, copy)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "salt_jax.predict", f"--workdir={copy}", "--overwrite"]
  quiet = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert quiet.returncode == 0, quiet.stderr[-2000:]
  lines = quiet.stderr.splitlines()
  assert any("validation mAP" in l for l in lines)  # console lines are `HH:MM:SS message`: no file names
  assert not [l for l in lines if "[process=0]" in l or "Unable to initialize backend" in l]
  loud = subprocess.run(cmd + ["--verbosity=1"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert loud.returncode == 0 and "[process=0]" in loud.stderr
  kept = subprocess.run(cmd + [f"--log_dir={tmp_path / 'logs'}"], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600)
  assert kept.returncode == 0 and "[process=0]" not in kept.stderr
  log = (tmp_path / "logs" / "salt_jax.predict.log").read_text()
  assert "[process=0]" in log and "validation mAP" in log
