"""GroundingDINO box selection (benchmark semantics, hand-computed), caption tokens, and the two backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alchemist_data.benchmark_rules import grounding_caption, select_boxes, tag_token_positions
from alchemist_data.models.grounding import Detection, GroundingDinoPy, HFGroundingDino, build_grounder
from alchemist_data.models.tiny import random_grounding_dino, tiny_bert_dir, tiny_bert_tokenizer
from alchemist_data.profiles import curation_profile
from tests.model_builders import assert_unknown_backend_refused, built_per_profile
from tests.release_layouts import build_gdino, load_gdino_for_cpu

W, H = 100, 50


def _probs(rows: dict[int, dict[int, float]], q: int = 4, length: int = 8) -> np.ndarray:
    p = np.zeros((q, length), dtype=np.float32)
    for qi, cols in rows.items():
        for li, v in cols.items():
            p[qi, li] = v
    return p


def test_select_boxes_hand_computed():
    # tags: "man" -> token 1, "red shirt" -> tokens 3,4, "dog" -> token 6
    positions = [[1], [3, 4], [6]]
    probs = _probs(
        {
            0: {1: 0.8},  # man: (0.8 + 0.8)/2 = 0.8
            1: {1: 0.6, 3: 0.9, 4: 0.3},  # man 0.6; shirt (0.9 + 0.6)/2 = 0.75 -> goes to shirt
            2: {3: 0.5, 4: 0.5},  # shirt 0.5 (loses to query 1)
            3: {6: 0.3},  # dog 0.3 <= 0.4 -> dropped
        }
    )
    boxes = np.array(
        [
            [0.5, 0.5, 0.2, 0.4],  # -> cx 50 cy 25 w 20 h 20 -> [40, 15, 60, 35]
            [0.257, 0.5, 0.1, 0.1],  # -> x 20.7..30.7, y 22.5..27.5 -> truncated [20, 22, 30, 27]
            [0.9, 0.9, 0.1, 0.1],
            [0.1, 0.1, 0.1, 0.1],
        ],
        dtype=np.float32,
    )
    out = select_boxes(probs, boxes, positions, (W, H), box_threshold=0.4)
    assert list(out) == [0, 1]
    assert out[0][0] == [40, 15, 60, 35]
    assert out[0][1] == pytest.approx(0.8)
    assert out[1][0] == [20, 22, 30, 27]  # truncation, not rounding (rounding would give x 21..31, y 22..28)
    assert out[1][1] == pytest.approx(0.75)
    # with a lower threshold the dog (0.3) is kept
    assert select_boxes(probs, boxes, positions, (W, H), box_threshold=0.29)[2][1] == pytest.approx(0.3)


def test_select_boxes_score_is_mean_of_max_and_mean():
    # 3-token tag with probs 0.9, 0.3, 0.0 -> max 0.9, mean 0.4 -> (0.9 + 0.4) / 2 = 0.65
    probs = _probs({0: {2: 0.9, 3: 0.3}}, q=1)
    out = select_boxes(probs, np.array([[0.5, 0.5, 0.2, 0.2]]), [[2, 3, 4]], (W, H), box_threshold=0.0)
    assert out[0][1] == pytest.approx(0.65, abs=1e-6)


def test_select_boxes_ties_threshold_and_zero():
    positions = [[1], [2]]
    # query 0 ties between tags -> first tag; queries 0 and 1 tie for tag 0 -> first query wins
    probs = _probs({0: {1: 0.5, 2: 0.5}, 1: {1: 0.5}}, q=2)
    boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.2, 0.2]], dtype=np.float32)
    out = select_boxes(probs, boxes, positions, (W, H), box_threshold=0.3)
    assert list(out) == [0] and out[0][0] == [40, 20, 60, 30]
    # strictly greater than the threshold: exactly 0.5 is dropped
    assert select_boxes(probs, boxes, positions, (W, H), box_threshold=0.5) == {}
    # a tag whose best score is 0 never gets a box, even with threshold 0 (the benchmark starts from score 0)
    zero = np.zeros((2, 8), dtype=np.float32)
    assert select_boxes(zero, boxes, positions, (W, H), box_threshold=0.0) == {}


def test_select_boxes_negative_coordinates_truncate_toward_zero():
    probs = _probs({0: {1: 0.9}}, q=1)
    # cx 2, w 5 -> x0 = -0.5 -> int() gives 0 (floor would give -1); cy 0.2*50=10, h 30 -> y0 = -5 exactly
    out = select_boxes(probs, np.array([[0.02, 0.2, 0.05, 0.6]]), [[1]], (W, H), box_threshold=0.1)
    assert out[0][0] == [0, -5, 4, 25]


def _reference_loop(logits, boxes, masks, tags, W, H, thr):
    """The benchmark's per-image loop, written out literally (spec §7.3), as the oracle for select_boxes."""
    scores = []
    for m in masks:
        masked = logits * m
        scores.append((torch.max(masked, axis=1).values + torch.sum(masked, axis=1) / torch.sum(m)) / 2)
    scores = torch.stack(scores).T
    assigned = torch.max(scores, axis=1).indices
    best = dict.fromkeys(tags, (None, 0))
    for q, t in enumerate(assigned):
        if best[tags[t]][1] < scores[q, t]:
            best[tags[t]] = (q, scores[q, t])
    out = {}
    for t, (q, sc) in best.items():
        if q is not None and sc > thr:
            b = boxes[q] * torch.Tensor([W, H, W, H])
            b[:2] -= b[2:] / 2
            b[2:] += b[:2]
            out[t] = (b.int().tolist(), float(sc))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_select_boxes_matches_the_benchmark_loop_on_random_inputs(seed):
    rng = np.random.RandomState(seed)
    q, length = 60, 32
    # quantised probabilities create many ties between queries and between tags
    probs = torch.tensor(rng.choice([0.0, 0.2, 0.45, 0.7, 0.9], size=(q, length)).astype(np.float32))
    boxes = torch.tensor(rng.rand(q, 4).astype(np.float32))
    positions = [[1], [3, 4], [6, 7, 8], [10], [4, 12]]  # overlapping positions, like sub-list matches
    tags = ["t0", "t1", "t2", "t3", "t4"]
    masks = []
    for pos in positions:
        m = torch.zeros(length, dtype=torch.bool)
        m[pos] = True
        masks.append(m)
    for thr in (0.0, 0.4, 0.6):
        want = _reference_loop(probs, boxes, masks, tags, 640, 360, thr)
        got = select_boxes(probs.numpy(), boxes.numpy(), positions, (640, 360), box_threshold=thr)
        assert {tags[t]: v for t, v in got.items()} == want


def test_select_boxes_accepts_tensors_and_checks_shapes():
    probs = torch.tensor(_probs({0: {1: 0.9}}, q=1))
    assert select_boxes(probs, torch.tensor([[0.5, 0.5, 0.2, 0.2]]), [[1]], (W, H))[0][0] == [40, 20, 60, 30]
    with pytest.raises(ValueError, match="same Q"):
        select_boxes(np.zeros((2, 8)), np.zeros((3, 4)), [[1]], (W, H))
    with pytest.raises(ValueError, match="no token positions"):
        select_boxes(np.zeros((2, 8)), np.zeros((2, 4)), [[9]], (W, H))


def test_caption_and_token_positions_multi_word():
    tok = tiny_bert_tokenizer()
    caption, positions = tag_token_positions(tok, ["Man", "red shirt", "dog"])
    assert caption == "man . red shirt . dog."
    ids = tok(caption)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "man", ".", "red", "shirt", ".", "dog", ".", "[SEP]"]
    assert positions == [[1], [3, 4], [6]]
    # the ids GroundingDINO hard-codes keep their meaning in the offline vocabulary
    assert tok.convert_ids_to_tokens([101, 102, 1012, 1029]) == ["[CLS]", "[SEP]", ".", "?"]


def test_token_positions_wordpiece_and_overlap():
    tok = tiny_bert_tokenizer()
    caption, positions = tag_token_positions(tok, ["zebroid", "man", "old man"])
    pieces = tok.convert_ids_to_tokens(tok(caption)["input_ids"])
    assert "[UNK]" not in pieces  # unknown words still map to WordPiece letters
    n = len(tok("zebroid")["input_ids"]) - 2
    assert positions[0] == list(range(1, 1 + n))
    # benchmark's sub-list matching: "man" also claims the "man" inside "old man"
    old, man2 = 1 + n + 3, 1 + n + 4
    assert positions[1] == [1 + n + 1, man2]
    assert positions[2] == [old, man2]
    assert grounding_caption(["a", "b."]) == "a . b."
    with pytest.raises(ValueError, match="empty"):
        tag_token_positions(tok, ["man", "  "])


def _frames(n: int, h: int = 96, w: int = 128, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.RandomState(seed)
    return [(rng.rand(h, w, 3) * 255).astype(np.uint8) for _ in range(n)]


def test_hf_random_tiny_detects_and_batches_like_single_calls():
    g = HFGroundingDino("random-tiny", box_threshold=0.0, batch_size=2)
    assert g.is_random
    frames = _frames(3) + _frames(1, h=128, w=96, seed=1)  # two sizes -> two groups
    tags = ["man", "red shirt"]
    batched = g.detect(frames, tags)
    single = [g.detect([f], tags)[0] for f in frames]
    assert len(batched) == 4
    for b, s in zip(batched, single, strict=True):
        assert set(b) <= set(tags) and set(b) == set(s)
        for tag, det in b.items():
            assert isinstance(det, Detection) and len(det.box_xyxy) == 4
            assert all(isinstance(v, int) for v in det.box_xyxy)
            assert det.box_xyxy == s[tag].box_xyxy
            assert det.score == pytest.approx(s[tag].score, abs=1e-4)
    assert g.detect([], tags) == [] and g.detect(frames[:1], []) == [{}]


def _assert_same_detections(got: list[dict[str, Detection]], want: list[dict[str, Detection]]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        for tag in g:
            assert g[tag].box_xyxy == w[tag].box_xyxy
            assert np.allclose(g[tag].score, w[tag].score, atol=1e-5)


# tag lists of different lengths, so one forward pass carries captions padded to different lengths
MIXED_TAGS = [["man"], ["man", "red shirt"], ["dog", "old man", "frisbee"], ["zebroid"], ["woman", "hat"], []]


@pytest.mark.parametrize("size", ["random-tiny", "random-small"])
def test_hf_detect_many_with_different_tags_matches_one_image_at_a_time(size):
    g = HFGroundingDino(size, box_threshold=0.0, batch_size=4)
    frames = _frames(4) + _frames(2, h=128, w=96, seed=1)  # two sizes -> two groups, one of them split in two
    requests = list(zip(frames, MIXED_TAGS, strict=True))
    many = g.detect_many(requests)
    assert many[-1] == {}  # no tags -> nothing to ground
    assert all(many[:-1])  # threshold 0: every frame grounds something
    _assert_same_detections(many, [g.detect([f], t)[0] for f, t in requests])
    # batch size does not change results either
    _assert_same_detections(HFGroundingDino(size, box_threshold=0.0, batch_size=1).detect_many(requests), many)


def test_detect_many_rejects_bad_requests_naming_them():
    g = HFGroundingDino("random-tiny")
    with pytest.raises(ValueError, match="image #1 must be an RGB uint8"):
        g.detect_many([(_frames(1)[0], ["man"]), (np.zeros((8, 8), np.uint8), ["dog"])])
    with pytest.raises(ValueError, match="tag '' is empty"):
        g.detect_many([(_frames(1)[0], ["man", ""])])
    assert g.detect_many([]) == []


def test_hf_loads_a_saved_model_by_path(tmp_path):
    model, processor = random_grounding_dino("random-tiny")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    loaded = HFGroundingDino(str(tmp_path), box_threshold=0.0)
    assert not loaded.is_random
    frames = _frames(2)
    expected = HFGroundingDino("random-tiny", box_threshold=0.0).detect(frames, ["dog", "ball"])
    assert loaded.detect(frames, ["dog", "ball"]) == expected


def test_hf_missing_model_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="GroundingDINO model directory not found"):
        HFGroundingDino(str(tmp_path / "nope")).setup()
    # a hub id that is not cached fails fast offline (HF_HUB_OFFLINE=1 in conftest) and says how to fix it
    with pytest.raises(OSError, match="(?s)could not load GroundingDINO.*random-small"):
        HFGroundingDino("alchemist-test/not-a-model").setup()


def test_build_grounder_from_profiles():
    tiny, paper = built_per_profile(build_grounder, "grounding", "tiny", "paper")
    assert isinstance(tiny, HFGroundingDino) and tiny.model_id == "random-tiny"
    assert isinstance(paper, GroundingDinoPy) and paper.box_threshold == 0.4
    assert_unknown_backend_refused(build_grounder, "grounding", "yolo")


@pytest.fixture()
def empty_checkpoint(tmp_path):
    """An empty file named as the released checkpoint: GroundingDinoPy gets past its file check to the text encoder."""
    ckpt = tmp_path / "groundingdino_swint_ogc.pth"
    ckpt.write_bytes(b"")
    return ckpt


def test_groundingdino_py_missing_checkpoint_names_file_and_url(tmp_path):
    g = GroundingDinoPy(checkpoint=str(tmp_path / "groundingdino_swint_ogc.pth"), text_encoder=str(tiny_bert_dir()))
    with pytest.raises(FileNotFoundError, match="groundingdino_swint_ogc.pth.*github.com/IDEA-Research"):
        g.setup()


def test_groundingdino_py_uncached_text_encoder_fails_fast(empty_checkpoint):
    g = GroundingDinoPy(
        checkpoint=str(empty_checkpoint), text_encoder="bert-base-uncased"
    )  # not in the hub cache here
    with pytest.raises(OSError, match="(?s)text encoder 'bert-base-uncased'.*HF_HUB_OFFLINE"):
        g.setup()


def test_groundingdino_py_text_encoder_it_cannot_build_is_a_clear_error(tmp_path, empty_checkpoint):
    # groundingdino-py builds only bert-base-uncased (or roberta-base) by hub id; any other id used to end in its
    # bare `ValueError: Unknown text_encoder_type` from inside build_model (when the tokenizer could be fetched)
    with pytest.raises(ValueError, match="grounding.text_encoder='prajjwal1/bert-tiny'.*local BERT directory"):
        GroundingDinoPy(checkpoint=str(empty_checkpoint), text_encoder="prajjwal1/bert-tiny").setup()
    # the profile refuses it before any work, a missing local directory too
    with pytest.raises(ValueError, match="grounding.text_encoder"):
        curation_profile("paper", {"grounding.text_encoder": "prajjwal1/bert-tiny"})
    with pytest.raises(FileNotFoundError, match="no-bert-here"):
        curation_profile("paper", {"grounding.text_encoder": str(tmp_path / "no-bert-here")})
    assert curation_profile("paper", {"grounding.text_encoder": str(tiny_bert_dir())}).grounding.text_encoder


@pytest.mark.slow
def test_groundingdino_py_builds_loads_checkpoint_and_detects(tmp_path):
    # The benchmark's SwinT-OGC config with random weights and the tiny local BERT as text encoder; the checkpoint
    # is written in the released format ({"model": state_dict} with DDP "module." prefixes) and loaded back.
    ref = build_gdino(tiny_bert_dir(), seed=0)
    ckpt = tmp_path / "gdino.pth"
    torch.save({"model": {"module." + k: v for k, v in ref.state_dict().items()}}, ckpt)
    g = load_gdino_for_cpu(ckpt, max_size=320)
    ckpt.unlink()  # 250 MB: pytest keeps its last tmp dirs around
    for k, v in ref.state_dict().items():
        assert torch.equal(g.model.state_dict()[k], v), k
    frames = _frames(2)
    res = g.detect(frames, ["man", "red shirt"])
    assert len(res) == 2 and set(res[0]) <= {"man", "red shirt"} and res[0]
    assert res[0].keys() == res[1].keys()
    for det in res[0].values():
        assert len(det.box_xyxy) == 4 and 0.0 < det.score <= 1.0
    # groundingdino-py takes one caption per image too: a mixed pass equals one image at a time
    requests = [(frames[0], ["man", "red shirt"]), (frames[1], ["dog"])]
    _assert_same_detections(g.detect_many(requests), [g.detect([f], t)[0] for f, t in requests])


def test_detect_skips_tags_beyond_the_text_length():
    # 100 distinct two-token tags (3 tokens each with the ".") overflow GroundingDINO's 256 text tokens: tags past
    # token 255 get no box, the others are still grounded
    colours = ["red", "blue", "green", "yellow", "black", "white", "gray", "brown", "orange", "pink"]
    nouns = ["dog", "cat", "car", "man", "hat", "ball", "tree", "boat", "bag", "cup"]
    tags = [f"{c} {n}" for c in colours for n in nouns]
    tok = tiny_bert_tokenizer()
    _, positions = tag_token_positions(tok, tags)
    assert positions[-1][0] > 256
    res = HFGroundingDino("random-tiny", box_threshold=0.0).detect(_frames(1), tags)
    reachable = {t for t, pos in zip(tags, positions, strict=True) if pos[0] < 256}
    assert res[0] and set(res[0]) <= reachable


@pytest.mark.gpu
def test_hf_grounding_on_cuda_matches_cpu():
    frames = _frames(2)
    cpu = HFGroundingDino("random-small", box_threshold=0.0).detect(frames, ["man", "dog"])
    gpu = HFGroundingDino("random-small", box_threshold=0.0, device="cuda").detect(frames, ["man", "dog"])
    for c, g in zip(cpu, gpu, strict=True):
        assert c.keys() == g.keys()
        for tag in c:
            assert np.allclose(c[tag].box_xyxy, g[tag].box_xyxy, atol=2)


@pytest.mark.parametrize("hw", [(480, 854), (854, 480), (96, 160), (720, 1280), (1080, 1920), (300, 300), (2000, 50)])
def test_official_resize_size_is_groundingdinos(hw):
    import groundingdino.datasets.transforms as T
    from PIL import Image

    from alchemist_data.models.grounding import official_resize_hw

    out, _ = T.RandomResize([800], max_size=1333)(Image.new("RGB", (hw[1], hw[0])), None)
    assert official_resize_hw(*hw) == (out.size[1], out.size[0])


def test_hf_pixels_equal_the_official_transform_at_480x854():
    # transformers' processor resized 480x854 to 749x1333, one pixel wider than groundingdino's transform (1332)
    import groundingdino.datasets.transforms as T
    from PIL import Image

    g = HFGroundingDino("random-tiny")
    g.setup()
    g.processor.image_processor.size = {"shortest_edge": 800, "longest_edge": 1333}  # the released processor's
    frame = np.random.default_rng(0).integers(0, 255, (480, 854, 3), dtype=np.uint8)
    pixels = g.pixel_inputs([frame])["pixel_values"][0]
    transform = T.Compose(
        [T.RandomResize([800], max_size=1333), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    )
    want, _ = transform(Image.fromarray(frame), None)
    assert tuple(pixels.shape) == tuple(want.shape) == (3, 749, 1332)
    assert torch.allclose(pixels, want, atol=1e-5)
