"""`alchemist generate`: a personalized video from a prompt and reference images, with a trained RUN."""

from __future__ import annotations

from pathlib import Path

import typer

from alchemist_model.configs import MAX_REFERENCE_IMAGES, SAMPLE_STEPS_BY_RESOLUTION, VIDEO_FPS
from pipelines.common import exit_on

# Help texts quote the numbers the model uses, taken from where they are defined.
REF_HELP = (
    "WORD=IMAGE: a reference image bound to a prompt word (segmented RGBA crops work best; repeat for more "
    f"images/words, at most {MAX_REFERENCE_IMAGES})."
)
STEPS_BY_SIZE = ", ".join(f"{steps} at {w}x{h}" for (w, h), steps in SAMPLE_STEPS_BY_RESOLUTION.items())
STEPS_HELP = f"Sampling steps (default: from --size, spec §6: {STEPS_BY_SIZE}, any aspect; else the profile's)."


def parse_refs(refs: list[str] | None) -> dict[str, list[str]]:
    """["man=a.png", "man=b.png", "dog=c.png"] -> {"man": ["a.png", "b.png"], "dog": ["c.png"]} (order kept)."""
    out: dict[str, list[str]] = {}
    for item in refs or []:
        word, sep, path = item.partition("=")
        if not sep or not word.strip() or not path.strip():
            raise ValueError(f"--ref {item!r}: use WORD=IMAGE, e.g. --ref 'dog=dog.png' (repeat for more images)")
        out.setdefault(word.strip(), []).append(path.strip())
    return out


def parse_size(size: str | None) -> tuple[int | None, int | None]:
    if not size:
        return None, None
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError as err:
        raise ValueError(f"--size {size!r}: use WIDTHxHEIGHT, e.g. 512x288") from err
    return width, height


def generate_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="A training RUN folder (alchemist train -o)."),
    prompt: str = typer.Option(..., "--prompt", help="The text prompt; every --ref word must occur in it."),
    ref: list[str] = typer.Option(None, "--ref", help=REF_HELP),
    background: Path = typer.Option(None, "--background", help="A clean background image (optional)."),
    background_word: str = typer.Option(None, "--background-word", help="The prompt word the background binds to."),
    output: Path = typer.Option(..., "--output", "-o", help="Output .mp4 path."),
    steps: int = typer.Option(None, "--steps", help=STEPS_HELP),
    frames: int = typer.Option(None, "--frames", help=f"4k+1 frames at {VIDEO_FPS:g} fps (default: the profile's)."),
    size: str = typer.Option(None, "--size", help="WIDTHxHEIGHT, multiples of 16 (default: the profile's)."),
    text_guidance: float = typer.Option(8.0, "--text-guidance", help="sT of spec §6."),
    image_guidance: float = typer.Option(3.0, "--image-guidance", help="sI of spec §6."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Generate a video that follows the prompt and keeps each referenced entity's identity."""
    with exit_on(ValueError, FileNotFoundError):
        references = parse_refs(ref)
        width, height = parse_size(size)
        # Check the user's inputs before loading anything heavy.
        for word, paths in references.items():
            for path in paths:
                if not Path(path).is_file():
                    raise ValueError(f"--ref {word}={path}: image file does not exist")
        if background is not None and not background.is_file():
            raise ValueError(f"--background {background}: image file does not exist")
        from alchemist_model.encoders import check_reference_word

        for word in references:
            check_reference_word(prompt, word)
        from alchemist_model.pipeline import AlchemistPipeline

        pipe = AlchemistPipeline.from_run(checkpoint)
        result = pipe(
            prompt,
            references=references,
            background=background,
            background_word=background_word,
            num_frames=frames,
            width=width,
            height=height,
            num_inference_steps=steps,
            text_guidance_scale=text_guidance,
            image_guidance_scale=image_guidance,
            seed=seed,
            output_path=output,
        )
    t, h, w, _ = result.frames.shape
    typer.echo(f"wrote {result.path} ({t} frames, {w}x{h}, {VIDEO_FPS:g} fps)")


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_cmd)
