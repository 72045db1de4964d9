"""Model benchmark: training step time / tokens per second and sampling time per step (tiny, CPU), training
steps/s on the fly vs on precomputed latents (`alchemist encode`, same run), peak memory; on a GPU also the
small/base profiles' training MFU (model FLOPs / (step time x the GPU's peak bf16 FLOPs)).

    python -m bench.model            # CPU rows (tiny)
    python -m bench.model --gpu      # + GPU rows (needs CUDA), printed as a table
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.common import row

# Dense bf16 tensor-core peaks (FLOP/s), from the vendors' data sheets.
GPU_PEAK_BF16 = {
    "H200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 70e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
}
# "H100" matches SXM/NVL names; the PCIe card is listed first so its lower peak wins.
GPU_PEAK_BF16 = dict(sorted(GPU_PEAK_BF16.items(), key=lambda kv: -len(kv[0])))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _timed(fn, repeats: int, warmup: int = 2, sync: bool = False) -> float:
    def run_synced(times: int) -> None:
        for _ in range(times):
            fn()
        if sync:  # CUDA runs asynchronously: wait for the queued work before reading the clock
            torch.cuda.synchronize()

    run_synced(warmup)
    start = time.perf_counter()
    run_synced(repeats)
    return (time.perf_counter() - start) / repeats


def cpu_rows(quick: bool) -> list[dict]:
    from alchemist_model.configs import TrainConfig, model_profile
    from alchemist_model.data import AlchemistDataset, collate_samples
    from alchemist_model.encoders import encode_conditions, load_components
    from alchemist_model.flow import combine_guidance
    from alchemist_model.testing import write_tiny_curated_run
    from alchemist_model.train import build_transformer, latent_token_count, train, training_step

    torch.set_num_threads(1)
    rows: list[dict] = []
    group = "model tiny (CPU, 1 thread)"
    steps = 10 if quick else 40
    with tempfile.TemporaryDirectory() as tmp:
        curated = write_tiny_curated_run(Path(tmp) / "curated", num_clips=4)
        profile = model_profile("tiny")
        cfg = TrainConfig(
            profile="tiny", steps=steps, warmup_steps=1, stage2_cross_attn_only_steps=0, checkpoint_every=10**9
        )
        records: list[dict] = []
        train(cfg, curated, Path(tmp) / "run", progress=False, on_step=records.append)
        timed = records[2:]  # skip warm-up steps
        step_s = sum(r["seconds"] for r in timed) / len(timed)
        comps = load_components(profile)
        model = build_transformer(profile, cfg, comps)
        tokens = latent_token_count(profile, comps, model.config.patch_size)
        batch_size = profile.batch_size

        # The same step on a fixed, pre-encoded batch: what the transformer alone costs.
        ds = AlchemistDataset(curated, profile.width_px, profile.height_px, profile.num_frames, profile.image_size_px)
        batch = collate_samples([ds[i] for i in range(batch_size)])
        latents = comps.vae.encode(batch["video"])
        cond = encode_conditions(comps, batch["captions"], batch["ref_images"], batch["ref_mask"], batch["ref_words"])
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)

        def model_step() -> None:
            loss = training_step(model, cond, latents, cfg, 1.0, gen, contextlib.nullcontext())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        model_s = _timed(model_step, steps)
        rows.append(
            row(
                group,
                "train step, full (decode + encoders + DiT)",
                step_s * 1e3,
                "ms",
                f"batch {batch_size}, {tokens} video tokens/sample, {len(timed)} steps",
                baseline=model_s * 1e3,
                baseline_name="DiT step on a pre-encoded batch",
            )
        )
        rows.append(
            row(
                group,
                "train throughput, full step",
                batch_size * tokens / step_s,
                "tokens/s",
                f"{batch_size / step_s:.1f} samples/s",
            )
        )
        rows.append(
            row(
                group,
                "train throughput, DiT only",
                batch_size * tokens / model_s,
                "tokens/s",
                f"{batch_size / model_s:.1f} samples/s",
            )
        )

        # Sampling: one denoising step = 3 evaluations (spec §6), batched vs one by one.
        model.eval()
        one = {k: v[:1] for k, v in cond.items()}
        z = torch.randn(1, *latents.shape[1:])
        three = {k: v.repeat(3, *([1] * (v.ndim - 1))) for k, v in one.items()}

        @torch.no_grad()
        def batched() -> None:
            out = model(
                z.repeat(3, 1, 1, 1, 1),
                torch.full((3,), 0.5),
                three["encoder_hidden_states"],
                three["encoder_attention_mask"],
                three["reference_image_tokens"],
                three["reference_word_tokens"],
                three["reference_mask"],
                reference_keep=torch.tensor([1.0, 1.0, 0.0]),
            ).sample
            combine_guidance(*out.chunk(3))

        @torch.no_grad()
        def sequential() -> None:
            outs = []
            for text_scale, keep in ((1.0, 1.0), (0.0, 1.0), (1.0, 0.0)):
                outs.append(
                    model(
                        z,
                        torch.full((1,), 0.5),
                        one["encoder_hidden_states"] * text_scale,
                        one["encoder_attention_mask"],
                        one["reference_image_tokens"],
                        one["reference_word_tokens"],
                        one["reference_mask"],
                        reference_keep=torch.tensor([keep]),
                    ).sample
                )
            combine_guidance(*outs)

        repeats = 20 if quick else 100
        seq_s = _timed(sequential, repeats)
        bat_s = _timed(batched, repeats)
        rows.append(
            row(
                group,
                "sampling step (3 CFG evaluations, batched)",
                bat_s * 1e3,
                "ms",
                "Euler step cost without VAE decode",
                baseline=seq_s * 1e3,
                baseline_name="3 evaluations one by one",
            )
        )
    # Read before the latents rows, which encode and train again: this is the peak of the rows above.
    rows.append(row(group, "peak memory (RSS)", _peak_rss_mb(), "MiB", "resource.getrusage ru_maxrss"))
    rows += latent_rows(quick)
    return rows


def latent_rows(quick: bool, profile_name: str = "tiny") -> list[dict]:
    """Steps/s of the same training run on the fly and on precomputed latents, plus the encode job's rate."""
    from alchemist_model.configs import DataConfig, TrainConfig
    from alchemist_model.testing import write_tiny_curated_run
    from alchemist_model.train import train
    from pipelines.encode import EncodeOptions, encode_job

    group = f"model {profile_name} latents (CPU, 1 thread)"
    steps = 10 if quick else 40
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        curated = write_tiny_curated_run(Path(tmp) / "curated", num_clips=4)
        start = time.perf_counter()
        info = encode_job(
            EncodeOptions(str(curated), str(Path(tmp) / "latents"), profile_name, runner="local"), progress=False
        )
        encode_s = time.perf_counter() - start
        cfg = TrainConfig(
            profile=profile_name,
            steps=steps,
            warmup_steps=1,
            stage2_cross_attn_only_steps=0,
            checkpoint_every=10**9,
            data=DataConfig(clip_start="start"),
        )
        rates = {}
        for name, latents in (("on the fly", None), ("precomputed", Path(tmp) / "latents")):
            records: list[dict] = []
            train(cfg, curated, Path(tmp) / name, progress=False, on_step=records.append, latents=latents)
            # the median step: robust to the other jobs sharing this machine's cores; skip the warm-up steps
            rates[name] = 1.0 / statistics.median(r["seconds"] for r in records[2:])
    note = f"same run (stage II, seed 0, batch of the profile), median of {steps - 2} steps"
    rows.append(
        row(
            group,
            "train steps/s, precomputed latents",
            rates["precomputed"],
            "steps/s",
            note,
            baseline=rates["on the fly"],
            baseline_name="on the fly (decode + VAE + T5 per step)",
        )
    )
    rows.append(
        row(
            group,
            "alchemist encode (local runner)",
            info["counts"]["rows"] / encode_s,
            "rows/s",
            f"{info['counts']['rows']} (clip, size) rows incl. loading the encoders",
        )
    )
    return rows


def _profile_rows(
    profile_name: str,
    quick: bool,
    device: torch.device,
    name: str,
    on_gpu: bool,
    peak: float | None,
    gradient_checkpointing: bool | None = None,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    label: str = "",
) -> list[dict]:
    """Training step / throughput / MFU (and sampling) rows of a model profile. ``gradient_checkpointing`` None: the
    profile's; ``wrap``: applied to the model before the optimizer is built (e.g. FSDP), named by ``label``."""
    from alchemist_model.configs import model_profile
    from alchemist_model.transformer_alchemist import AlchemistTransformer3DModel, transformer_flops_per_token

    rows: list[dict] = []
    profile = model_profile(profile_name)
    if gradient_checkpointing is not None:
        profile.gradient_checkpointing = gradient_checkpointing
    kwargs = dict(profile.transformer, text_dim=1024, cond_dim=1024)  # T5 v1.1 large / ViT-L widths
    model = AlchemistTransformer3DModel(**kwargs).to(device)
    if profile.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if wrap is not None:
        model = wrap(model)
    frames = (profile.num_frames - 1) // 4 + 1
    h, w = profile.height_px // 8, profile.width_px // 8
    batch, text_len, num_images, image_tokens = profile.batch_size, profile.max_text_tokens, 6, 256
    video_tokens = frames * (h // 2) * (w // 2)
    inputs = {
        "hidden_states": torch.randn(batch, 16, frames, h, w, device=device),
        "timestep": torch.rand(batch, device=device),
        "encoder_hidden_states": torch.randn(batch, text_len, 1024, device=device),
        "encoder_attention_mask": torch.ones(batch, text_len, dtype=torch.bool, device=device),
        "reference_image_tokens": torch.randn(batch, num_images, image_tokens, 1024, device=device),
        "reference_word_tokens": torch.randn(batch, num_images, 3, 1024, device=device),
        "reference_mask": torch.ones(batch, num_images, dtype=torch.bool, device=device),
    }
    target = torch.randn_like(inputs["hidden_states"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.99), weight_decay=0.01)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(**inputs).sample
        loss = torch.nn.functional.mse_loss(out.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        optimizer.step()

    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    seconds = _timed(step, 3 if quick else 10, warmup=2, sync=on_gpu)
    flops = 3 * transformer_flops_per_token(
        kwargs | {"num_layers": profile.transformer["num_layers"]}, video_tokens, text_len, num_images * image_tokens
    )
    flops *= batch * video_tokens
    params = sum(p.numel() for p in model.parameters()) / 1e6
    group = f"model {profile_name} ({name})"
    note = (
        f"{params:.0f}M params, batch {batch} x {video_tokens} video tokens ({profile.num_frames}f "
        f"{profile.width_px}x{profile.height_px}), 6 refs, bf16 autocast"
        + (", grad ckpt" if profile.gradient_checkpointing else ", no grad ckpt")
        + (f", {label}" if label else "")
    )
    rows.append(row(group, "train step", seconds * 1e3, "ms", note))
    rows.append(row(group, "train throughput", batch * video_tokens / seconds, "tokens/s", note))
    rows.append(row(group, "achieved model TFLOP/s", flops / seconds / 1e12, "TFLOP/s", note))
    if peak is not None and on_gpu:
        rows.append(
            row(
                group,
                "MFU",
                100 * flops / seconds / peak,
                "%",
                f"peak {peak / 1e12:.0f} TFLOP/s dense bf16 for {name}",
            )
        )
    if on_gpu:
        rows.append(row(group, "peak GPU memory", torch.cuda.max_memory_allocated(device) / 2**20, "MiB", note))

    model.eval()
    three = {k: (v[:1].repeat(3, *([1] * (v.ndim - 1)))) for k, v in inputs.items()}

    @torch.no_grad()
    def sample_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model(**three, reference_keep=torch.tensor([1.0, 1.0, 0.0], device=device))

    rows.append(
        row(
            group,
            "sampling step (3 CFG evaluations)",
            _timed(sample_step, 5 if quick else 20, sync=on_gpu) * 1e3,
            "ms",
            note,
        )
    )
    return rows


def describe_device(device_name: str) -> tuple[torch.device, bool, str, float | None]:
    """(device, on a GPU, its name, its dense bf16 peak FLOP/s or None when the table does not know it)."""
    device = torch.device(device_name)
    on_gpu = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if on_gpu else "CPU"
    return device, on_gpu, name, next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)


def gpu_rows(quick: bool, profiles: tuple[str, ...] = ("small", "base"), device_name: str = "cuda") -> list[dict]:
    device, on_gpu, name, peak = describe_device(device_name)
    rows = []
    for profile_name in profiles:
        rows += _profile_rows(profile_name, quick, device, name, on_gpu, peak)
        if on_gpu:
            torch.cuda.empty_cache()  # the profile's model and optimizer are gone with its frame
    return rows


def run(quick: bool = False, gpu: bool | None = None) -> list[dict]:
    rows = cpu_rows(quick)
    if gpu or (gpu is None and torch.cuda.is_available()):
        rows += gpu_rows(quick)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--gpu", action="store_true", help="GPU rows only (small/base MFU); needs CUDA")
    ap.add_argument("--profiles", nargs="*", default=["small", "base"])
    ap.add_argument("--device", default="cuda", help="with --gpu: cuda, or cpu for a smoke run of the same code")
    args = ap.parse_args()
    if args.gpu and args.device == "cpu":
        rows = gpu_rows(True, tuple(args.profiles), "cpu")
    elif args.gpu:
        if not torch.cuda.is_available():
            sys.exit("--gpu: no CUDA device visible")
        rows = gpu_rows(args.quick, tuple(args.profiles))
    else:
        rows = run(args.quick)
    for r in rows:
        base = f"  (baseline {r['baseline']:.4g} {r['unit']}: {r['baseline_name']})" if r["baseline"] else ""
        print(f"{r['group']:<36} {r['metric']:<46} {r['value']:>12.4g} {r['unit']:<8}{base}  {r['note']}")


if __name__ == "__main__":
    main()
