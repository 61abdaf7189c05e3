from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from nbp_mlx.blas import reexec_with_openblas  # noqa: E402

# The same OpenBLAS preload as the CLI (see nbp_mlx/blas.py): on Linux with the
# mlx[cpu] wheel, pytest re-executes itself once so that training tests run at
# OpenBLAS speed. NBP_MLX_NO_OPENBLAS=1 turns it off.
reexec_with_openblas()

from tiny_model import build_tiny_model  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep caches and settings of every test out of the user's home folder."""
    home = tmp_path_factory.getbasetemp() / "nbp-home"
    monkeypatch.setenv("NBP_MLX_HOME", str(home))
    monkeypatch.setenv("NBP_MLX_LANG", "en")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from nbp_mlx import i18n

    i18n.set_language("en")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-qwen2")
