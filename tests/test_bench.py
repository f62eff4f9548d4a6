"""Smoke test of the benchmark CLI (tiny settings; no timing assertions)."""
import json

import pytest

from salt_jax import bench


def test_bench_prints_one_json_line_per_figure(capsys):
  rows = bench.main(["--model=model_tiny", "--batch=2", "--steps=1", "--warmup=0", "--lovasz_batch=2"])
  lines = [json.loads(l) for l in capsys.readouterr().out.splitlines()]
  assert [r["figure"] for r in lines] == ["train_images_per_s", "infer_tta_images_per_s", "lovasz_fwd_bwd_ms",
                                          "metric_sweep_s"]
  assert lines == rows
  assert all(r["value"] > 0 for r in rows)
  assert rows[0]["compile_s"] > 0 and rows[0]["tflops_per_s"] > 0
  assert "ratio_vs_torch" not in rows[0]


def test_bench_refuses_other_sizes():
  with pytest.raises(SystemExit):
    bench.main(["--size=256"])
