"""Test-wide settings: one thread (2-core CI; see notes/dependencies.md), no hub lookups."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("COLUMNS", "200")  # rich wraps at 80 columns without a terminal; messages are asserted on
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # S3 clients never probe the non-loopback metadata service

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def s3():
    """An authenticated S3-compatible server on 127.0.0.1, with its environment set for this process and for the
    processes it starts (Ray workers, CLI subprocesses) while the session lasts."""
    from tests.s3 import s3_server

    with s3_server() as server:
        saved = {k: os.environ.get(k) for k in server.env}
        os.environ.update(server.env)
        try:
            yield server
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


# Released-layout checkpoint files (tests/release_layouts.py), built once per session and shared by the layout tests
# and the CPU `paper` run: GroundingDINO SwinT-OGC is ~170 M parameters with the real BERT, ~63 M with the tiny one
# used here, SAM vit_b ~94 M; each file is a few hundred MB, so they are deleted at the end of the session.


@pytest.fixture(scope="session")
def released_gdino(tmp_path_factory):
    """``(path, model)``: ``groundingdino_swint_ogc.pth`` in the released layout, text encoder = the tiny BERT."""
    from alchemist_data.models.tiny import tiny_bert_dir
    from tests.release_layouts import write_gdino

    path = tmp_path_factory.mktemp("release-gdino") / "groundingdino_swint_ogc.pth"
    model = write_gdino(path, tiny_bert_dir())
    yield path, model
    path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def released_sam(tmp_path_factory):
    """``(path, model)``: ``sam_vit_b_01ec64.pth`` in the released layout (plain state dict)."""
    from tests.release_layouts import write_sam

    path = tmp_path_factory.mktemp("release-sam") / "sam_vit_b_01ec64.pth"
    model = write_sam(path)
    yield path, model
    path.unlink(missing_ok=True)
