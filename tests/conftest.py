import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from builders import save_tiny, stdlib_text, tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "eval.txt"
    path.write_text(stdlib_text(), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tokenizer) -> Path:
    """A tiny GPT-NeoX saved as a local model directory."""
    return save_tiny(tmp_path_factory.mktemp("tiny") / "neox", "gpt_neox", 0, tokenizer)


@pytest.fixture
def hub(monkeypatch, tmp_path, ckpts):
    """The local Hub stand-in serving the requesting module's ``ckpts`` as ``hubserver.REPO``."""
    from hubserver import REPO, HubServer, HubState, point_client_at, serve_checkpoints

    state = HubState()
    serve_checkpoints(state, REPO, ckpts)
    with HubServer(state) as server:
        point_client_at(monkeypatch, server.endpoint, tmp_path / "cache")
        yield server


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on shared cores their spin-waits cost ~3×."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def cpu_sweeps(request, monkeypatch):
    """The default suite is the CPU suite: a sweep's ``--device auto`` resolves to the CPU even on a GPU
    machine (its numbers are compared with CPU measurements); tests marked ``gpu`` see the real device."""
    if "gpu" not in request.keywords:
        monkeypatch.setattr("trajectory.scheduler.cuda_available", lambda: False)
