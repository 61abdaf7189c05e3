"""Resolve one ``--model`` value into a local MLX model folder.

Accepted values, tried in this order:

* ``bundled``: the embedded Qwen2.5-Coder-0.5B-Instruct GGUF (optional extra);
* a path to a ``.gguf`` file, imported into an MLX folder and cached by sha256;
* a local Hugging Face / MLX model folder (one with ``config.json``);
* a Hugging Face repo id (``owner/name``), fetched with huggingface-hub into its
  usual cache, or found there when offline.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelNotFoundError
from ..i18n import _
from ..progress import NullProgress, Progress

logger = logging.getLogger(__name__)

BUNDLED = "bundled"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# The files mlx-lm needs from a Hub repo; mirrors mlx_lm.utils' allow-list.
HUB_PATTERNS = ["*.json", "model*.safetensors", "*.py", "tokenizer.model", "*.tiktoken", "*.txt", "*.jsonl", "*.jinja"]


@dataclass(frozen=True)
class ResolvedModel:
    """A model folder ready for ``mlx_lm.load`` and where it came from."""

    path: Path
    source: str  # "bundled", "gguf", "folder" or "hub"
    spec: str  # the --model value as given


def resolve_model(spec: str, progress: Progress | None = None) -> ResolvedModel:
    progress = progress or NullProgress()
    spec = str(spec).strip()
    if spec == BUNDLED:
        from .bundled import bundled_gguf_path
        from .gguf_import import import_gguf

        gguf_path = bundled_gguf_path(progress)
        return ResolvedModel(_import_with_progress(import_gguf, gguf_path, progress), "bundled", spec)

    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(_("{path}: GGUF file not found; check the path").format(path=path))
        from .gguf_import import import_gguf

        return ResolvedModel(_import_with_progress(import_gguf, path, progress), "gguf", spec)

    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                _("{path}: not a model folder (config.json is missing); pass a Hugging Face or MLX model folder").format(path=path)
            )
        return ResolvedModel(path.resolve(), "folder", spec)

    if REPO_ID.match(spec) and not path.exists():
        return ResolvedModel(_fetch_from_hub(spec, progress), "hub", spec)

    raise ModelNotFoundError(
        _("model '{spec}' not found: use 'bundled', a model folder, a .gguf file or a Hugging Face repo id such as Qwen/Qwen2.5-3B-Instruct").format(
            spec=spec
        )
    )


def _import_with_progress(import_gguf, gguf_path: Path, progress: Progress) -> Path:
    started = False

    def report(done: int, total: int, name: str) -> None:
        nonlocal started
        if not started:
            progress.start(_("Importing {name}").format(name=gguf_path.name), total=total, unit=_("tensors"))
            started = True
        progress.update(done, total, name)

    try:
        return import_gguf(gguf_path, progress=report)
    finally:
        if started:
            progress.finish()


def _fetch_from_hub(repo_id: str, progress: Progress) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    progress.message(_("Fetching {repo} from the Hugging Face Hub (or its local cache)").format(repo=repo_id))
    try:
        folder = snapshot_download(repo_id, allow_patterns=HUB_PATTERNS)
    except LocalEntryNotFoundError as error:
        raise ModelNotFoundError(
            _("{repo}: not in the local Hugging Face cache and the Hub cannot be reached ({error}); connect to the network once, or use --model bundled").format(
                repo=repo_id, error=type(error).__name__
            )
        ) from error
    except (HfHubHTTPError, OSError) as error:
        raise ModelNotFoundError(
            _("{repo}: download from the Hugging Face Hub failed ({error}); check the repo id and the network, or use --model bundled").format(
                repo=repo_id, error=error
            )
        ) from error
    return Path(folder)
