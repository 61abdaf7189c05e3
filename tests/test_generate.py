from __future__ import annotations

import pytest

from nbp_mlx.errors import GenerationError
from nbp_mlx.generate import GenerationSettings, GenerationStats, IncrementalDecoder, stream_generate
from nbp_mlx.models.loading import load_model

TEXT = "霓虹街头的赛博朋克女孩 walks past 鹦鹉螺号潜艇 in the rain ✨"


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(str(tiny_model_dir))


def test_decoder_never_splits_characters(loaded):
    tokenizer = loaded.tokenizer
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    # The tiny vocabulary has no merges for characters outside its training
    # corpus, so they arrive as several byte tokens each: the case under test.
    assert any("\ufffd" in tokenizer.decode([token]) for token in ids)
    decoder = IncrementalDecoder(tokenizer)
    chunks = [decoder.add(token) for token in ids]
    chunks.append(decoder.flush())
    assert all("\ufffd" not in chunk for chunk in chunks)
    assert "".join(chunks) == TEXT


def test_decoder_skips_special_tokens(loaded):
    tokenizer = loaded.tokenizer
    decoder = IncrementalDecoder(tokenizer)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert decoder.add(end) == ""


def test_stream_stops_at_max_tokens(loaded):
    stats = GenerationStats()
    text = "".join(stream_generate(loaded, "山间湖泊", "json", GenerationSettings(temperature=0.0, max_tokens=5), stats))
    assert stats.generated_tokens <= 5
    assert stats.finish_reason in ("length", "stop")
    assert text == stats.text


def test_greedy_generation_is_deterministic(loaded):
    settings = GenerationSettings(temperature=0.0, max_tokens=12)
    first = "".join(stream_generate(loaded, "山间湖泊", "text", settings))
    second = "".join(stream_generate(loaded, "山间湖泊", "text", settings))
    assert first == second


def test_cancel_stops_generation(loaded):
    stats = GenerationStats()
    list(stream_generate(loaded, "山间湖泊", "text", GenerationSettings(max_tokens=50, seed=0), stats, should_stop=lambda: True))
    assert stats.finish_reason in ("cancelled", "stop")
    assert stats.generated_tokens <= 1


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        (GenerationSettings(temperature=-1), "--temperature"),
        (GenerationSettings(top_p=0), "--top-p"),
        (GenerationSettings(max_tokens=0), "--max-tokens"),
        (GenerationSettings(repetition_penalty=0), "--repetition-penalty"),
    ],
)
def test_invalid_settings_are_rejected(settings, fragment):
    with pytest.raises(GenerationError, match=fragment):
        settings.validate()


def test_empty_description_is_rejected(loaded):
    with pytest.raises(GenerationError, match="description is empty"):
        list(stream_generate(loaded, "  ", "text"))
