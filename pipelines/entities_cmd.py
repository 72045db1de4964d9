"""`alchemist entities "CAPTION"`: the entity words of a caption, with the paper's filter rules, as JSON."""

from __future__ import annotations

import json
import time

import typer

from pipelines.common import exit_on, set_option

PROFILE_HELP = "Model profile: offline (spaCy + WordNet, default), paper (LLM, entities.llm_model), tiny."


def entities_cmd(
    caption: list[str] = typer.Argument(..., help="One or more captions (quote each one)."),
    profile: str = typer.Option("offline", "--profile", "-p", help=PROFILE_HELP),
    set_: list[str] = set_option(
        "Override a profile field, e.g. --set entities.backend=llm --set entities.llm_model=/path/to/model."
    ),
    device: str = typer.Option(None, "--device", help="Device for the LLM backend (default: the profile's)."),
    timings: bool = typer.Option(False, "--timings", help="Also print model load and extraction times (stderr)."),
) -> None:
    """Print the entity words (subject / object / background) of CAPTION as JSON.

    The JSON also lists dropped and re-classified words, and reject_reason /
    reject_detail when the paper's rules drop the clip: empty_caption,
    caption_too_long, non_english, invalid_output, not_substring, no_subject,
    plural_subject. One caption prints an object, several print a list.

    Example: alchemist entities "A man in a blue cap leads a horse."
    """
    from alchemist_data.config import parse_overrides
    from alchemist_data.entities import build_extractor
    from alchemist_data.profiles import curation_profile

    with exit_on(ValueError):
        prof = curation_profile(profile, parse_overrides(set_))
        extractor = build_extractor(prof.entities, device or prof.device)
        t0 = time.perf_counter()
        extractor.setup()
        t1 = time.perf_counter()
        results = extractor.extract_batch(caption)
        t2 = time.perf_counter()
    payload = [r.to_dict() for r in results]
    typer.echo(json.dumps(payload[0] if len(payload) == 1 else payload, ensure_ascii=False, indent=2))
    if timings:
        typer.echo(
            f"backend {prof.entities.backend}: setup {t1 - t0:.2f}s, "
            f"extract {(t2 - t1) / max(1, len(caption)) * 1000:.1f} ms per caption",
            err=True,
        )


def register(app: typer.Typer) -> None:
    app.command("entities")(entities_cmd)
