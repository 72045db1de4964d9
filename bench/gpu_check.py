"""`make gpu-check`: the one GPU check, for the day a CUDA machine is lent (never part of `make test`).

On one GPU (its run time is not measured yet: no GPU was lent to this work), it writes ``bench/results/GPU.md`` with:

* **curation**: the ``paper`` curation stages on the sample data, one stage at a time: clips/h, peak GPU memory and
  GPU busy % per stage. Checkpoints come from ``ALCHEMIST_*`` variables where they point at files; otherwise files in
  the released layouts with random weights are built (tests/release_layouts.py) and the report says so;
* **eval**: videos/s of the batched scorer vs the official one-video-at-a-time protocol, same models, same run;
* **train**: the ``base`` model's bf16 step time, tokens/s and MFU against the GPU's peak, with and without gradient
  checkpointing, and the same step under FSDP (FSDP2 ``fully_shard``) on one GPU;
* **tests**: the GPU tests ``make test`` skips (``pytest -m gpu``).

    python -m bench.gpu_check                      # all sections, on CUDA
    python -m bench.gpu_check --sections train     # some of them
    python -m bench.gpu_check --device cpu --smoke # the same code at tiny sizes on the CPU (what the tests run)

Without CUDA it stops at once with a message saying so (exit status 2).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import run_python
from bench.gpu_report import RANDOM, REAL, SECTIONS, write_report

DEFAULT_OUTPUT = "bench/results/GPU.md"

# variable -> (what, the released file it stands for); also the order of the report's checkpoint table
CHECKPOINT_VARS = {
    "ALCHEMIST_GDINO_CHECKPOINT": ("GroundingDINO SwinT-OGC", "groundingdino_swint_ogc.pth"),
    "ALCHEMIST_SAM_CHECKPOINT": ("SAM ViT-B", "sam_vit_b_01ec64.pth"),
    "ALCHEMIST_YOLO_FACE_CHECKPOINT": ("YOLO face", "yolov9-c-face.torchscript"),
    "ALCHEMIST_ARCFACE_CHECKPOINT": ("ArcFace r100", "backbone.pth"),
    "ALCHEMIST_RAFT_CHECKPOINT": ("RAFT things", "raft-things.pth"),
    "ALCHEMIST_DINO_MODEL": ("DINO ViT-B/16", "dino_vitbase16_pretrain.pth"),
    "ALCHEMIST_CLIP_MODEL": ("CLIP ViT-L/14", "clip-vit-large-patch14/"),
    "ALCHEMIST_BERT_DIR": ("GroundingDINO text encoder (bert-base-uncased)", "bert-base-uncased/"),
}

# profile setting -> the variable whose checkpoint it takes; grounding and segmentation serve curation and eval alike
_DETECTION_CHECKPOINTS = {
    "grounding.checkpoint": "ALCHEMIST_GDINO_CHECKPOINT",
    "grounding.text_encoder": "ALCHEMIST_BERT_DIR",
    "segmentation.checkpoint": "ALCHEMIST_SAM_CHECKPOINT",
}
CURATION_CHECKPOINTS = {**_DETECTION_CHECKPOINTS, "faces.checkpoint": "ALCHEMIST_YOLO_FACE_CHECKPOINT"}
# The entity LLM and the SD2 inpainter are only run from real weights (no released-layout stand-in): without them
# the offline entity words and OpenCV inpainting run, and the report says so.
# (variable, the setting it fills, the offline fallback setting and value, the report's note when it is unset)
REAL_WEIGHTS_ONLY = (
    (
        "ALCHEMIST_LLM_MODEL",
        "entities.llm_model",
        ("entities.backend", "spacy"),
        "entities: spaCy + WordNet (set ALCHEMIST_LLM_MODEL for the paper's Mistral-7B)",
    ),
    (
        "ALCHEMIST_SD2_MODEL",
        "background.model",
        ("background.backend", "opencv"),
        "background: OpenCV Telea (set ALCHEMIST_SD2_MODEL for SD2 inpainting)",
    ),
)
EVAL_CHECKPOINTS = {
    "clip_model": "ALCHEMIST_CLIP_MODEL",
    "dino_model": "ALCHEMIST_DINO_MODEL",
    "raft_checkpoint": "ALCHEMIST_RAFT_CHECKPOINT",
    **_DETECTION_CHECKPOINTS,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench.gpu_check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--output", default=DEFAULT_OUTPUT, help="the report (markdown)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu, which needs --smoke")
    ap.add_argument("--smoke", action="store_true", help="tiny models and inputs: a check of the script itself")
    ap.add_argument("--clips", type=int, default=None, help="sample clips to curate (default 16; smoke 2)")
    ap.add_argument("--videos", type=int, default=None, help="videos to score (default 16; smoke 2)")
    ap.add_argument("--workdir", default=None, help="where checkpoints and data are built (default: a temp dir)")
    args = ap.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown or not sections:
        ap.error(f"--sections: unknown {', '.join(unknown) or '(empty)'}; choose from {', '.join(SECTIONS)}")
    args.sections = sections
    if not args.device.startswith("cuda") and not args.smoke:
        ap.error("--device cpu runs only with --smoke (the real sizes need a GPU)")
    args.clips = args.clips or (2 if args.smoke else 16)
    args.videos = args.videos or (2 if args.smoke else 16)
    return args


def require_cuda(device: str) -> None:
    """Stop at once, with what to do, when ``device`` is CUDA and this machine has none."""
    if not device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        print(
            f"gpu-check needs a CUDA GPU, and this machine has none (torch {torch.__version__}, built for CUDA "
            f"{torch.version.cuda or 'none'}, torch.cuda.is_available() is False). Run `make gpu-check` on a GPU "
            "machine; `make test` covers the CPU (or: python -m bench.gpu_check --device cpu --smoke).",
            file=sys.stderr,
        )
        raise SystemExit(2)


# ---------------------------------------------------------------------------------------------------------------
# measuring


class BusySampler:
    """Mean GPU utilisation (%) while the block runs, sampled every 0.2 s (torch.cuda.utilization, which needs
    pynvml, else nvidia-smi); ``value`` is None when neither is available or off GPU."""

    def __init__(self, device: str) -> None:
        self.device, self.samples, self.value = device, [], None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def read(device: str) -> float | None:
        import torch

        try:
            return float(torch.cuda.utilization(torch.device(device)))
        except Exception:  # no pynvml: ask nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        index = torch.device(device).index or 0
        try:
            out = subprocess.run(
                ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            return float(out.stdout.strip().splitlines()[0])
        except Exception:
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            v = self.read(self.device)
            if v is None:
                return
            self.samples.append(v)
            self._stop.wait(0.2)

    def __enter__(self) -> BusySampler:
        if self.device.startswith("cuda"):
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.value = sum(self.samples) / len(self.samples) if self.samples else None


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def _reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(device))


def _peak_mib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20 if device.startswith("cuda") else None


# ---------------------------------------------------------------------------------------------------------------
# checkpoints


def _cached_bert() -> str | None:
    """bert-base-uncased from the local hub cache, if it is there (never downloaded)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download("bert-base-uncased", local_files_only=True)
    except Exception:
        return None


def prepare_checkpoints(workdir: Path, env: dict[str, str] | None = None, small: bool = False) -> dict[str, dict]:
    """``{variable: {"path", "source", "what"}}`` for every paper checkpoint: the file a ``ALCHEMIST_*`` variable
    names when it exists (``REAL``), else a file in the released layout with random weights built in ``workdir``
    (``RANDOM``). ``small``: tiny stand-ins for the CLIP and DINO folders (a CPU check of this function)."""
    from tests import release_layouts as rl

    env = dict(os.environ if env is None else env)
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict] = {}

    def real(var: str) -> str | None:
        value = env.get(var, "")
        return value if value and os.path.exists(os.path.expanduser(value)) else None

    bert = real("ALCHEMIST_BERT_DIR") or _cached_bert()
    if bert is None:
        from alchemist_data.models.tiny import tiny_bert_dir

        out["ALCHEMIST_BERT_DIR"] = {
            "path": str(tiny_bert_dir()),
            "source": "tiny random BERT (bert-base-uncased is not cached here)",
        }
    else:
        out["ALCHEMIST_BERT_DIR"] = {"path": bert, "source": REAL}
    builders = {
        "ALCHEMIST_GDINO_CHECKPOINT": lambda p: rl.write_gdino(p, out["ALCHEMIST_BERT_DIR"]["path"]),
        "ALCHEMIST_SAM_CHECKPOINT": rl.write_sam,
        "ALCHEMIST_YOLO_FACE_CHECKPOINT": rl.write_yolo_torchscript,
        "ALCHEMIST_ARCFACE_CHECKPOINT": lambda p: rl.write_arcface(p, "r18" if small else "r100"),
        "ALCHEMIST_RAFT_CHECKPOINT": rl.write_raft_princeton,
        "ALCHEMIST_DINO_MODEL": rl.write_dino,
        "ALCHEMIST_CLIP_MODEL": lambda p: _write_random_clip(p, small),
    }
    for var, build in builders.items():
        found = real(var)
        if found:
            out[var] = {"path": found, "source": REAL}
            continue
        path = workdir / CHECKPOINT_VARS[var][1].rstrip("/")
        if not path.exists():
            build(path)
        out[var] = {"path": str(path), "source": RANDOM}
    for var, entry in out.items():
        entry["what"] = CHECKPOINT_VARS[var][0]
    return out


def _checkpoint_settings(ckpts: dict[str, dict], settings: dict[str, str]) -> dict[str, str]:
    """Profile overrides pointing each setting at the path of its prepared checkpoint."""
    return {setting: ckpts[var]["path"] for setting, var in settings.items()}


# (width, MLP width, layers, heads) of ViT-L/14's text and vision towers; the small stand-in is one toy size for both
CLIP_L14_TOWERS = {"text": (768, 3072, 12, 12), "vision": (1024, 4096, 24, 16)}
SMALL_CLIP_TOWER = (32, 64, 1, 2)


def _clip_tower(width: int, mlp_width: int, layers: int, heads: int) -> dict[str, int]:
    return {
        "hidden_size": width,
        "intermediate_size": mlp_width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
    }


def _write_random_clip(path: Path, small: bool) -> None:
    """A transformers CLIP folder with ViT-L/14's architecture (random weights) and a byte-level tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from alchemist_eval.models import _byte_level_clip_tokenizer

    tok = _byte_level_clip_tokenizer()
    towers = dict.fromkeys(CLIP_L14_TOWERS, SMALL_CLIP_TOWER) if small else CLIP_L14_TOWERS
    text = _clip_tower(*towers["text"]) | {
        "vocab_size": len(tok) if small else max(len(tok), 49408),
        "max_position_embeddings": 77,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    vision = _clip_tower(*towers["vision"]) | {"image_size": 224, "patch_size": 14}
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16 if small else 768))
    model.save_pretrained(path)
    tok.save_pretrained(path)


# ---------------------------------------------------------------------------------------------------------------
# sections


def curation_section(device: str, num_clips: int, smoke: bool, workdir: Path, ckpts: dict[str, dict]) -> dict:
    """The curation stages one at a time over ``num_clips`` sample clips: seconds, clips/h, peak memory, busy %."""
    from alchemist_data.manifest import read_manifest
    from alchemist_data.profiles import curation_profile
    from alchemist_data.runner import build_work_table
    from alchemist_data.sample_data import write_sample_corpus
    from alchemist_data.stages import build_stages

    manifest = write_sample_corpus(workdir / "corpus", num_clips=num_clips, seed=0)
    notes = []
    if smoke:
        profile = curation_profile("tiny", {"device": device})
        notes.append("tiny profile (smoke run)")
    else:
        overrides = {"device": device, **_checkpoint_settings(ckpts, CURATION_CHECKPOINTS)}
        for var, setting, (fallback_setting, fallback), note in REAL_WEIGHTS_ONLY:
            if os.environ.get(var):
                overrides[setting] = os.environ[var]
            else:
                overrides[fallback_setting] = fallback
                notes.append(note)
        profile = curation_profile("paper", overrides)
    table = build_work_table(read_manifest(manifest), profile.shard_size)
    stages = build_stages(profile)
    rows = []
    for stage in stages:
        t0 = time.perf_counter()
        stage.setup()
        setup_s = time.perf_counter() - t0
        _sync(device)
        _reset_peak(device)
        with BusySampler(device) as busy:
            t0 = time.perf_counter()
            table = stage.process_batch(table)
            _sync(device)
            seconds = time.perf_counter() - t0
        rows.append(
            {
                "stage": stage.name,
                "setup_s": setup_s,
                "seconds": seconds,
                "clips_per_h": num_clips / seconds * 3600 if seconds > 0 else None,
                "peak_gpu_mib": _peak_mib(device),
                "gpu_busy_pct": busy.value,
                "gpu": stage.cfg.resources.gpus > 0,
            }
        )
    rejected = [r for r in table.column("reject_reason").to_pylist() if r is not None]
    return {
        "profile": profile.name,
        "num_clips": num_clips,
        "num_curated": num_clips - len(rejected),
        "notes": notes,
        "stages": rows,
    }


def eval_section(device: str, num_videos: int, smoke: bool, workdir: Path, ckpts: dict[str, dict]) -> dict:
    """Batched scorer vs the official protocol (one pass per metric, one video at a time), same models."""
    import numpy as np

    from alchemist_eval.models import eval_profile
    from alchemist_eval.scorer import MODE_METRICS, Scorer
    from bench.eval import _OFFICIAL, _dataset, _time_batched, _time_official

    metrics = MODE_METRICS["subject"]
    num_frames = 16
    if smoke:
        profile, base = "tiny", {"device": device}
        h, w = 96, 128
    else:
        profile, h, w = "paper", 144, 256
        base = {"device": device, **_checkpoint_settings(ckpts, EVAL_CHECKPOINTS)}
    root = workdir / "eval_videos"
    root.mkdir(parents=True, exist_ok=True)
    jobs = _dataset(root, num_videos, num_frames, h=h, w=w)
    gt_scorer = Scorer(eval_profile(profile, base), metrics, num_frames)
    for job, emb in zip(jobs, gt_scorer.gt_embeddings([j.gt for j in jobs]), strict=True):
        emb["faces"] = np.zeros((0, 512), np.float32)
        job.gt.embeddings = emb
    batched = Scorer(eval_profile(profile, base), metrics, num_frames)
    official = [Scorer(eval_profile(profile, base | _OFFICIAL[m](num_frames)), (m,), num_frames) for m in metrics]
    for sc in (batched, *official):
        sc.setup()
        sc.score(jobs[:1])  # warm-up (cuDNN autotuning, lazy allocations) outside the timings
    _sync(device)
    with BusySampler(device) as busy_b:
        t_b, _, rows_b = _time_batched(batched, jobs, 8)
        _sync(device)
    with BusySampler(device) as busy_o:
        t_o, _, rows_o = _time_official(official, jobs)
        _sync(device)
    cols = [c for c in ("text_s", "video_s", "subject_s", "dynamic_d") if c in rows_b[0]]
    diff = max(
        (
            abs(a[c] - b[c])
            for a, b in zip(rows_b, rows_o, strict=True)
            for c in cols
            if a.get(c) is not None and b.get(c) is not None
        ),
        default=0.0,
    )
    return {
        "profile": profile,
        "num_videos": num_videos,
        "num_frames": num_frames,
        "size": f"{w}x{h}",
        "metrics": list(metrics),
        "batched_videos_per_s": num_videos / t_b,
        "official_videos_per_s": num_videos / t_o,
        "speedup": t_o / t_b,
        "max_score_diff": diff,
        "batched_busy_pct": busy_b.value,
        "official_busy_pct": busy_o.value,
    }


def train_section(device: str, smoke: bool) -> dict:
    """The ``base`` profile's bf16 step with and without gradient checkpointing, and under FSDP (one rank)."""
    import torch

    from bench.model import _profile_rows, describe_device

    dev, on_gpu, name, peak = describe_device(device)
    profile = "tiny" if smoke else "base"
    runs = []
    for label, ckpt in (("grad ckpt", True), ("no grad ckpt", False)):
        runs.append(
            {"run": label, "rows": _profile_rows(profile, smoke, dev, name, on_gpu, peak, gradient_checkpointing=ckpt)}
        )
        if on_gpu:
            torch.cuda.empty_cache()
    runs.append({"run": "FSDP2, 1 rank, grad ckpt", "rows": _fsdp_rows(profile, smoke, dev, name, on_gpu, peak)})
    return {"profile": profile, "gpu": name, "peak_tflops": peak / 1e12 if peak else None, "runs": runs}


def _fsdp_rows(profile: str, smoke: bool, dev, name: str, on_gpu: bool, peak: float | None) -> list[dict]:
    """The same step with the model sharded by FSDP2 (``fully_shard`` per transformer block, then the root, as
    torchtitan does) in a one-rank process group: the sharding machinery's cost on one GPU. FSDP2 also runs on
    the CPU (gloo), so the smoke run exercises the same code."""
    import socket

    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from bench.model import _profile_rows

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl" if on_gpu else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh(dev.type, (1,))

        def wrap(model):
            for block in getattr(model, "blocks", []):
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
            return model

        return _profile_rows(
            profile, smoke, dev, name, on_gpu, peak, gradient_checkpointing=True, wrap=wrap, label="FSDP2 1 rank"
        )
    finally:
        dist.destroy_process_group()


def tests_section(timeout_s: int = 300) -> dict:
    """``pytest -m gpu``: the tests ``make test`` skips without CUDA."""
    t0 = time.perf_counter()
    proc = run_python(["-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"], timeout=timeout_s)
    return {
        "exit_code": proc.returncode,
        "summary": pytest_summary(proc.stdout),
        "seconds": time.perf_counter() - t0,
        "tail": proc.stdout[-3000:] if proc.returncode else "",
    }


def pytest_summary(stdout: str) -> str:
    """pytest's closing line ("3 passed, 1 skipped in 12.3s"), without the ``=`` rule."""
    for line in reversed(stdout.strip().splitlines()):
        if re.search(r"\b(passed|failed|error|errors|skipped|deselected|no tests ran)\b", line):
            return line.strip("= ").strip()
    return "(no pytest summary)"


def run(args: argparse.Namespace) -> dict:
    import traceback

    import torch

    t0 = time.perf_counter()
    on_gpu = args.device.startswith("cuda")
    results: dict[str, Any] = {
        "meta": {
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": platform.platform(),
            "gpu": torch.cuda.get_device_name(torch.device(args.device)) if on_gpu else "no GPU (CPU)",
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "smoke": args.smoke,
        }
    }
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="alchemist-gpu-check-"))
    try:
        ckpts: dict[str, dict] = {}
        if not args.smoke and {"curation", "eval"} & set(args.sections):
            print("== checkpoints", flush=True)
            ckpts = prepare_checkpoints(workdir / "checkpoints")
            results["checkpoints"] = ckpts
        for section in args.sections:
            print(f"== {section}", flush=True)
            try:
                if section == "curation":
                    results[section] = curation_section(args.device, args.clips, args.smoke, workdir, ckpts)
                elif section == "eval":
                    results[section] = eval_section(args.device, args.videos, args.smoke, workdir, ckpts)
                elif section == "train":
                    results[section] = train_section(args.device, args.smoke)
                else:
                    results[section] = tests_section()
            except Exception:  # one failed section still leaves the others' numbers in the report
                results[section] = {"error": traceback.format_exc()}
                print(results[section]["error"], flush=True)
            if on_gpu:
                torch.cuda.empty_cache()
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    results["meta"]["total_s"] = time.perf_counter() - t0
    return results


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    require_cuda(args.device)
    results = run(args)
    write_report(results, args.output)
    print(f"wrote {args.output}")
    failed = [s for s in args.sections if "error" in results.get(s, {})]
    if failed or results.get("tests", {}).get("exit_code", 0) not in (0, None):
        raise SystemExit(f"gpu-check: failed sections: {', '.join(failed) or 'tests'} (see {args.output})")


if __name__ == "__main__":
    main()
