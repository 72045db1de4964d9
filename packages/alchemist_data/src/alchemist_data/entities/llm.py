"""The paper's backend: a transformers chat model prompted with the paper's instruction (Fig. 7)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alchemist_data.entities.extractor import EntityExtractor
from alchemist_data.entities.result import EntityResult
from alchemist_data.entities.rules import apply_rules

if TYPE_CHECKING:
    from alchemist_data.stages.entities import EntitiesConfig

# The paper's prompt (Fig. 7): instruction, definitions, the two hard rules, then few-shot examples. The first
# example is the paper's own; the others are ours (the paper elides its remaining examples).
PROMPT_INSTRUCTION = (
    "Given an image caption, retrieve the entity words of the background, the subjects, and the visually "
    "separable objects.\n"
    "- background: the background spaces that appear in most of the image area.\n"
    "- subject: the human or animal subjects in the image.\n"
    "- object: the entities that cover part of the image and can be visually separated from each other.\n"
    "Rules:\n"
    "1. Each entity word is a noun without any quantifier.\n"
    "2. Each entity word must be an exact substring of the caption, without any character change.\n"
    "Answer with a Python dictionary with the keys 'background', 'subject' and 'object'."
)
FEW_SHOT_EXAMPLES: tuple[tuple[str, dict[str, list[str]]], ...] = (
    (
        "A woman in a mask and coat, with long brown hair, showing a small green-capped bottle.",
        {
            "background": [""],
            "subject": ["woman"],
            "object": ["mask", "coat", "long brown hair", "green-capped bottle"],
        },
    ),
    (
        "A man in a blue cap leads a horse through a cloudy, forested area.",
        {"background": ["cloudy, forested area"], "subject": ["man", "horse"], "object": ["blue cap"]},
    ),
    (
        "A chef in a white apron slices tomatoes on a wooden board in a dimly lit, gray kitchen.",
        {
            "background": ["dimly lit, gray kitchen"],
            "subject": ["chef"],
            "object": ["white apron", "tomatoes", "wooden board"],
        },
    ),
    (
        "A little girl with a red balloon runs across a grassy park under a clear blue sky.",
        {"background": ["grassy park", "clear blue sky"], "subject": ["little girl"], "object": ["red balloon"]},
    ),
    (
        "A black cat sleeps on a sofa next to an open laptop.",
        {"background": [""], "subject": ["black cat"], "object": ["sofa", "open laptop"]},
    ),
)


def build_prompt(caption: str) -> str:
    """The full user prompt for one caption, ending with ``### Output:`` for the model to complete."""
    shots = "\n".join(f"### Caption: {c}\n### Output: {d!r}\n" for c, d in FEW_SHOT_EXAMPLES)
    return f"{PROMPT_INSTRUCTION}\n\nExamples:\n{shots}\n### Caption: {caption}\n### Output:"


class LLMExtractor(EntityExtractor):
    """The paper's backend: a transformers causal chat model (hub id or local folder), greedy decoding."""

    backend = "llm"

    def __init__(self, cfg: EntitiesConfig, device: str = "cpu") -> None:
        super().__init__(cfg)
        self.device = device
        self.model: Any = None
        self.tokenizer: Any = None
        self.load_s = 0.0

    def _setup(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        t0 = time.perf_counter()
        name = self.cfg.llm_model
        looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1  # hub ids are org/name
        if looks_like_path and not Path(name).expanduser().exists():
            raise ValueError(
                f"entity LLM folder {name!r} does not exist: set entities.llm_model to a local model folder "
                "(config.json + weights + tokenizer) or a hub id such as mistralai/Mistral-7B-Instruct-v0.3"
            )
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(name)
            dtype = torch.bfloat16 if str(self.device).startswith("cuda") else torch.float32
            self.model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
        except (OSError, ValueError) as e:  # hub errors are OSErrors, bad repo ids ValueErrors
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise ValueError(
                f"cannot load the entity LLM {name!r}: {e}. Pass a local model folder with "
                "--set entities.llm_model=PATH"
                + (" (HF_HUB_OFFLINE=1 is set, so hub ids only work when already cached)" if offline else "")
                + ", or use the offline spaCy/WordNet backend (--set entities.backend=spacy)."
            ) from e
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"  # decoder-only batches must end where generation starts
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        # Generation may stop once a sequence has closed its dictionary: token ids whose text holds '}'.
        vocab = self.tokenizer.get_vocab()
        self._close_ids = torch.tensor(sorted(i for t, i in vocab.items() if "}" in t), dtype=torch.long)
        self.load_s = time.perf_counter() - t0

    def format_prompt(self, caption: str) -> str:
        prompt = build_prompt(caption)
        if getattr(self.tokenizer, "chat_template", None):
            # Everything goes in one user turn: Mistral's template rejects a system role.
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    def generate(self, captions: list[str]) -> list[str]:
        """Raw model outputs (decoded new tokens) for captions, in batches of ``cfg.batch_size``."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        close_ids = self._close_ids

        class _ClosedDict(StoppingCriteria):
            def __init__(self, prompt_len: int) -> None:
                self.prompt_len = prompt_len

            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kw: Any) -> torch.Tensor:
                new = input_ids[:, self.prompt_len :]
                if new.shape[1] == 0 or close_ids.numel() == 0:
                    return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
                return torch.isin(new, close_ids.to(new.device)).any(dim=1)

        outputs: list[str] = []
        bs = max(1, self.cfg.batch_size)
        add_special = not getattr(self.tokenizer, "chat_template", None)  # the template already adds BOS
        for i in range(0, len(captions), bs):
            prompts = [self.format_prompt(c) for c in captions[i : i + bs]]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            prompt_len = enc["input_ids"].shape[1]
            with torch.inference_mode():
                gen = self.model.generate(
                    **enc,
                    max_new_tokens=self.cfg.llm_max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                    stopping_criteria=StoppingCriteriaList([_ClosedDict(prompt_len)]),
                )
            outputs += self.tokenizer.batch_decode(gen[:, prompt_len:], skip_special_tokens=True)
        return outputs

    def _extract(self, captions: list[str]) -> list[EntityResult]:
        assert self.lexicon is not None
        texts = self.generate(captions)
        docs = self.lexicon.nlp.pipe(captions)
        return [
            apply_rules(t, c, max_caption_chars=self.cfg.max_caption_chars, lexicon=self.lexicon, doc=d)
            for t, c, d in zip(texts, captions, docs, strict=True)
        ]
