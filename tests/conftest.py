from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_model import build_tiny_model  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


# Caches and settings of the tests stay out of the user's home folder. The folder
# survives between runs, so the bundled model is imported into MLX only once.
os.environ["NBP_MLX_HOME"] = str(REPO_ROOT / ".pytest_cache" / "nbp-mlx-home")
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def _english_messages(monkeypatch):
    monkeypatch.setenv("NBP_MLX_LANG", "en")
    from nbp_mlx import i18n

    i18n.set_language("en")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-qwen2")
