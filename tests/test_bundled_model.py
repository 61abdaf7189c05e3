"""The one real-model test: the bundled Qwen2.5-Coder-0.5B-Instruct answers in English."""

from __future__ import annotations

import re

import pytest

from nbp_mlx.errors import ModelNotFoundError
from nbp_mlx.generate import GenerationSettings, GenerationStats, stream_generate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bundled():
    from nbp_mlx.models.bundled import part_paths
    from nbp_mlx.models.loading import load_model

    try:
        part_paths()
    except ModelNotFoundError as error:
        pytest.skip(f"bundled model not installed: {error}")
    return load_model("bundled")


def test_bundled_model_answers_in_english(bundled):
    stats = GenerationStats()
    settings = GenerationSettings(temperature=0.0, max_tokens=48)
    text = "".join(stream_generate(bundled, "霓虹街头的赛博朋克女孩", "text", settings, stats))
    assert stats.generated_tokens > 0
    assert "<|im_end|>" not in text
    assert "<|endoftext|>" not in text
    assert "\ufffd" not in text
    latin = len(re.findall(r"[A-Za-z]", text))
    assert latin > 0.5 * len(text.replace(" ", ""))
    assert stats.time_to_first_token is not None


def test_bundled_import_is_cached(bundled):
    from nbp_mlx.models.resolve import resolve_model
    from nbp_mlx.progress import RecordingProgress

    progress = RecordingProgress()
    again = resolve_model("bundled", progress)
    assert again.path == bundled.resolved.path
    # Neither the assembly of the parts nor the GGUF import ran again.
    assert [event for event in progress.events if event[0] == "start"] == []
