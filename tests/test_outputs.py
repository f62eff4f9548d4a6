"""Outputs that cannot be written are refused before the work, in one line naming them; an unusable
decoded-data cache is a warning, not an error."""
import errno

import numpy as np
import pytest

from salt_jax import ensemble, fileio
from salt_jax.data import DataSource, kaggle


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
  with pytest.raises(fileio.UnwritableError, match=rf"cannot write {target} \(\[Errno 28\]"):
    with fileio.atomic_path(target) as tmp:
      tmp.write_text("partial")
      raise OSError(errno.ENOSPC, "No space left on device")
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
