"""``python -m benchmarks.batch`` on the tiny bundle: every batch size timed in one run, with its clips counted."""

from __future__ import annotations

import json

from benchmarks.batch import format_text, main, run


def test_batch_benchmark_structure(tiny_bundle):
    result = run(bundle_dir=tiny_bundle, batches=[2, 1], frames=2, repeats=2, warmup=0, threads=1)
    assert [r["batch"] for r in result["rows"]] == [1, 2]
    assert result["rows"][0]["ratio_to_smallest"] == 1.0
    assert all(len(r["samples"]) == 2 and r["clips_per_s"]["median"] > 0 for r in result["rows"])
    assert result["machine"]["cpu"] and "vector_extensions" in result["machine"]
    text = format_text(result)
    assert "| 2 |" in text and "clips/s" in text and "unet s/clip" in text


def test_batch_benchmark_cli(tiny_bundle, tmp_path, capsys):
    assert main(["--bundle", str(tiny_bundle), "--batches", "1,3", "--frames", "2", "--repeats", "1", "--warmup", "0",
                 "--threads", "1", "--out", str(tmp_path)]) == 0
    assert "| 3 |" in capsys.readouterr().out
    assert [r["batch"] for r in json.loads((tmp_path / "results.json").read_text())["rows"]] == [1, 3]
    assert main(["--bundle", str(tiny_bundle), "--batches", "1,x"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
