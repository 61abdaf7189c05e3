"""Build a tiny Qwen2-architecture model folder for tests.

The model has random weights, two layers and a byte-level BPE tokenizer trained
on a few sentences in English and Chinese, with Qwen's special tokens and the
Qwen2 ChatML chat template. It loads through ``mlx_lm.load`` like a real
Hugging Face model folder, in well under a second.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    Path(__file__).parent.parent / "nbp_mlx" / "resources" / "qwen2_chat_template.jinja"
).read_text(encoding="utf-8")

CORPUS = [
    "A cinematic portrait of a cyberpunk girl on a neon street at night, rain, reflections.",
    "Product photo of a ceramic teapot on linen, soft window light, 85mm lens, shallow depth of field.",
    "Isometric 3D illustration of a cozy cafe, pastel colors, soft shadows, high detail.",
    '{"subject": "mountain lake", "lighting": "golden hour", "camera": "wide angle", "style": "photorealistic"}',
    "霓虹街头的赛博朋克女孩，雨夜，电影感。",
    "请根据以下描述生成一段专业的图像提示词。格式：自然语言 JSON 描述：要求：",
    "山间湖泊的日落风景，水墨风格的中国山水，复古海报，美食摄影，建筑，动漫角色。",
    "You are a professional prompt engineer. Write in English. subject, appearance, scene, lighting, camera, style.",
]


SAMPLE_PROMPTS = Path(__file__).parent.parent / "data" / "sample_prompts.jsonl"


def sample_corpus() -> list[str]:
    """Return the project's sample prompts and descriptions, so that they tokenize to a realistic length."""
    rows = [json.loads(line) for line in SAMPLE_PROMPTS.read_text(encoding="utf-8").splitlines()]
    return [row["prompt"] for row in rows] + [row["description"] for row in rows]


def build_tokenizer(vocab_size: int = 1500) -> Tokenizer:
    from nbp_mlx.models.gguf_import import _QWEN2_SPLIT

    tokenizer = Tokenizer(models.BPE())
    # Qwen2's own pre-tokenizer: transformers applies it to every qwen2 model
    # whatever tokenizer.json contains, and llama.cpp calls it "qwen2".
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4 + sample_corpus(), trainer=trainer)
    return tokenizer


def write_tokenizer_files(folder: Path, tokenizer: Tokenizer) -> None:
    tokenizer.save(str(folder / "tokenizer.json"))
    added = {
        str(tokenizer.token_to_id(token)): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for token in SPECIAL_TOKENS
    }
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": added,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "errors": "replace",
        "model_max_length": 32768,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2))


def build_tiny_model(folder: Path, *, seed: int = 0, hidden_size: int = 64, layers: int = 2) -> Path:
    """Write a tiny random Qwen2 model folder at ``folder`` and return it."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen2

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    write_tokenizer_files(folder, tokenizer)

    config = {
        "model_type": "qwen2",
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": hidden_size,
        "num_hidden_layers": layers,
        "intermediate_size": hidden_size * 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "vocab_size": tokenizer.get_vocab_size(),
        "max_position_embeddings": 4096,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "eos_token_id": tokenizer.token_to_id("<|im_end|>"),
        "bos_token_id": tokenizer.token_to_id("<|endoftext|>"),
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))

    mx.random.seed(seed)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    # Give the biases non-zero values so that code which drops them is caught.
    for layer in model.model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
            proj.bias = mx.random.normal(proj.bias.shape) * 0.1
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(folder / "model.safetensors"), weights)
    return folder
