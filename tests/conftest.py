"""Shared fixtures: the tiny model (built once per run), a private copy of brands.json."""

import os
import shutil
import tempfile
from pathlib import Path

# Before any library import: nothing in the tests may reach a hub or write to $HOME.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PYTHAINLP_DATA_DIR", tempfile.mkdtemp(prefix="pythainlp-"))
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", tempfile.mkdtemp(prefix="hypothesis-"))  # not the repository
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO.parent / "shared" / "reference" / "qwen2.5-7b-instruct"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from training.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


@pytest.fixture
def brands_file(tmp_path) -> Path:
    """A writable copy of the repository's brands.json in its own folder."""
    folder = tmp_path / "brands"
    folder.mkdir()
    target = folder / "brands.json"
    shutil.copy(REPO / "brands" / "brands.json", target)
    return target
