"""Background plate: foreground mask (union, dilation, hole filling), OpenCV and SD2 inpainting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alchemist_data.benchmark_rules import foreground_mask
from alchemist_data.models.inpaint import OpenCVInpainter, SD2Inpainter, build_inpainter
from alchemist_data.profiles import curation_profile
from tests.model_builders import assert_unknown_backend_refused


def _ring(shape=(64, 64), center=(32, 32), r_out=15, r_in=10) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = np.hypot(yy - center[0], xx - center[1])
    return (d <= r_out) & (d > r_in)


def test_foreground_mask_fills_holes_and_unions():
    ring = _ring()
    other = np.zeros((64, 64), bool)
    other[2:5, 50:60] = True
    fg = foreground_mask([ring, other], (64, 64, 3), kernel_px=4, iterations=0)
    assert fg.dtype == bool
    assert fg[32, 32]  # the ring's hole is filled
    assert fg[3, 55] and not fg[10, 55]
    assert np.array_equal(fg, foreground_mask([ring | other], (64, 64), iterations=0))


def test_foreground_mask_dilation_4x4_three_times():
    dot = np.zeros((40, 40), bool)
    dot[20, 20] = True
    fg = foreground_mask([dot], (40, 40), kernel_px=4, iterations=3)
    ys, xs = np.nonzero(fg)
    # cv2.dilate with a 4x4 kernel anchors at (2, 2): each pass grows 1 px up/left and 2 px down/right, so a
    # pixel becomes a 10x10 square [17, 26] after 3 passes (the benchmark's exact footprint)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (17, 26, 17, 26)
    assert fg.sum() == 100
    assert foreground_mask([], (8, 8)).sum() == 0


def test_foreground_mask_boxes_and_errors():
    full = np.ones((20, 20), bool)
    fg = foreground_mask([full], (20, 20), iterations=0, boxes=[[5, 5, 10, 10]])
    assert fg.sum() == 25 and fg[5:10, 5:10].all()
    with pytest.raises(ValueError, match="expected the frame"):
        foreground_mask([np.zeros((5, 5), bool)], (20, 20))
    with pytest.raises(ValueError, match="one box per mask"):
        foreground_mask([full], (20, 20), boxes=[])


def _gradient(h=96, w=128) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)], -1).astype(np.uint8)


def test_opencv_inpainting_removes_a_painted_square():
    clean = _gradient()
    dirty = clean.copy()
    dirty[30:60, 40:80] = (255, 0, 255)
    mask = np.zeros(clean.shape[:2], bool)
    mask[30:60, 40:80] = True
    out = OpenCVInpainter().inpaint(dirty, foreground_mask([mask], clean.shape))
    before = np.abs(dirty.astype(int) - clean).mean()
    after = np.abs(out.astype(int) - clean).mean()
    assert after < 0.2 * before
    fg = foreground_mask([mask], clean.shape)
    assert np.array_equal(out[~fg], dirty[~fg])  # outside the mask nothing changes
    assert np.array_equal(OpenCVInpainter().inpaint(clean, np.zeros(clean.shape[:2], bool)), clean)
    with pytest.raises(ValueError, match="does not match"):
        OpenCVInpainter().inpaint(clean, np.zeros((3, 3), bool))


def _tiny_sd_inpaint_pipeline(path):
    """A tiny random StableDiffusionInpaintPipeline (9-channel UNet, KL VAE, CLIP text encoder with a byte-level
    tokenizer written offline) saved with save_pretrained, so SD2Inpainter's real loading path runs."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    torch.manual_seed(0)
    levels = {"block_out_channels": (8, 16), "norm_num_groups": 4}  # the UNet's and the VAE's: two levels of widths
    unet = UNet2DConditionModel(
        **levels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),  # one block type per level, as the widths
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        sample_size=8,
        in_channels=9,
        out_channels=4,
        cross_attention_dim=16,
        attention_head_dim=2,
    )
    vae = AutoencoderKL(
        **levels,
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        latent_channels=4,
        sample_size=16,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=16,
            intermediate_size=32,
            num_attention_heads=2,
            num_hidden_layers=1,
            vocab_size=600,
            max_position_embeddings=77,
        )
    )
    tok_dir = path / "tokenizer_src"
    tok_dir.mkdir(parents=True)
    chars = list(bytes_to_unicode().values())
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    (tok_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=77)
    pipe = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = path / "pipe"
    pipe.save_pretrained(out)
    return out


def _noise_and_mask() -> tuple[np.ndarray, np.ndarray]:
    """An 80x48 RGB noise image and a rectangle inside it to inpaint."""
    img = (np.random.RandomState(0).rand(48, 80, 3) * 255).astype(np.uint8)
    mask = np.zeros((48, 80), bool)
    mask[10:30, 20:50] = True
    return img, mask


@pytest.mark.slow
def test_sd2_inpainter_loads_by_path_composites_and_is_seeded(tmp_path):
    pipe_dir = _tiny_sd_inpaint_pipeline(tmp_path)
    inp = SD2Inpainter(str(pipe_dir), num_inference_steps=2, size=64, seed=3)
    img, mask = _noise_and_mask()
    out = inp.inpaint(img, mask)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert np.array_equal(out[~mask], img[~mask])  # original outside the mask
    assert not np.array_equal(out[mask], img[mask])  # generated inside
    assert np.array_equal(inp.inpaint(img, mask), out)  # seeded generator: reproducible
    # a prompt given to inpaint() replaces the configured one (the paper prompts with the background word)
    assert not np.array_equal(inp.inpaint(img, mask, prompt="a dimly lit gray room"), out)
    with pytest.raises(FileNotFoundError, match="inpainting pipeline directory not found"):
        SD2Inpainter(str(tmp_path / "missing")).setup()


def test_build_inpainter():
    assert isinstance(build_inpainter(curation_profile("offline").background), OpenCVInpainter)
    sd = build_inpainter(curation_profile("paper").background, device="cpu")
    assert isinstance(sd, SD2Inpainter)
    assert (sd.prompt, sd.guidance_scale) == ("clean and empty background", 12.0)
    assert sd.negative_prompt == "any human or any object, complex pattern and texture"
    assert_unknown_backend_refused(build_inpainter, "background", "lama")


@pytest.mark.gpu
def test_sd2_inpainter_fp16_on_cuda(tmp_path):
    pipe_dir = _tiny_sd_inpaint_pipeline(tmp_path)
    inp = SD2Inpainter(str(pipe_dir), device="cuda", num_inference_steps=2, size=64)
    img, mask = _noise_and_mask()
    out = inp.inpaint(img, mask)
    assert inp.pipe.unet.dtype.itemsize == 2  # fp16 on CUDA
    assert out.shape == img.shape and np.array_equal(out[~mask], img[~mask])
