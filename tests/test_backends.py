"""Generation backends: llama.cpp on a tiny GGUF, Ollama against a local fake server, and auto selection."""

from __future__ import annotations

import argparse
import socket

import pytest

from nbp_mlx.backends import BackendError
from nbp_mlx.backends import select as backend_select
from nbp_mlx.backends.llamacpp import LlamaCppBackend
from nbp_mlx.backends.ollama import OllamaBackend, iter_ndjson, ollama_base_url
from nbp_mlx.export.gguf import export_gguf
from nbp_mlx.fuse import fuse_adapter
from nbp_mlx.generate import GenerationSettings, GenerationStats, stream_generate
from nbp_mlx.models.loading import load_model
from nbp_mlx.prompts import SYSTEM_PROMPT, render_instruction

from fake_ollama import FakeOllama, FakeOllamaScript
from test_export import build_scaled_tiny_model, make_random_adapter

DESCRIPTION = "霓虹街头的赛博朋克女孩"


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    work = tmp_path_factory.mktemp("backends")
    base = build_scaled_tiny_model(work / "base", seed=1)
    adapter = make_random_adapter(base, work / "adapter")
    fused = fuse_adapter(adapter, work / "fused").output
    gguf = work / "tiny-f32.gguf"
    export_gguf(fused, gguf, "f32")
    return {"fused": fused, "gguf": gguf, "adapter": adapter}


# ---------------------------------------------------------------------------
# llama.cpp


def test_llamacpp_greedy_matches_mlx(tiny_gguf):
    settings = GenerationSettings(temperature=0.0, max_tokens=40)
    expected = GenerationStats()
    list(stream_generate(load_model(str(tiny_gguf["fused"])), DESCRIPTION, "text", settings, expected))

    backend = LlamaCppBackend(tiny_gguf["gguf"], n_ctx=1024)
    stats = GenerationStats()
    try:
        chunks = list(backend.stream(DESCRIPTION, "text", settings, stats))
    finally:
        backend.close()
    assert stats.prompt_tokens == expected.prompt_tokens
    assert stats.token_ids == expected.token_ids
    assert stats.finish_reason == expected.finish_reason
    assert "".join(chunks) == stats.text
    assert stats.text == expected.text


def test_llamacpp_sampled_output_is_clean(tiny_gguf):
    backend = LlamaCppBackend(tiny_gguf["gguf"], n_ctx=1024)
    try:
        for seed in range(3):
            stats = GenerationStats()
            chunks = list(backend.stream(DESCRIPTION, "json", GenerationSettings(max_tokens=48, seed=seed, temperature=1.0), stats))
            assert "".join(chunks) == stats.text
            assert "\ufffd" not in stats.text
            assert "<|im_end|>" not in stats.text
            assert "<|endoftext|>" not in stats.text
            assert stats.finish_reason in ("stop", "length")
    finally:
        backend.close()


class _ScriptedLlama:
    """Stands in for ``llama_cpp.Llama``: yields token ids whose bytes split a Chinese character."""

    STOP = 99

    def __init__(self, pieces: list[bytes]):
        self.pieces = pieces
        self.n_tokens = 0

    def generate(self, tokens, **kwargs):
        yield from range(len(self.pieces))
        yield self.STOP
        yield 0  # after the stop token, never read

    def detokenize(self, tokens, special=False):
        return self.pieces[tokens[0]]

    def n_ctx(self):
        return 4096

    def tokenize(self, text, add_bos=False, special=False):
        return [1, 2, 3]

    metadata = {"tokenizer.chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"}


def test_llamacpp_split_character_and_stop():
    text = "霓虹 street"
    data = text.encode("utf-8")
    pieces = [data[0:1], data[1:4], data[4:5], data[5:]]  # the first two characters cut across tokens
    backend = LlamaCppBackend.__new__(LlamaCppBackend)
    backend.llm = _ScriptedLlama(pieces)
    backend.stop_ids = {_ScriptedLlama.STOP}
    stats = GenerationStats()
    chunks = list(backend.stream(DESCRIPTION, "text", GenerationSettings(), stats))
    assert "".join(chunks) == text
    assert all("\ufffd" not in chunk for chunk in chunks)
    assert stats.finish_reason == "stop"
    assert stats.generated_tokens == 4


def test_llamacpp_missing_file(tmp_path):
    with pytest.raises(BackendError) as error:
        LlamaCppBackend(tmp_path / "missing.gguf")
    assert "missing.gguf" in str(error.value)
    assert "export gguf" in str(error.value)


# ---------------------------------------------------------------------------
# Ollama


def test_ndjson_split_anywhere():
    body = '{"response": "霓虹"}\n{"response": "a"}\n\n{"done": true}\n'.encode("utf-8")
    for size in (1, 2, 3, 5, 64):
        chunks = [body[index : index + size] for index in range(0, len(body), size)]
        assert list(iter_ndjson(chunks)) == [{"response": "霓虹"}, {"response": "a"}, {"done": True}], size


def test_ndjson_invalid_line():
    with pytest.raises(BackendError) as error:
        list(iter_ndjson([b'{"response": "a"}\n{"respo']))
    assert "line 2" in str(error.value)


def test_ollama_streams_split_chunks():
    script = FakeOllamaScript()
    with FakeOllama(script) as server:
        backend = OllamaBackend("nbp-test", server.url)
        stats = GenerationStats()
        chunks = list(backend.stream(DESCRIPTION, "text", GenerationSettings(seed=5), stats))
        backend.close()
    assert "".join(chunks) == "".join(script.pieces)
    assert "霓虹街头" in stats.text
    assert "\ufffd" not in stats.text
    assert stats.finish_reason == "stop"
    assert stats.generated_tokens == len(script.pieces)
    assert stats.prompt_tokens == 180
    assert stats.decode_seconds == pytest.approx(0.6)
    request = script.requests[0]
    assert request["system"] == SYSTEM_PROMPT
    assert request["prompt"] == render_instruction(DESCRIPTION, "text")
    assert request["options"] == {"temperature": 0.7, "top_p": 0.9, "num_predict": 2048, "seed": 5}
    assert request["stream"] is True


def test_ollama_one_byte_writes():
    script = FakeOllamaScript(write_sizes=(1,))
    with FakeOllama(script) as server:
        backend = OllamaBackend("nbp-test", server.url)
        stats = GenerationStats()
        list(backend.stream(DESCRIPTION, "json", GenerationSettings(), stats))
        backend.close()
    assert stats.text == "".join(script.pieces)


def test_ollama_length_is_truncation():
    script = FakeOllamaScript(done_reason="length")
    with FakeOllama(script) as server:
        backend = OllamaBackend("nbp-test", server.url)
        stats = GenerationStats()
        list(backend.stream(DESCRIPTION, "text", GenerationSettings(max_tokens=7), stats))
        backend.close()
    assert stats.finish_reason == "length"
    assert stats.text == "".join(script.pieces)


def test_ollama_model_missing():
    with FakeOllama() as server:
        backend = OllamaBackend("not-created", server.url)
        with pytest.raises(BackendError) as error:
            list(backend.stream(DESCRIPTION, "text", GenerationSettings(), GenerationStats()))
        backend.close()
    message = str(error.value)
    assert "not-created" in message
    assert "ollama create" in message
    assert "ollama pull not-created" in message


def test_ollama_error_in_stream():
    with FakeOllama(FakeOllamaScript(error_after=2)) as server:
        backend = OllamaBackend("nbp-test", server.url)
        with pytest.raises(BackendError) as error:
            list(backend.stream(DESCRIPTION, "text", GenerationSettings(), GenerationStats()))
        backend.close()
    assert "an error was encountered" in str(error.value)


def test_ollama_server_down():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = OllamaBackend("nbp-test", f"127.0.0.1:{port}")
    with pytest.raises(BackendError) as error:
        list(backend.stream(DESCRIPTION, "text", GenerationSettings(), GenerationStats()))
    backend.close()
    message = str(error.value)
    assert f"http://127.0.0.1:{port}" in message
    assert "ollama serve" in message
    assert "OLLAMA_HOST" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "http://127.0.0.1:11434"),
        ("127.0.0.1", "http://127.0.0.1:11434"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("https://ollama.internal/", "https://ollama.internal:11434"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_ollama_host_forms(value, expected, monkeypatch):
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    assert ollama_base_url(value) == expected


def test_ollama_host_from_environment(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:12345")
    assert ollama_base_url() == "http://127.0.0.1:12345"


# ---------------------------------------------------------------------------
# auto


def test_auto_apple_silicon(monkeypatch, tmp_path):
    monkeypatch.setattr(backend_select, "is_apple_silicon", lambda: True)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    choice = backend_select.choose_backend(gguf)
    assert choice.name == "mlx"
    assert "Apple silicon" in choice.reason


def test_auto_cpu_with_gguf(monkeypatch, tmp_path):
    monkeypatch.setattr(backend_select, "is_apple_silicon", lambda: False)
    monkeypatch.setattr(backend_select, "llama_cpp_available", lambda: True)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    choice = backend_select.choose_backend(gguf)
    assert choice.name == "llamacpp"
    assert "llama.cpp" in choice.reason


def test_auto_cpu_without_gguf_or_llama(monkeypatch, tmp_path):
    monkeypatch.setattr(backend_select, "is_apple_silicon", lambda: False)
    monkeypatch.setattr(backend_select, "llama_cpp_available", lambda: True)
    assert backend_select.choose_backend(None).name == "mlx"
    assert backend_select.choose_backend(tmp_path / "missing.gguf").name == "mlx"
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(backend_select, "llama_cpp_available", lambda: False)
    choice = backend_select.choose_backend(gguf)
    assert choice.name == "mlx"
    assert "pip install" in choice.reason


def test_create_backend_needs_files():
    with pytest.raises(BackendError) as error:
        backend_select.create_backend("llamacpp")
    assert "--gguf" in str(error.value)
    with pytest.raises(BackendError) as error:
        backend_select.create_backend("ollama")
    assert "--ollama-model" in str(error.value)


# ---------------------------------------------------------------------------
# generate --backend


def _generate_args(**values) -> argparse.Namespace:
    from nbp_mlx.cli_export import add_backend_options

    parser = argparse.ArgumentParser()
    parser.add_argument("description")
    parser.add_argument("--format", default="text")
    parser.add_argument("--adapter")
    parser.add_argument("--model")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--seed", type=int)
    add_backend_options(parser)
    argv = [DESCRIPTION]
    for key, value in values.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return parser.parse_args(argv)


def test_generate_with_llamacpp_backend(tiny_gguf, capsys, monkeypatch):
    from nbp_mlx.cli_export import run_generate_with_backend

    monkeypatch.setattr(backend_select, "is_apple_silicon", lambda: False)
    args = _generate_args(backend="auto", gguf=tiny_gguf["gguf"], max_tokens=16, temperature=0)
    assert run_generate_with_backend(args) == 0
    output = capsys.readouterr()
    assert "backend llamacpp" in output.err
    assert "<|im_end|>" not in output.out
    assert "tokens/s" in output.err


def test_generate_with_ollama_backend(capsys):
    from nbp_mlx.cli_export import run_generate_with_backend

    script = FakeOllamaScript()
    with FakeOllama(script) as server:
        args = _generate_args(backend="ollama", ollama_model="nbp-test", ollama_host=server.url)
        assert run_generate_with_backend(args) == 0
    output = capsys.readouterr()
    assert output.out == "".join(script.pieces) + "\n"
