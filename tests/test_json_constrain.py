"""JSON output that always parses: constrained decoding on MLX and llama.cpp, Ollama's format field, closing and repair.

The tiny test model has random weights, so without a constraint it almost never
writes JSON. Every check below that a sampled output parses would fail if the
mask, the grammar or the closing of a truncated stream were wrong.
"""

from __future__ import annotations

import json

import mlx.core as mx
import pytest
from fake_ollama import FakeOllama, FakeOllamaScript

from nbp_mlx.backends.llamacpp import LlamaCppBackend, json_schema_gbnf
from nbp_mlx.backends.ollama import OllamaBackend
from nbp_mlx.cli import main
from nbp_mlx.errors import GenerationError
from nbp_mlx.export.gguf import export_gguf
from nbp_mlx.generate import (
    GenerationSettings,
    GenerationStats,
    stream_generate,
    stream_json,
)
from nbp_mlx.json_constrain import NBP_SCHEMA, load_json_schema, make_json_constraint
from nbp_mlx.json_repair import StreamingJsonCloser
from nbp_mlx.models.loading import load_model

DESCRIPTION = "霓虹街头的赛博朋克女孩"
SEEDS = range(25)
TRUNCATED_LENGTHS = range(5, 13)
CLOSING_CHARACTERS = set('"}]')
# Enough tokens to get past the forced "subject" key even when the model spends
# the whole whitespace allowance (64 characters) before and after it.
PAST_REQUIRED_KEY = 160


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def llama_backend(tiny_model_dir, tmp_path_factory):
    gguf = tmp_path_factory.mktemp("json-gguf") / "tiny-f32.gguf"
    export_gguf(tiny_model_dir, gguf, "f32")
    # One thread: the tiny model decodes faster alone than with threads that wait on a busy CPU.
    backend = LlamaCppBackend(gguf, n_ctx=1024, n_threads=1)
    yield backend
    backend.close()


def generate_mlx(loaded, settings: GenerationSettings) -> tuple[list[str], GenerationStats]:
    stats = GenerationStats()
    chunks = list(stream_generate(loaded, DESCRIPTION, "json", settings, stats))
    return chunks, stats


def generate_llama(backend, settings: GenerationSettings) -> tuple[list[str], GenerationStats]:
    stats = GenerationStats()
    chunks = list(backend.stream(DESCRIPTION, "json", settings, stats))
    return chunks, stats


def assert_valid_stream(chunks: list[str], stats: GenerationStats) -> dict:
    """Check that the streamed chunks alone are the final JSON object, and return it."""
    text = "".join(chunks)
    value = json.loads(text)
    assert isinstance(value, dict), text
    assert text == stats.text
    assert stats.json_text == text
    assert stats.json_method in ("constrained", "constrained+closed"), stats.json_changes
    assert stats.finish_reason in ("stop", "length")  # "error": the matcher rejected a sampled token
    if stats.finish_reason == "stop":
        assert stats.json_method == "constrained"  # end-of-turn only once the JSON is complete
    return value


def assert_closed_by_last_chunk(chunks: list[str], stats: GenerationStats) -> None:
    assert stats.json_method == "constrained+closed"
    appended = [change for change in stats.json_changes if change.startswith("appended")]
    if appended:
        assert set(chunks[-1]) <= CLOSING_CHARACTERS, chunks[-1]
        assert repr(chunks[-1]) in appended[0]


# ---------------------------------------------------------------------------
# The logits processor


def test_constraint_masks_until_complete(loaded):
    tokenizer = loaded.tokenizer
    constraint = make_json_constraint(tokenizer, None)
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    vocab_size = constraint.vocab_size
    width = vocab_size + 36  # logits padded past the vocabulary, as Qwen's are
    prompt = mx.array([1, 2, 3])

    masked = constraint(prompt, mx.zeros((1, width)))
    allowed = [index for index, value in enumerate(masked[0].tolist()) if value == 0.0]
    assert allowed
    assert all(tokenizer.decode([index]).startswith("{") for index in allowed)
    assert end_id not in allowed
    assert max(allowed) < vocab_size

    body = tokenizer.encode('{"a": 1}', add_special_tokens=False)
    masked = constraint(mx.concatenate([prompt, mx.array(body)]), mx.zeros((1, width)))
    allowed = [index for index, value in enumerate(masked[0].tolist()) if value == 0.0]
    assert end_id in constraint.end_ids
    assert allowed == constraint.end_ids
    assert constraint.complete
    assert constraint.error is None


def test_constraint_forces_end_when_accepting(loaded):
    # "12" is a whole integer, but "123" would be one too: llguidance alone would allow more digits.
    tokenizer = loaded.tokenizer
    constraint = make_json_constraint(tokenizer, {"type": "integer"})
    prompt = mx.array([1, 2, 3])
    constraint(prompt, mx.zeros((1, constraint.vocab_size)))
    digits = tokenizer.encode("12", add_special_tokens=False)
    masked = constraint(mx.concatenate([prompt, mx.array(digits)]), mx.zeros((1, constraint.vocab_size)))
    allowed = [index for index, value in enumerate(masked[0].tolist()) if value == 0.0]
    assert allowed == constraint.end_ids


def test_constraint_records_rejected_token(loaded):
    tokenizer = loaded.tokenizer
    constraint = make_json_constraint(tokenizer, None)
    prompt = mx.array([1, 2, 3])
    constraint(prompt, mx.zeros((1, constraint.vocab_size)))
    rejected = tokenizer.encode("x", add_special_tokens=False)
    logits = mx.ones((1, constraint.vocab_size))
    result = constraint(mx.concatenate([prompt, mx.array(rejected)]), logits)
    assert constraint.error
    assert result.tolist() == logits.tolist()


# ---------------------------------------------------------------------------
# MLX and llama.cpp: the same checks on both local backends


@pytest.fixture(params=["mlx", "llamacpp"])
def generate(request):
    """Return a function that generates a JSON prompt with the backend named by the parameter."""
    if request.param == "mlx":
        loaded = request.getfixturevalue("loaded")
        return lambda settings: generate_mlx(loaded, settings)
    backend = request.getfixturevalue("llama_backend")
    return lambda settings: generate_llama(backend, settings)


def test_json_parses_for_many_seeds(generate):
    methods = set()
    for seed in SEEDS:
        chunks, stats = generate(GenerationSettings(temperature=1.0, seed=seed, max_tokens=48))
        assert_valid_stream(chunks, stats)
        assert "<|im_end|>" not in stats.text
        methods.add(stats.json_method)
    assert "constrained+closed" in methods


def test_truncated_json_is_closed(generate):
    closed = 0
    for max_tokens in TRUNCATED_LENGTHS:
        for seed in range(3):
            chunks, stats = generate(GenerationSettings(temperature=1.0, seed=seed, max_tokens=max_tokens))
            assert_valid_stream(chunks, stats)
            assert stats.generated_tokens <= max_tokens
            if stats.json_method == "constrained+closed":
                assert_closed_by_last_chunk(chunks, stats)
                closed += 1
    assert closed > 0


def test_nbp_schema_writes_subject(generate):
    for seed in range(4):
        settings = GenerationSettings(temperature=1.0, seed=seed, max_tokens=PAST_REQUIRED_KEY, json_schema=NBP_SCHEMA)
        chunks, stats = generate(settings)
        value = assert_valid_stream(chunks, stats)
        assert "subject" in value, stats.text
        assert stats.text.lstrip("{ \t\r\n").startswith('"subject"')


def test_mlx_no_constrain_uses_repair(loaded, monkeypatch):
    from nbp_mlx import json_constrain

    def fail(*args):
        raise AssertionError("the constraint was built although constrain_json is False")

    monkeypatch.setattr(json_constrain, "make_json_constraint", fail)
    for seed in range(3):
        chunks, stats = generate_mlx(loaded, GenerationSettings(temperature=1.0, seed=seed, max_tokens=24, constrain_json=False))
        assert "".join(chunks) == stats.text
        assert stats.json_method in ("as-is", "repaired", "failed")
        if stats.json_text is not None:
            json.loads(stats.json_text)


def test_llamacpp_no_constrain_uses_repair(llama_backend):
    for seed in range(3):
        chunks, stats = generate_llama(llama_backend, GenerationSettings(temperature=1.0, seed=seed, max_tokens=24, constrain_json=False))
        assert "".join(chunks) == stats.text
        assert stats.json_method in ("as-is", "repaired", "failed")


def test_gbnf_replaces_space_and_char_rules():
    grammar = json_schema_gbnf(NBP_SCHEMA)
    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    assert rules["space"] == r"[ \t\n\r]{0,64}"
    assert r"\x00-\x1F" in rules["char"]
    assert rules["subject"] != "object"


# ---------------------------------------------------------------------------
# Ollama


def ollama_stream(script: FakeOllamaScript, settings: GenerationSettings, prompt_format: str = "json"):
    with FakeOllama(script) as server:
        backend = OllamaBackend("nbp-test", server.url)
        stats = GenerationStats()
        try:
            chunks = list(backend.stream(DESCRIPTION, prompt_format, settings, stats))
        finally:
            backend.close()
    return chunks, stats, script.requests[-1]


def test_ollama_request_carries_format():
    pieces = ['{"subject": "霓虹', '街头", "light', 'ing": "neon"}']
    chunks, stats, request = ollama_stream(FakeOllamaScript(pieces=pieces), GenerationSettings())
    assert request["format"] == "json"
    assert "".join(chunks) == "".join(pieces)
    assert stats.json_method == "server-constrained"

    _chunks, _stats, request = ollama_stream(FakeOllamaScript(pieces=pieces), GenerationSettings(json_schema=NBP_SCHEMA))
    assert request["format"] == NBP_SCHEMA


def test_ollama_without_format_field():
    _chunks, _stats, request = ollama_stream(FakeOllamaScript(), GenerationSettings(), prompt_format="text")
    assert "format" not in request
    _chunks, stats, request = ollama_stream(FakeOllamaScript(), GenerationSettings(constrain_json=False))
    assert "format" not in request
    assert stats.json_method == "failed"


def test_ollama_truncated_json_is_closed():
    pieces = ['{"subject": "霓虹', '街头", "tags": ["neon", "ra']
    chunks, stats, _request = ollama_stream(FakeOllamaScript(pieces=pieces, done_reason="length"), GenerationSettings(max_tokens=2))
    assert json.loads("".join(chunks)) == {"subject": "霓虹街头", "tags": ["neon", "ra"]}
    assert chunks[-1] == '"]}'
    assert stats.json_method == "server-constrained+closed"
    assert stats.finish_reason == "length"


def test_ollama_ignored_format_is_repaired():
    pieces = ["```json\n", '{"subject": "霓虹"}', "\n```"]
    chunks, stats, _request = ollama_stream(FakeOllamaScript(pieces=pieces), GenerationSettings())
    assert "".join(chunks) == "".join(pieces)
    assert stats.json_method == "repaired"
    assert json.loads(stats.json_text) == {"subject": "霓虹"}


# ---------------------------------------------------------------------------
# Closing a streamed JSON prefix


DOCUMENT = json.dumps(
    {
        "subject": '霓虹 "girl"\nwith \\ backslash',
        "numbers": [-1.5e3, 0, 12, True, False, None, {}],
        "appearance": {"hair": "silver", "outfit": ["jacket", "boots"], "accent": "é😀"},
        "quality": -0.25e-2,
    },
    ensure_ascii=True,
    indent=2,
)


@pytest.mark.parametrize("chunk_size", [1, 3, 7])
def test_closer_closes_every_prefix(chunk_size):
    failures = []
    for cut in range(len(DOCUMENT) + 1):
        closer = StreamingJsonCloser()
        prefix = DOCUMENT[:cut]
        shown = "".join(closer.feed(prefix[start : start + chunk_size]) for start in range(0, cut, chunk_size))
        if not DOCUMENT.startswith(shown):
            failures.append((cut, "shown text is not a prefix"))
            continue
        try:
            json.loads(shown + closer.close())
        except json.JSONDecodeError as error:
            failures.append((cut, str(error)))
    assert failures == []


def test_closer_complete_document():
    closer = StreamingJsonCloser()
    assert closer.feed(DOCUMENT) == DOCUMENT
    assert closer.complete
    assert closer.close() == ""


def test_closer_holds_back_dangling_key():
    closer = StreamingJsonCloser()
    assert closer.feed('{"a": 1, "lig') == '{"a": 1'
    assert closer.held_back == ', "lig'
    assert closer.close() == "}"


@pytest.mark.parametrize("text", ["Sure! {", '{"a": 1} and more', '{"a" 1}', "```json\n{", '{"a": "x\ny"}', "[01]"])
def test_closer_passes_invalid_text_through(text):
    closer = StreamingJsonCloser()
    assert closer.feed(text) == text
    assert not closer.valid
    assert closer.close() == ""


def test_stream_json_unconstrained_repairs():
    stats = GenerationStats(text='```json\n{"subject": "lake"')
    chunks = list(stream_json([stats.text], stats, None))
    assert chunks == [stats.text]
    assert stats.json_method == "repaired"
    assert json.loads(stats.json_text) == {"subject": "lake"}


# ---------------------------------------------------------------------------
# Schemas and the command line


def test_schema_names_and_files(tmp_path):
    assert load_json_schema("nbp") is NBP_SCHEMA
    assert NBP_SCHEMA["required"] == ["subject"]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps({"type": "object", "properties": {"subject": {"type": "string"}}, "required": ["subject"]}))
    assert load_json_schema(str(path))["required"] == ["subject"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "not found"),
        ('{"type": ', "invalid JSON at line 1"),
        ("[1, 2]", "must be a JSON object"),
        ('{"type": "object", "properties": {"a": {"type": "string", "pattern": "["}}}', "cannot be compiled"),
    ],
)
def test_bad_schema_file_names_file(tmp_path, content, fragment):
    path = tmp_path / "bad-schema.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(GenerationError) as error:
        load_json_schema(str(path))
    message = str(error.value)
    assert str(path) in message
    assert fragment in message
    assert "--json-schema" in message


def test_cli_generate_json_stdout_parses(tiny_model_dir, capsys):
    argv = ["generate", DESCRIPTION, "--model", str(tiny_model_dir), "--format", "json", "--temperature", "1.0"]
    for seed, max_tokens in ((3, 12), (4, 40)):
        assert main([*argv, "--seed", str(seed), "--max-tokens", str(max_tokens)]) == 0
        captured = capsys.readouterr()
        assert isinstance(json.loads(captured.out), dict), captured.out
        assert "JSON method constrained" in captured.err


def test_cli_generate_nbp_schema(tiny_model_dir, capsys):
    argv = ["generate", DESCRIPTION, "--model", str(tiny_model_dir), "--format", "json", "--json-schema", "nbp"]
    assert main([*argv, "--seed", "1", "--temperature", "1.0", "--max-tokens", str(PAST_REQUIRED_KEY)]) == 0
    assert "subject" in json.loads(capsys.readouterr().out)


def test_cli_generate_llamacpp_json(llama_backend, capsys):
    argv = ["generate", DESCRIPTION, "--backend", "llamacpp", "--gguf", str(llama_backend.gguf_path), "--format", "json"]
    assert main([*argv, "--seed", "2", "--temperature", "1.0", "--max-tokens", "10"]) == 0
    captured = capsys.readouterr()
    assert isinstance(json.loads(captured.out), dict), captured.out
    assert "JSON method constrained" in captured.err


def test_cli_no_constrain_prints_repaired_json(capsys):
    pieces = ["```json\n", '{"subject": "霓虹", "tags": ["a"', "]}\n```"]
    with FakeOllama(FakeOllamaScript(pieces=pieces)) as server:
        argv = ["generate", DESCRIPTION, "--backend", "ollama", "--ollama-model", "nbp-test", "--ollama-host", server.url]
        assert main([*argv, "--format", "json", "--no-constrain"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"subject": "霓虹", "tags": ["a"]}
    assert "JSON method repaired" in captured.err
    assert "```json" in captured.err


def test_cli_broken_server_constraint_exits_1(capsys):
    pieces = ["Here it is: ", '{"subject": "霓虹"}']
    with FakeOllama(FakeOllamaScript(pieces=pieces)) as server:
        argv = ["generate", DESCRIPTION, "--backend", "ollama", "--ollama-model", "nbp-test", "--ollama-host", server.url]
        assert main([*argv, "--format", "json"]) == 1
    captured = capsys.readouterr()
    assert "not valid JSON" in captured.err
    assert '{"subject": "霓虹"}' in captured.err


def test_cli_bad_schema_file_exits_2(tiny_model_dir, tmp_path, capsys):
    path = tmp_path / "broken.json"
    path.write_text("{")
    argv = ["generate", DESCRIPTION, "--model", str(tiny_model_dir), "--format", "json", "--json-schema", str(path)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert "broken.json" in error
    assert "invalid JSON" in error


def test_cli_ctrl_c_still_prints_valid_json(tiny_model_dir, monkeypatch, capsys):
    import signal

    from nbp_mlx import cli_progress

    written: list[str] = []
    original = cli_progress.write_stdout

    def write_and_interrupt(text: str) -> None:
        original(text)
        written.append(text)
        if len(written) == 1:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C after the first chunk

    monkeypatch.setattr(cli_progress, "write_stdout", write_and_interrupt)
    code = main(["generate", DESCRIPTION, "--model", str(tiny_model_dir), "--format", "json", "--max-tokens", "200",
                 "--temperature", "1.0", "--seed", "3"])
    captured = capsys.readouterr()

    assert code == 130
    assert isinstance(json.loads(captured.out), dict)
    assert "Ctrl-C" in captured.err


def test_cli_warns_when_truncation_drops_required_key(tiny_model_dir, tmp_path, capsys):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"mood": {"type": "string"}}, "required": ["mood"]}), encoding="utf-8")

    code = main(["generate", DESCRIPTION, "--model", str(tiny_model_dir), "--format", "json", "--json-schema", str(schema), "--max-tokens", "1"])
    captured = capsys.readouterr()

    assert code == 0
    assert json.loads(captured.out) == {}
    assert "required keys mood" in captured.err
