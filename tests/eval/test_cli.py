"""`alchemist benchmark prepare` and `alchemist eval` from the command line, and the demo hook."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner, Result

from pipelines import evaluate

from .generated import generated_videos


def _app() -> typer.Typer:
    app = typer.Typer()
    evaluate.register(app)
    return app


def _eval(runner: CliRunner, generated: Path, bench: Path, mode: str, output: Path, *options: str) -> Result:
    """`alchemist eval` of the generated videos against a prepared benchmark with the tiny models."""
    args = ["eval", str(generated), "--benchmark", str(bench), "--mode", mode, "--profile", "tiny"]
    return runner.invoke(_app(), [*args, "--output", str(output), *options])


def test_prepare_then_eval_prints_the_table_and_names_the_missing_video(annotation_set, tmp_path):
    runner = CliRunner()
    bench = tmp_path / "bench"
    res = runner.invoke(
        _app(),
        [
            "benchmark",
            "prepare",
            "--annotations",
            str(annotation_set["annotations"]),
            "--videos",
            str(annotation_set["videos"]),
            "--output",
            str(bench),
            "--profile",
            "tiny",
            "--no-embeddings",
        ],
    )
    assert res.exit_code == 0, res.output
    assert '"num_clips": 3' in res.output and '"num_rejects": 1' in res.output
    gen = generated_videos(bench, tmp_path / "gen", ["clip_a"])
    res = _eval(runner, gen, bench, "face", tmp_path / "out", "--num-frames", "8", "--method", "copy-of-GT")
    assert res.exit_code == 0, res.output
    assert "Face-S" in res.output and "copy-of-GT" in res.output and "RANDOMLY INITIALISED" in res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["num_videos"] == 1 and summary["num_missing"] == 0 and summary["num_frames"] == 8
    res = _eval(runner, gen, bench, "subject", tmp_path / "o2", "--metrics", "text,dynamic")
    assert res.exit_code == 0, res.output
    assert "clip_b (missing_file)" in res.output
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert list(summary["scores"]) == ["Text-S", "Dync-D"]
    res = runner.invoke(_app(), ["eval", str(gen), "--benchmark", str(tmp_path), "--profile", "tiny"])
    assert res.exit_code == 2 and "not a prepared benchmark" in res.output


def test_demo_hook_scores_only_the_generated_clips(prepared_benchmark, tmp_path):
    gen = generated_videos(prepared_benchmark, tmp_path / "generated", ["clip_b"])
    summary = evaluate.demo_evaluate(gen, prepared_benchmark, tmp_path / "eval")
    assert summary["mode"] == "subject" and summary["num_videos"] == 1 and summary["num_left_out"] == 1
    assert summary["random_models"] and (tmp_path / "eval" / "scores.parquet").exists()
