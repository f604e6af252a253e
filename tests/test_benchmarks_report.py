"""Benchmark helpers: timing statistics, configurations, the per-step model, the table and its files."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.errors import BenchmarkError
from benchmarks.report import add_speedups, format_markdown, format_text, paper_entry, with_sampler, write_results
from benchmarks.timing import Stats, interleave, repeat, set_threads, summarize, summarize_dicts
from benchmarks.workload import RunConfig, network_dims


# --------------------------------------------------------------------------- timing


def test_summarize_median_quartiles_extremes():
    s = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.n, s.median, s.q1, s.q3, s.min, s.max) == (5, 3.0, 2.0, 4.0, 1.0, 5.0)
    assert s.iqr == 2.0 and s.spread == pytest.approx(2 / 3)
    assert summarize([2.0]) == Stats(n=1, median=2.0, q1=2.0, q3=2.0, min=2.0, max=2.0)
    assert summarize([1.0, 2.0, 3.0, 10.0]).median == 2.5  # robust to the outlier, unlike the mean
    assert Stats.from_json(s.to_json()) == s
    with pytest.raises(ValueError):
        summarize([])


def test_interleave_round_robin_and_warmup_discarded():
    calls = []

    def sampler(name):
        return lambda: calls.append(name) or len(calls)

    out = interleave({"A": sampler("A"), "B": sampler("B"), "C": sampler("C")}, rounds=2, warmup=1)
    assert calls == ["A", "B", "C"] * 3
    assert out == {"A": [4, 7], "B": [5, 8], "C": [6, 9]}  # the warm-up round's results are dropped
    with pytest.raises(BenchmarkError, match="rounds"):
        interleave({"A": sampler("A")}, rounds=0)


def test_repeat_returns_wall_times(monkeypatch):
    import benchmarks.timing as timing

    ticks = iter([0.0, 1.0, 1.0, 3.0, 3.0, 3.5, 10.0, 14.0])
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(ticks))
    assert repeat(lambda: None, repeats=3, warmup=1) == [2.0, 0.5, 4.0]


def test_summarize_dicts_and_threads():
    stats = summarize_dicts([{"unet": 1.0, "total": 2.0, "steps": 25}, {"unet": 3.0, "total": 4.0, "steps": 25}])
    assert set(stats) == {"unet", "total"} and stats["unet"].median == 2.0
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(BenchmarkError):
        set_threads(0)


# --------------------------------------------------------------------------- configurations and shapes


def test_run_config_parse():
    svd, sfv = RunConfig.parse("svd-25"), RunConfig.parse("SFV-1")
    assert (svd.label, svd.steps, svd.guidance, svd.unet_batch) == ("SVD", 25, True, 2)
    assert svd.pipeline_kwargs() == {"sampler": "euler", "steps": 25, "min_guidance": 1.0, "max_guidance": 3.0, "decoder": "full"}
    assert (sfv.label, sfv.unet_batch) == ("SF-V", 1)
    assert sfv.pipeline_kwargs() == {"sampler": "euler", "steps": 1, "min_guidance": 1.0, "max_guidance": 1.0, "decoder": "full"}
    lcm = RunConfig.parse("lcm-4")
    assert (lcm.steps, lcm.guidance, lcm.unet_batch) == (4, True, 2)
    assert lcm.pipeline_kwargs() == {"sampler": "lcm", "steps": 4, "min_guidance": 1.0, "max_guidance": 1.2, "decoder": "full"}
    for bad in ("svd", "ddim-4", "svd-0", "svd-x"):
        with pytest.raises(BenchmarkError):
            RunConfig.parse(bad)


def test_network_dims_follow_the_clip():
    from contract.errors import ShapeError
    from contract.specs import ModelConfig

    dims = network_dims(ModelConfig(), frames=14, height=576, width=1024, guidance=True)
    assert dims["unet"] == {"batch": 2, "frames": 14, "height": 576, "width": 1024}
    assert dims["vae_decoder"] == {"frames": 14, "height": 576, "width": 1024}
    assert network_dims(ModelConfig(), 14, 576, 1024, guidance=False)["unet"]["batch"] == 1
    with pytest.raises(ShapeError):
        network_dims(ModelConfig(), 14, 500, 1024, guidance=True)


def test_paper_entries():
    assert paper_entry("svd", 25) == {"unet_s": 10.79, "speedup": 36.0}
    assert paper_entry("svd", 16) == {"unet_s": 6.89, "speedup": 23.0}
    assert paper_entry("sfv", 1) == {"unet_s": 0.30, "speedup": 1.0}
    assert paper_entry("svd", 7) is None


# --------------------------------------------------------------------------- per-step model


def _calls():
    def s(x):
        return Stats(n=3, median=x, q1=0.9 * x, q3=1.1 * x, min=0.8 * x, max=1.2 * x)

    return {"preprocess": s(0.01), "image_encoder": s(0.1), "vae_encoder": s(0.2), "unet_b2": s(2.0),
            "unet_b1": s(1.0), "vae_decoder": s(3.0)}


def test_derive_configs_is_steps_times_per_step():
    from benchmarks.per_step import derive_configs

    svd25, sfv = derive_configs(_calls(), [RunConfig.parse("svd-25"), RunConfig.parse("sfv-1")])
    assert svd25["median"]["unet"] == pytest.approx(50.0)  # 25 steps x 2.0 s at batch 2
    assert svd25["median"]["total"] == pytest.approx(0.01 + 0.1 + 0.2 + 50.0 + 3.0)
    assert svd25["q1"]["unet"] == pytest.approx(45.0)
    assert sfv["median"]["unet"] == pytest.approx(1.0)  # one step at batch 1
    assert sfv["median"]["total"] == pytest.approx(4.31)
    assert svd25["speedup_unet"] == pytest.approx(50.0) and svd25["speedup_total"] == pytest.approx(53.31 / 4.31)
    assert svd25["derived"] and svd25["paper"]["unet_s"] == 10.79


def test_check_prediction_relative_errors():
    from benchmarks.per_step import check_prediction

    predicted = [{"name": "svd-25", "median": {"unet": 50.0, "total": 53.0}}]
    measured = [{"name": "svd-25", "median": {"unet": 52.0, "total": 53.0}}]
    check = check_prediction(measured, predicted)
    assert check["configs"]["svd-25"]["unet_error"] == pytest.approx(50 / 52 - 1)
    assert check["configs"]["svd-25"]["total_error"] == 0.0
    assert check["max_abs_error"] == pytest.approx(2 / 52) and check["within_5_percent"]


def test_with_sampler_and_speedups():
    stages = with_sampler({"preprocess": 0.1, "image_encoder": 0.2, "vae_encoder": 0.3, "unet": 1.0,
                         "vae_decoder": 2.0, "total": 4.0, "unet_calls": 1, "steps": 1})
    assert stages["sampler"] == pytest.approx(0.4)
    configs = [{"name": "svd-25", "median": {"unet": 30.0, "total": 40.0}},
               {"name": "sfv-1", "median": {"unet": 1.0, "total": 10.0}}]
    add_speedups(configs, reference="sfv-1")
    assert (configs[0]["speedup_unet"], configs[0]["speedup_total"]) == (30.0, 4.0)
    assert configs[1]["speedup_unet"] == 1.0


# --------------------------------------------------------------------------- table and files


def _result():
    from benchmarks.machine import machine_info
    from benchmarks.per_step import derive_configs
    from contract.specs import ModelConfig

    configs = derive_configs(_calls(), [RunConfig.parse(c) for c in ("svd-25", "svd-16", "sfv-1")])
    return {
        "benchmark": "per_step", "machine": machine_info(1), "backend": "torch",
        "model": {"source": "svd-random", "unet_parameters": 1_524_623_082, "config": ModelConfig().to_json()},
        "shapes": {"frames": 14, "height": 128, "width": 128, "latent_height": 16, "latent_width": 16},
        "settings": {"repeats": 3, "warmup": 1, "threads": 1, "mode": "per-step"},
        "configs": configs,
    }


def test_format_text_has_paper_columns_and_values():
    text = format_text(_result())
    assert "backend torch, model svd-random (UNet 1524.6 M parameters)" in text
    assert "14 frames at 128x128 px (latents 14x16x16)" in text
    rows = {line.split()[0] + line.split()[1]: line for line in text.splitlines() if line.startswith(("SVD", "SF-V"))}
    assert "10.8" in rows["SVD*25"] and "36.0x" in rows["SVD*25"]  # the paper's 25-step time and speedup
    assert "6.89" in rows["SVD*16"] and "23.0x" in rows["SVD*16"]
    assert "50.0" in rows["SVD*25"] and "50.0x" in rows["SVD*25"]  # measured: 25 x 2.0 s over 1.0 s
    assert "* derived: steps x measured per-step" in text


def test_write_results_json_markdown_png(tmp_path):
    result = _result()
    paths = write_results(result, tmp_path / "out")
    data = json.loads(paths["json"].read_text())
    assert data["configs"][0]["median"]["unet"] == pytest.approx(50.0)
    assert [c["name"] for c in data["configs"]] == ["svd-25", "svd-16", "sfv-1"]
    md = paths["markdown"].read_text()
    assert md.startswith("# SF-V speedup") and md == format_markdown(result)
    assert "| SVD* | 25 | yes |" in md
    png = paths["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not list((tmp_path / "out").glob(".*"))  # no temporary files left behind


# --------------------------------------------------------------------------- roofline


def test_count_flops_linear_and_conv():
    from benchmarks.flops import count_flops, fraction_of_peak

    linear = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    assert count_flops(linear, [x]) == 2 * 2 * 4 * 3  # 2 FLOPs per multiply-add
    assert count_flops(linear, [x], fake=False) == 48
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    assert count_flops(conv, [torch.randn(1, 3, 5, 5)]) == 2 * 8 * 5 * 5 * 3 * 3 * 3
    assert fraction_of_peak(2e9, 0.5, 8.0) == pytest.approx(0.5)
    with pytest.raises(BenchmarkError):
        fraction_of_peak(1, 0.0, 1.0)


def test_gemm_gflops_is_positive():
    from benchmarks.flops import gemm_gflops

    s = gemm_gflops(size=64, repeats=3, warmup=1)
    assert s.n == 3 and 0 < s.min <= s.median <= s.max


def test_speedup_cli_reports_bad_options(capsys):
    from benchmarks.speedup import main

    assert main(["--configs", "svd-25", "ddim-4", "--mode", "loop"]) == 2
    assert "error: unknown configuration kind 'ddim'" in capsys.readouterr().err


def test_contention_warning():
    from benchmarks.machine import contention_warning

    assert contention_warning({"load_average": [0.2, 0, 0], "cores": 2, "threads": 2}) is None
    text = contention_warning({"load_average": [6.7, 5, 5], "cores": 2, "threads": 2})
    assert "load average 6.7 on 2 cores" in text and "--threads 1" in text


# --------------------------------------------------------------------------- spreads, shares, machine


def test_speedups_carry_the_quartiles_of_round_by_round_ratios():
    rounds = lambda unet: [{"unet": u, "total": u + 1.0} for u in unet]
    configs = [{"name": "svd-25", "median": {"unet": 30.0, "total": 31.0}, "samples": rounds([28.0, 30.0, 33.0]), "n": 3},
               {"name": "sfv-1", "median": {"unet": 1.0, "total": 2.0}, "samples": rounds([1.0, 1.0, 1.1]), "n": 3}]
    add_speedups(configs, reference="sfv-1")
    q1, q3 = configs[0]["speedup_unet_q"]
    assert q1 <= configs[0]["speedup_unet"] <= q3 and (q1, q3) == pytest.approx((29.0, 30.0))
    from benchmarks.report import speedup_rows

    configs = [{**c, "label": "X", "steps": 1, "guidance": False, "q1": c["median"], "q3": c["median"]} for c in configs]
    assert speedup_rows({"configs": configs})[1][0][5] == "30.0x [29.0-30.0]"


def test_stage_shares_sum_to_100_percent():
    from benchmarks.report import shares
    from contract.specs import STAGES

    # Medians per stage need not add up to the median total: shares are of the stages' sum.
    c = {"median": {"preprocess": 0.1, "image_encoder": 0.1, "vae_encoder": 0.1, "unet": 1.0, "vae_decoder": 3.0,
                    "sampler": 0.2, "total": 3.0}}
    assert sum(shares(c)[s] for s in STAGES) == pytest.approx(100.0)


def test_failed_per_step_check_is_a_marked_warning_with_its_reason():
    from benchmarks.report import format_per_step_check

    row = {"unet_predicted": 1.6, "unet_measured": 1.0, "unet_error": 0.6, "total_predicted": 2.0,
           "total_measured": 1.9, "total_error": 0.05}
    text = format_per_step_check({"configs": {"svd-2": row}, "max_abs_error": 0.6, "within_5_percent": False,
                                  "reason": "load 10 on 2 cores"})
    assert "WARNING: per-step model check FAILED: largest |error| 60.0%" in text and "load 10 on 2 cores" in text
    assert "PASSED" not in text


def test_machine_info_records_vector_extensions_and_load():
    from benchmarks.machine import describe, machine_info
    from contract.environment import VECTOR_FLAGS

    info = machine_info(1)
    assert set(info["vector_extensions"]) <= set(VECTOR_FLAGS.values())
    assert "load_average" in info and info["cpu"]
    assert "(" in describe(info)  # the extensions (or "no AVX2") are in the header line


def test_fast_decoder_configuration():
    """``sfvfast-1``: SF-V's one step decoded by the bundle's distilled decoder, its own table row."""
    from benchmarks.workload import RunConfig

    rc = RunConfig.parse("sfvfast-1")
    assert rc.label == "SF-V + fast decoder" and not rc.guidance and rc.unet_batch == 1
    assert rc.pipeline_kwargs() == {"sampler": "euler", "steps": 1, "min_guidance": 1.0, "max_guidance": 1.0, "decoder": "fast"}
    assert RunConfig.parse("sfv-1").pipeline_kwargs()["decoder"] == "full"


def test_end_to_end_ratio_of_the_fast_decoder_row():
    """SVD 25 (full decoder) over SF-V + fast decoder, per round; absent without the fast row."""
    from benchmarks.report import _ratio_line, end_to_end_ratio

    slow = {"name": "svd-25", "median": {"total": 3.0}, "samples": [{"total": 3.0}, {"total": 2.0}, {"total": 4.0}]}
    fast = {"name": "sfvfast-1", "median": {"total": 0.1}, "samples": [{"total": 0.1}, {"total": 0.1}, {"total": 0.1}]}
    r = end_to_end_ratio([slow, fast], "svd-25", "sfvfast-1")
    assert r["median"] == pytest.approx(30.0) and r["q"] == pytest.approx([25.0, 35.0])
    line = _ratio_line(r)  # which way it reads, and that the band is of the same per-round ratios
    assert "SF-V + fast decoder 1 step is 30.0x faster than SVD 25 steps (full decoder)" in line
    assert "median of the per-round ratios [quartiles 25.0-35.0]" in line
    assert end_to_end_ratio([slow], "svd-25", "sfvfast-1") is None


def test_cached_benchmark_bundle_is_keyed_by_the_exporter(monkeypatch, tmp_path):
    """A bundle exported by other exporter code (another fingerprint) is not reused."""
    import benchmarks.workload
    from benchmarks.workload import default_bundle_dir

    monkeypatch.setenv("SFV_CACHE", str(tmp_path))
    model = tmp_path / "my-model"
    first = default_bundle_dir(model)
    assert default_bundle_dir(model) == first and first.parent == tmp_path / "bundles"
    assert benchmarks.workload.exporter_fingerprint() == benchmarks.workload.exporter_fingerprint()
    monkeypatch.setattr(benchmarks.workload, "exporter_fingerprint", lambda: "0" * 12)
    assert default_bundle_dir(model) != first


# --------------------------------------------------------------------------- honest ratios and warnings


def _entry(name, unet, total):
    """A loop-mode entry with per-round samples (``unet[r]``, ``total[r]``: seconds of round ``r``)."""
    import statistics

    samples = [{"unet": u, "total": t} for u, t in zip(unet, total)]
    median = {"unet": statistics.median(unet), "total": statistics.median(total)}
    return {**RunConfig.parse(name).describe(), "derived": False, "n": len(samples), "samples": samples,
            "median": median, "q1": median, "q3": median, "paper": None}


def test_speedup_is_the_median_of_the_per_round_ratios_inside_its_band():
    """The ratio of the medians (35.0x here) lies outside the quartiles of the per-round ratios
    [35.9-41.4], as "43.2x [30.6-37.3]" once did: the table prints the median of those same
    ratios (40.0x), says which it is, and which way it reads."""
    from benchmarks.report import speedup_notes, speedup_rows

    configs = [_entry("svd-25", [10.0, 10.0, 10.0], [40.0, 30.0, 35.0]), _entry("sfv-1", [1.0, 1.0, 1.0], [1.0, 0.7, 1.1])]
    add_speedups(configs, reference="sfv-1")
    svd = configs[0]
    assert svd["speedup_total"] == pytest.approx(40.0) and svd["speedup_of"] == "per-round ratios"
    q1, q3 = svd["speedup_total_q"]
    assert q1 <= svd["speedup_total"] <= q3
    result = {"configs": configs}
    assert speedup_rows(result)[1][0][7] == "40.0x [35.9-41.4]"
    notes = "\n".join(speedup_notes(result))
    assert "the median of the per-round ratios" in notes and "quartiles of those same ratios" in notes
    assert "SF-V 1 step is 10.0x faster than SVD 25 steps in the UNet, 40.0x end to end" in notes


def test_end_to_end_band_comes_from_end_to_end_samples():
    """UNet ratios are 10x in every round, end-to-end ratios spread: each band is of its own stage."""
    configs = [_entry("svd-25", [10.0, 10.0, 10.0], [40.0, 30.0, 35.0]), _entry("sfv-1", [1.0, 1.0, 1.0], [1.0, 0.7, 1.1])]
    add_speedups(configs, reference="sfv-1")
    assert configs[0]["speedup_unet_q"] == pytest.approx([10.0, 10.0])
    assert configs[0]["speedup_total_q"] == pytest.approx([35.909, 41.429], abs=1e-3)


def test_derived_rows_say_their_speedup_is_a_ratio_of_medians():
    from benchmarks.report import speedup_notes

    notes = speedup_notes(_result())
    assert "the ratio of the two medians (no paired rounds: derived rows)" in notes[0]
    assert "SF-V 1 step is 50.0x faster than SVD 25 steps" in notes[1]


def test_contention_warning_suggests_one_thread_only_where_more_ran():
    from benchmarks.machine import contention_warning

    one = contention_warning({"load_average": [6.7, 5, 5], "cores": 2, "threads": 1})
    assert "load average 6.7 on 2 cores" in one and "--threads" not in one
    assert "--threads 1" in contention_warning({"load_average": [6.7, 5, 5], "cores": 2, "threads": 2})


def test_results_md_lists_each_warning_once():
    """A loaded machine at 1 thread and a failed per-step check: each said once, the check with what it means."""
    result = _result()
    result["machine"].update(load_average=[6.5, 5.0, 5.0], threads=1)
    row = {"unet_predicted": 1.6, "unet_measured": 1.0, "unet_error": 0.6, "total_predicted": 2.0,
           "total_measured": 1.9, "total_error": 0.05}
    result["per_step_model"] = {"configs": {"svd-25": row}, "max_abs_error": 0.6, "within_5_percent": False,
                                "reason": "Why: the load changed."}
    for text in (format_markdown(result), format_text(result)):
        assert text.count("load average 6.5 on 2 cores") == 1
        assert text.count("per-step model check FAILED") == 1 and text.count("What it means") == 1
        assert "--threads 1" not in text  # 1 thread ran
        warnings = [l for l in text.splitlines() if "warning" in l.lower()]
        assert len(warnings) == len(set(warnings)) == 2, warnings


def test_speedup_loop_mode_times_whole_clips_and_reports_a_failed_check_once(tiny_bundle, tmp_path, capsys, monkeypatch):
    """``python -m benchmarks.speedup`` in loop mode: every stage of every clip is timed (the decoder
    included) and the end-to-end time covers them; a failed per-step check is listed once."""
    import benchmarks.speedup as speedup

    real_check = speedup.check_prediction

    def failing(measured, predicted):
        return {**real_check(measured, predicted), "within_5_percent": False, "max_abs_error": 0.5}

    monkeypatch.setattr(speedup, "check_prediction", failing)
    code = speedup.main(["--bundle", str(tiny_bundle), "--configs", "svd-2", "sfv-1", "--frames", "4", "--repeats", "2",
                         "--threads", "1", "--mode", "loop", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0
    assert (out.out + out.err).count("per-step model check FAILED") == 1
    assert (tmp_path / "results.md").read_text().count("per-step model check FAILED") == 1
    data = json.loads((tmp_path / "results.json").read_text())
    named = ("preprocess", "image_encoder", "vae_encoder", "unet", "vae_decoder")
    for c in data["configs"]:
        assert len(c["samples"]) == 2
        for s in c["samples"]:
            assert all(s[k] > 0 for k in named), s  # no stage skipped (frames decoded)
            assert s["total"] >= sum(s[k] for k in named), s  # end to end covers the whole clip
        assert c["speedup_of"] == "per-round ratios"
    svd = data["configs"][0]
    assert svd["median"]["unet"] > 1.5 * data["configs"][1]["median"]["unet"]  # two guided steps against one
