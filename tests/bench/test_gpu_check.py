"""`make gpu-check` (bench/gpu_check.py) without a GPU: it refuses at once, parses its arguments, writes its report
from a results dict, and every section's code runs at tiny size on the CPU (so the GPU day finds no typo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check

ROOT = Path(__file__).resolve().parents[2]


def test_without_cuda_it_stops_at_once_and_says_what_to_do(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")  # no GPU visible, even on a GPU machine
    out = tmp_path / "GPU.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--output", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "gpu-check needs a CUDA GPU" in proc.stderr and "--device cpu --smoke" in proc.stderr
    assert not out.exists()


def test_arguments():
    args = gpu_check.parse_args([])
    assert args.sections == list(gpu_check.SECTIONS) and args.device == "cuda" and args.clips == 16
    assert gpu_check.parse_args(["--sections", "train, tests"]).sections == ["train", "tests"]
    smoke = gpu_check.parse_args(["--device", "cpu", "--smoke"])
    assert smoke.clips == 2 and smoke.videos == 2
    for bad in (["--sections", "train,mfu"], ["--sections", ""], ["--device", "cpu"]):
        with pytest.raises(SystemExit) as err:
            gpu_check.parse_args(bad)
        assert err.value.code == 2


def test_pytest_summary():
    out = "....\n=== 3 passed, 1 skipped, 700 deselected in 12.31s ===\n"
    assert gpu_check.pytest_summary(out) == "3 passed, 1 skipped, 700 deselected in 12.31s"
    assert gpu_check.pytest_summary("") == "(no pytest summary)"


def test_report_from_a_results_dict(tmp_path):
    results = {
        "meta": {
            "when": "2026-12-01 10:00 UTC",
            "gpu": "NVIDIA H200",
            "torch": "2.14.1",
            "cuda": "13.0",
            "machine": "Linux",
            "total_s": 412.0,
            "smoke": False,
        },
        "checkpoints": {
            "ALCHEMIST_SAM_CHECKPOINT": {"what": "SAM ViT-B", "source": gpu_check.REAL, "path": "/m/sam.pth"},
            "ALCHEMIST_RAFT_CHECKPOINT": {"what": "RAFT things", "source": gpu_check.RANDOM, "path": "/w/raft.pth"},
        },
        "curation": {
            "profile": "paper",
            "num_clips": 16,
            "num_curated": 15,
            "notes": ["entities: spaCy"],
            "stages": [
                {
                    "stage": "grounding",
                    "gpu": True,
                    "setup_s": 3.0,
                    "seconds": 8.0,
                    "clips_per_h": 7200.0,
                    "peak_gpu_mib": 2048.5,
                    "gpu_busy_pct": 87.5,
                }
            ],
        },
        "eval": {"error": "Traceback ...\nRuntimeError: boom\n"},
        "train": {
            "profile": "base",
            "gpu": "NVIDIA H200",
            "peak_tflops": 989.0,
            "runs": [
                {"run": "grad ckpt", "rows": [{"metric": "MFU", "value": 31.25, "unit": "%", "note": "605M params"}]}
            ],
        },
        "tests": {"exit_code": 0, "summary": "4 passed in 20s", "seconds": 21.0, "tail": ""},
    }
    text = gpu_check.write_report(results, tmp_path / "res" / "GPU.md")
    assert (tmp_path / "res" / "GPU.md").read_text() == text
    assert "NVIDIA H200" in text and "total 412 s" in text
    assert "| SAM ViT-B | real checkpoint | `/m/sam.pth` |" in text and "RANDOM weights" in text
    assert "| grounding | yes | 3 | 8 | 7200 | 2048 | 87.5 |" in text and "- entities: spaCy" in text
    assert "## eval" in text and "RuntimeError: boom" in text and "FAILED" in text
    assert "| grad ckpt | MFU | 31.25 | % |" in text and "4 passed in 20s" in text
    assert text.index("## curation") < text.index("## eval") < text.index("## train") < text.index("## tests")


@pytest.mark.slow
def test_every_section_runs_at_tiny_size_on_the_cpu(tmp_path):
    out = tmp_path / "GPU.md"
    gpu_check.main(
        [
            "--device",
            "cpu",
            "--smoke",
            "--sections",
            "curation,eval,train",
            "--output",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ]
    )
    text = out.read_text()
    assert "FAILED" not in text and "smoke run" in text
    for stage in ("frames", "entities", "grounding", "segmentation", "crops", "background"):
        assert f"| {stage} |" in text
    assert "| batched (8 videos per call) |" in text and "| official (one pass per metric, batch size 1) |" in text
    for run in ("grad ckpt", "no grad ckpt", "FSDP2, 1 rank, grad ckpt"):
        assert f"| {run} | train throughput |" in text


@pytest.mark.slow
def test_checkpoints_are_built_in_the_released_layouts_unless_given(tmp_path, released_sam):
    from alchemist_data.models.faces import YoloFaceDetector
    from alchemist_eval.models import ClipEncoder, DinoEncoder, RaftFlow

    env = {
        "ALCHEMIST_SAM_CHECKPOINT": str(released_sam[0]),
        "ALCHEMIST_RAFT_CHECKPOINT": str(tmp_path / "nope"),
        "ALCHEMIST_GDINO_CHECKPOINT": str(tmp_path / "given_gdino.pth"),
    }
    (tmp_path / "given_gdino.pth").write_bytes(b"")  # exists: taken as given (its loader checks it later)
    ckpts = gpu_check.prepare_checkpoints(tmp_path / "ckpt", env=env, small=True)
    assert set(ckpts) == set(gpu_check.CHECKPOINT_VARS)
    assert ckpts["ALCHEMIST_SAM_CHECKPOINT"] == {
        "path": str(released_sam[0]),
        "source": gpu_check.REAL,
        "what": "SAM ViT-B",
    }
    assert ckpts["ALCHEMIST_GDINO_CHECKPOINT"]["source"] == gpu_check.REAL
    for var in (
        "ALCHEMIST_RAFT_CHECKPOINT",
        "ALCHEMIST_DINO_MODEL",
        "ALCHEMIST_CLIP_MODEL",
        "ALCHEMIST_YOLO_FACE_CHECKPOINT",
        "ALCHEMIST_ARCFACE_CHECKPOINT",
    ):
        assert ckpts[var]["source"] == gpu_check.RANDOM and Path(ckpts[var]["path"]).exists(), var
    # what was built loads through the product's loaders
    RaftFlow(ckpts["ALCHEMIST_RAFT_CHECKPOINT"]["path"]).setup()
    DinoEncoder(ckpts["ALCHEMIST_DINO_MODEL"]["path"]).setup()
    ClipEncoder(ckpts["ALCHEMIST_CLIP_MODEL"]["path"]).setup()
    YoloFaceDetector(ckpts["ALCHEMIST_YOLO_FACE_CHECKPOINT"]["path"]).setup()
