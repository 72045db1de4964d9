"""Small randomly initialised GroundingDINO / SAM / BERT models, built fully offline.

No real GroundingDINO or SAM weights can be downloaded on the project's machines, so the ``offline`` profile
("random-small") and the tests ("random-tiny") run these. Their boxes and masks are meaningless; what they exercise
is every line of the real code path (tokenisation, box selection, SAM prompting, mask post-processing).

Sizes were measured on 2 CPU cores with one torch thread (see notes/dependencies.md for the smallest configs that
build at all): "tiny" is the smallest working config, "small" is a few times bigger and still runs well under
150 ms on a 512x384 frame.
"""

from __future__ import annotations

import hashlib
import os
import string
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

RANDOM_SIZES = ("random-tiny", "random-small")

# GroundingDINO hard-codes the bert-base-uncased ids of [CLS]=101, [SEP]=102, "."=1012 and "?"=1029 (it splits the
# caption into sub-sentences at them), so the tiny vocabulary keeps those exact ids and fills the gaps with
# placeholders, like bert-base-uncased does with its [unusedN] entries.
_SPECIAL_IDS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}
_PUNCT_IDS = {999: "!", 1010: ",", 1011: "-", 1024: ":", 1025: ";", 1005: "'", 1006: "(", 1007: ")", 1013: "/"}

# Words the synthetic captions and typical MSR-VTT-style entity tags use, so tags tokenise to whole tokens. Anything
# else still maps to real tokens through single-letter WordPiece pieces ("x", "##x").
_WORDS = """
a an the and or of in on at to with without from by for into over under near behind across through along
man woman men women person people boy girl child children kid baby guy lady gentleman player singer dancer
chef teacher student worker driver rider crowd group team family couple friend
dog cat horse cow sheep bird duck chicken fish bear lion tiger elephant monkey rabbit mouse deer fox wolf pig
goat zebra giraffe puppy kitten animal insect butterfly snake turtle
car truck bus bike bicycle motorcycle boat ship train plane airplane vehicle taxi van scooter
shirt t jacket coat dress skirt pants jeans shorts hat cap helmet shoe shoes boot boots glasses sunglasses scarf
tie suit uniform hoodie sweater backpack bag umbrella watch necklace mask gloves
ball football basketball guitar piano drum microphone phone camera laptop computer book paper cup bottle glass
plate bowl knife fork table chair sofa couch bed desk lamp door window wall floor ceiling screen television tv
box toy doll kite flag sign stick rope bucket basket flower flowers tree trees plant grass leaf leaves rock stone
room kitchen bedroom office street road sidewalk park garden field forest beach sea ocean lake river mountain hill
sky cloud clouds sun snow rain city town building house stage studio arena court track background area place
scene indoor outdoor outside inside yard farm desert bridge store shop restaurant classroom gym pool water sand
red blue green yellow black white gray grey brown orange pink purple golden silver dark light bright colorful
big small large little tall short young old long striped wooden metal plastic sunny cloudy snowy rainy dim dimly
lit empty clean busy crowded forested shiny soft
walks walking runs running jumps jumping rides riding plays playing sits sitting stands standing holds holding
dances dancing sings singing talks talking eats eating drinks drinking drives driving swims swimming looks looking
moves moving throws throwing catches catching wears wearing carries carrying leads leading chases chasing flies
flying rolls rolling spins spinning bounces bouncing slides sliding is are was were be has have
shape shapes square circle triangle rectangle star disk blob object thing stripe stripes pattern texture
"""


def tiny_vocab() -> list[str]:
    """bert-base-uncased-compatible vocabulary: special ids kept, placeholders, common words, WordPiece letters."""
    size = 1030
    vocab = [f"[unused{i}]" for i in range(size)]
    for idx, tok in {**_SPECIAL_IDS, **_PUNCT_IDS}.items():
        vocab[idx] = tok
    seen = set(vocab)
    extra: list[str] = []
    pieces = list(string.ascii_lowercase) + list(string.digits)
    for tok in pieces + [f"##{c}" for c in pieces] + _WORDS.split():
        if tok not in seen:
            seen.add(tok)
            extra.append(tok)
    return vocab + extra


def _cache_root() -> Path:
    from alchemist_data.config import cache_dir

    return cache_dir()


def write_tiny_bert(
    out_dir: str | os.PathLike, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2, seed: int = 0
) -> Path:
    """Write a tiny random BERT (config, weights, vocab.txt, tokenizer files) to ``out_dir`` and return it.

    The directory loads with ``BertModel.from_pretrained`` / ``AutoTokenizer.from_pretrained``, which is exactly what
    groundingdino-py does with ``text_encoder_type`` when it is a local directory.
    """
    from transformers import BertModel, BertTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    tokenizer.save_pretrained(out)
    cfg = tiny_bert_config(hidden_size, num_layers, num_heads, max_position_embeddings=512)
    with _seeded(seed):
        BertModel(cfg).save_pretrained(out)
    return out


def tiny_bert_config(hidden_size: int, num_layers: int, num_heads: int, **extra: Any):
    """transformers ``BertConfig`` of a random BERT over :func:`tiny_vocab` (feed-forward width twice the hidden)."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(tiny_vocab()),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=hidden_size * 2,
        **extra,
    )


def tiny_bert_dir() -> Path:
    """A cached tiny BERT directory (written once per machine, atomically, keyed by the vocabulary's hash)."""
    key = hashlib.sha1("\n".join(tiny_vocab()).encode()).hexdigest()[:12]
    final = _cache_root() / f"tiny-bert-{key}"
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="tiny-bert-", dir=final.parent))
    write_tiny_bert(tmp)
    try:
        os.replace(tmp, final)
    except OSError:  # another process won the race; its copy is identical
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return final


def tiny_bert_tokenizer():
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(tiny_bert_dir()))


# ---------------------------------------------------------------------------------------------------------------------
# GroundingDINO (transformers)


@dataclass(frozen=True)
class _GdinoSize:
    """One random GroundingDINO size: widths, then the short / long side frames are resized to."""

    swin_dim: int
    d_model: int
    heads: int
    ffn: int
    queries: int
    bert_hidden: int
    short: int
    long: int
    layers: tuple[int, int] = (1, 2)  # encoder, decoder
    points: int = 2  # deformable-attention sampling points


_GDINO_SIZES: dict[str, _GdinoSize] = {
    # smallest config that builds and runs (notes/dependencies.md); frames resized to a 128 px short side
    "random-tiny": _GdinoSize(swin_dim=8, d_model=32, heads=2, ffn=32, queries=10, bert_hidden=8, short=128, long=224),
    # a few times bigger, still fast on CPU: frames resized to a 256 px short side
    "random-small": _GdinoSize(
        swin_dim=16, d_model=64, heads=4, ffn=128, queries=50, bert_hidden=32, short=256, long=448
    ),
}


def _size(sizes: dict[str, Any], size: str, model: str) -> Any:
    """The settings of the random ``model`` called ``size`` (a clear error for an unknown one)."""
    if size not in sizes:
        raise ValueError(f"unknown random {model} size {size!r}; choose one of {', '.join(sizes)}")
    return sizes[size]


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Draw random weights from ``seed`` without touching the caller's torch random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def grounding_dino_config(size: str):
    """transformers ``GroundingDinoConfig`` for "random-tiny" / "random-small"."""
    from transformers import GroundingDinoConfig, SwinConfig

    p = _size(_GDINO_SIZES, size, "GroundingDINO")
    swin = SwinConfig(
        embed_dim=p.swin_dim,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=7,
        image_size=p.short,
        out_features=["stage2", "stage3", "stage4"],
        out_indices=[2, 3, 4],
    )
    bert = tiny_bert_config(p.bert_hidden, num_layers=1, num_heads=2)
    # The encoder and the decoder differ only in depth: the same heads, feed-forward width and sampling points.
    widths = {"attention_heads": p.heads, "ffn_dim": p.ffn, "n_points": p.points}
    return GroundingDinoConfig(
        backbone_config=swin.to_dict(),
        text_config=bert.to_dict(),
        d_model=p.d_model,
        encoder_layers=p.layers[0],
        decoder_layers=p.layers[1],
        **{f"{part}_{key}": value for part in ("encoder", "decoder") for key, value in widths.items()},
        num_queries=p.queries,
        num_feature_levels=4,
        max_text_len=256,
        use_timm_backbone=False,
        backbone=None,
        use_pretrained_backbone=False,
    )


def random_grounding_dino(size: str, seed: int = 0):
    """(model, processor) of a random transformers GroundingDINO; the processor resizes to the size's resolution."""
    from transformers import GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor

    cfg = grounding_dino_config(size)
    with _seeded(seed):
        model = GroundingDinoForObjectDetection(cfg)
    p = _GDINO_SIZES[size]
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": p.short, "longest_edge": p.long})
    processor = GroundingDinoProcessor(image_processor=image_processor, tokenizer=tiny_bert_tokenizer())
    return model.eval(), processor


# ---------------------------------------------------------------------------------------------------------------------
# SAM (segment-anything and transformers)

_SAM_SIZES: dict[str, dict[str, Any]] = {
    "random-tiny": {"img": 256, "dim": 64, "depth": 2, "heads": 2, "window": 4, "out": 64, "dec_depth": 2, "mlp": 128},
    "random-small": {
        "img": 512,
        "dim": 96,
        "depth": 2,
        "heads": 4,
        "window": 8,
        "out": 96,
        "dec_depth": 2,
        "mlp": 256,
    },
}


def random_segment_anything(size: str, seed: int = 0):
    """A small ``segment_anything.modeling.Sam`` (random) that works unchanged with ``SamPredictor``."""
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    p = _size(_SAM_SIZES, size, "SAM")
    patch = 16
    grid = p["img"] // patch
    with _seeded(seed):
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=p["img"],
                embed_dim=p["dim"],
                depth=p["depth"],
                num_heads=p["heads"],
                patch_size=patch,
                window_size=p["window"],
                global_attn_indexes=[p["depth"] - 1],
                out_chans=p["out"],
                use_rel_pos=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                qkv_bias=True,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=p["out"],
                image_embedding_size=(grid, grid),
                input_image_size=(p["img"], p["img"]),
                mask_in_chans=16,
            ),
            mask_decoder=MaskDecoder(
                transformer_dim=p["out"],
                transformer=TwoWayTransformer(
                    depth=p["dec_depth"], embedding_dim=p["out"], mlp_dim=p["mlp"], num_heads=2
                ),
                iou_head_hidden_dim=p["out"],
            ),
        )
        _center_iou_head(sam.mask_decoder.iou_prediction_head.layers[-1])
    return sam.eval()


@torch.no_grad()
def _center_iou_head(last: torch.nn.Linear) -> None:
    # A random IoU head answers anywhere, often <= 0, and the offline profile's "keep if IoU > 0" would then drop
    # every mask. Shrinking the last layer and biasing it to 0.5 keeps random predicted IoUs around 0.5, so the
    # downstream stages (crops, faces, background) are exercised. The masks themselves stay random.
    last.weight.mul_(0.1)
    last.bias.fill_(0.5)


_HF_SAM_SIZES: dict[str, dict[str, Any]] = {
    "random-tiny": {"img": 64, "patch": 8, "hidden": 32, "layers": 2, "out": 16},
    "random-small": {"img": 256, "patch": 16, "hidden": 64, "layers": 2, "out": 32},
}


def random_hf_sam(size: str, seed: int = 0):
    """(model, processor) of a random transformers ``SamModel``; the processor resizes to the model's input size."""
    from transformers import (
        SamConfig,
        SamImageProcessor,
        SamMaskDecoderConfig,
        SamModel,
        SamProcessor,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )

    p = _size(_HF_SAM_SIZES, size, "SAM")
    vision = SamVisionConfig(
        hidden_size=p["hidden"],
        intermediate_size=p["hidden"] * 2,
        output_channels=p["out"],
        num_hidden_layers=p["layers"],
        num_attention_heads=2,
        image_size=p["img"],
        patch_size=p["patch"],
        window_size=4,
        global_attn_indexes=[p["layers"] - 1],
        mlp_dim=p["hidden"] * 2,
        num_pos_feats=p["out"] // 2,
    )
    prompt = SamPromptEncoderConfig(
        hidden_size=p["out"], image_size=p["img"], patch_size=p["patch"], mask_input_channels=4
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=p["out"],
        mlp_dim=p["out"] * 2,
        num_hidden_layers=2,
        num_attention_heads=2,
        iou_head_hidden_dim=p["out"],
    )
    cfg = SamConfig(
        vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(), mask_decoder_config=decoder.to_dict()
    )
    with _seeded(seed):
        model = SamModel(cfg)
        _center_iou_head(model.mask_decoder.iou_prediction_head.proj_out)
    image_processor = SamImageProcessor(
        size={"longest_edge": p["img"]}, pad_size={"height": p["img"], "width": p["img"]}
    )
    return model.eval(), SamProcessor(image_processor=image_processor)


_IMAGE_ENCODER_WIDTHS = {"random-tiny": 32, "random-small": 96}


def random_image_encoder(size: str, kind: str = "dinov2", seed: int = 0) -> tuple[Any, None]:
    """A small random DINOv2 (``Dinov2Model``) or CLIP vision tower (``CLIPVisionModelWithProjection``) on 56-px
    inputs, with no processor: the caller resizes and normalises the frames itself."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, Dinov2Config, Dinov2Model

    width = _size(_IMAGE_ENCODER_WIDTHS, size, f"{kind} image encoder")
    body = {
        "hidden_size": width,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 2 * width,
        "image_size": 56,
        "patch_size": 14,
    }
    with _seeded(seed):
        if kind == "clip":
            model = CLIPVisionModelWithProjection(CLIPVisionConfig(**body, projection_dim=width))
        else:
            model = Dinov2Model(Dinov2Config(**body))
    return model.eval(), None
