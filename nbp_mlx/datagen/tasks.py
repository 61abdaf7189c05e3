"""The two data-generation tasks: ``describe`` and ``augment``.

``describe`` writes a short Chinese description for a prompt that has none.
``augment`` writes two paraphrase variants of a prompt's description. Each task
owns its system prompt, its few-shot examples, the user message for one record
and the validation of an answer. The engine (``engine.py``) and the backends
share these, so the API and the local model ask the same thing and accept the
same answers.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

MAX_PROMPT_CHARS = 3000
MIN_DESCRIPTION_CHARS = 6
MAX_DESCRIPTION_CHARS = 60
MIN_CJK_SHARE = 0.6
# Two texts whose difflib ratio reaches this are "nearly identical".
MAX_SIMILARITY = 0.8
VARIANT_COUNT = 2


class InvalidAnswer(Exception):
    """A model answer that fails validation; ``reason`` says why, in English."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Example:
    """One few-shot example: the user message and the expected answer."""

    user: str
    answer: str


# --- validation ------------------------------------------------------------

_PREAMBLE = re.compile(
    r"^(?:描述|中文描述|好的|以下是|以下为|当然|答案|回答|改写|here\s+is|here's|here\s+are|sure|okay|description)\s*[:：,，!！]?",
    re.IGNORECASE,
)
_WRAPPING_PAIRS = {
    '"': '"', "'": "'", "“": "”", "‘": "’", "「": "」", "『": "』",
    "《": "》", "【": "】", "[": "]", "(": ")", "（": "）", "<": ">",
}
_QUOTES = "\"'“”‘’"
_TECHNICAL = re.compile(r"--[a-z]|\b\d+\s?mm\b|\b\d+k\b|\bf/\d|\b\d+:\d+\b|\bseed\b", re.IGNORECASE)
_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\d+\s*[.、)）:：])\s*")
_CODE_FENCE = re.compile(r"\A```[\w-]*\s*\n?(?P<body>.*?)\n?```\Z", re.DOTALL)


def is_cjk(char: str) -> bool:
    code = ord(char)
    return 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF or 0x20000 <= code <= 0x2FA1F


def cjk_share(text: str) -> float:
    """Return the share of CJK ideographs among the letters and digits of ``text``."""
    letters = [char for char in text if unicodedata.category(char)[0] in ("L", "N")]
    if not letters:
        return 0.0
    return sum(1 for char in letters if is_cjk(char)) / len(letters)


def check_description(answer: str) -> str:
    """Return ``answer`` cleaned up as a description, or raise ``InvalidAnswer``.

    A description is one line of mostly Chinese text, 6 to 60 characters long,
    not wrapped in quotes or brackets, without a preamble such as "描述：" or
    "Here is" and without technical parameters. One trailing "。" is removed.
    """
    text = answer.strip()
    if not text:
        raise InvalidAnswer("empty response")
    if "\n" in text:
        raise InvalidAnswer("more than one line")
    if _PREAMBLE.match(text):
        raise InvalidAnswer("starts with a preamble instead of the description itself")
    if _WRAPPING_PAIRS.get(text[0]) == text[-1] or text[0] in _QUOTES or text[-1] in _QUOTES:
        raise InvalidAnswer("wrapped in quotes or brackets")
    text = text.removesuffix("。")

    share = cjk_share(text)
    if share < MIN_CJK_SHARE:
        raise InvalidAnswer(f"not mostly Chinese ({share:.0%} CJK characters, expected at least {MIN_CJK_SHARE:.0%})")
    if len(text) < MIN_DESCRIPTION_CHARS or len(text) > MAX_DESCRIPTION_CHARS:
        raise InvalidAnswer(
            f"{len(text)} characters long, expected {MIN_DESCRIPTION_CHARS} to {MAX_DESCRIPTION_CHARS}"
        )
    if _TECHNICAL.search(text):
        raise InvalidAnswer("contains technical parameters (lens, resolution, aspect ratio or flags)")
    return text


def similarity(first: str, second: str) -> float:
    """Return the difflib ratio of two texts after dropping punctuation and spaces."""
    return difflib.SequenceMatcher(None, _letters_only(first), _letters_only(second), autojunk=False).ratio()


def _letters_only(text: str) -> str:
    return "".join(char for char in text if unicodedata.category(char)[0] in ("L", "N")).lower()


def parse_variants(answer: str, original: str) -> list[str]:
    """Return the two variants in ``answer``, or raise ``InvalidAnswer``.

    The answer is a JSON array of two strings or, failing that, two non-empty
    lines (list markers such as "1." or "-" are removed). Each variant must be a
    valid description and differ from the original and from its sibling
    (``similarity`` below ``MAX_SIMILARITY``).
    """
    text = answer.strip()
    fenced = _CODE_FENCE.match(text)
    if fenced:
        text = fenced.group("body").strip()
    if not text:
        raise InvalidAnswer("empty response")

    items: list[Any]
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        items = [_LIST_MARKER.sub("", line) for line in text.splitlines() if line.strip()]
    else:
        if not isinstance(parsed, list) or not all(isinstance(item, str) for item in parsed):
            raise InvalidAnswer("expected a JSON array of strings")
        items = parsed
    if len(items) != VARIANT_COUNT:
        raise InvalidAnswer(f"expected {VARIANT_COUNT} variants, got {len(items)}")

    variants = []
    for number, item in enumerate(items, start=1):
        try:
            variants.append(check_description(item))
        except InvalidAnswer as error:
            raise InvalidAnswer(f"variant {number}: {error.reason}") from None
        score = similarity(variants[-1], original)
        if score >= MAX_SIMILARITY:
            raise InvalidAnswer(f"variant {number} is nearly identical to the original (similarity {score:.2f})")
    score = similarity(variants[0], variants[1])
    if score >= MAX_SIMILARITY:
        raise InvalidAnswer(f"the two variants are nearly identical (similarity {score:.2f})")
    return variants


# --- the tasks -----------------------------------------------------------


DESCRIBE_EXAMPLES = (
    Example(
        "A cinematic portrait of a cyberpunk girl standing on a neon-lit street at night, rain-soaked "
        "pavement reflecting pink and blue signs, shallow depth of field, 85mm lens, 8k",
        "雨夜霓虹街头的赛博朋克女孩，电影感人像",
    ),
    Example(
        json.dumps(
            {
                "subject": "ceramic teapot",
                "scene": "linen tablecloth by a window",
                "lighting": "soft morning light",
                "style": "minimalist product photography",
                "camera": "100mm macro, f/2.8",
            },
            indent=2,
        ),
        "窗边亚麻桌布上的陶瓷茶壶，极简产品摄影",
    ),
    Example(
        "Isometric 3D illustration of a cozy bookstore cafe in autumn, pastel colors, soft shadows, "
        "tiny people reading, high detail, octane render",
        "秋日温馨书店咖啡馆的等距插画，柔和粉彩色调",
    ),
)

AUGMENT_EXAMPLES = (
    Example(
        "雨夜霓虹街头的赛博朋克女孩，电影感人像",
        json.dumps(["霓虹灯映照的湿漉漉街道上，一位赛博朋克少女的电影风格肖像", "电影质感：夜雨中独自站在霓虹街角的未来派女孩"], ensure_ascii=False),
    ),
    Example(
        "窗边亚麻桌布上的陶瓷茶壶，极简产品摄影",
        json.dumps(["极简风格的商品照，一只陶瓷茶壶摆在靠窗的亚麻布上", "晨光洒落的窗台旁，亚麻桌面上静置着一把瓷茶壶"], ensure_ascii=False),
    ),
)


def _examples_text(examples: tuple[Example, ...], user_label: str, answer_label: str) -> str:
    blocks = [f"{user_label}\n{example.user}\n{answer_label}\n{example.answer}" for example in examples]
    return "\n\n".join(blocks)


# The instructions alone are the local model's system prompt, which gets the
# examples as chat turns. The API's system prompt carries the examples as text.
DESCRIBE_INSTRUCTIONS = (
    "你是图像提示词的标注员。用户会给出一段英文或 JSON 格式的图像生成提示词，"
    "请用一句简洁的中文描述这张图的核心要素：主体、场景和风格。\n"
    "要求：\n"
    "- 通常 10 到 30 个汉字；\n"
    "- 不写技术参数，例如分辨率、镜头焦距、光圈、画幅比例、渲染器或命令行参数；\n"
    "- 只输出一行描述本身，不加引号、括号或编号，不要开场白，也不要解释。"
)
DESCRIBE_SYSTEM_PROMPT = (
    DESCRIBE_INSTRUCTIONS + "\n\n示例：\n\n" + _examples_text(DESCRIBE_EXAMPLES, "【提示词】", "【应输出】")
)

AUGMENT_INSTRUCTIONS = (
    "你是中文改写助手。用户会给出一句描述图像的中文短句，请写出 2 个改写版本：\n"
    "- 意思与原句相同，但换用不同的词语和句式；\n"
    "- 两个版本之间也要明显不同；\n"
    "- 每个版本 10 到 40 个汉字，不写技术参数；\n"
    "- 只输出一个包含 2 个字符串的 JSON 数组，例如 [\"……\", \"……\"]，不要任何其他文字。"
)
AUGMENT_SYSTEM_PROMPT = (
    AUGMENT_INSTRUCTIONS + "\n\n示例：\n\n" + _examples_text(AUGMENT_EXAMPLES, "【原句】", "【应输出】")
)


class DatagenTask:
    """What one task asks for and how it checks and stores the answer."""

    name: str = ""
    result_key: str = ""
    system_prompt: str = ""
    instructions: str = ""
    examples: tuple[Example, ...] = ()
    max_tokens: int = 200
    # Rough output size per request, used only by the dry-run cost estimate.
    expected_output_tokens: int = 40
    answer_format: str = ""

    def wants(self, record: dict[str, Any]) -> bool:
        """Return True when ``record`` needs this task's work."""
        raise NotImplementedError

    def user_message(self, record: dict[str, Any]) -> str:
        raise NotImplementedError

    def parse(self, answer: str, record: dict[str, Any]) -> Any:
        """Return the validated result, or raise ``InvalidAnswer``."""
        raise NotImplementedError

    def corrective_message(self, answer: str, reason: str) -> str:
        """Return the follow-up user message that asks once more after an invalid answer."""
        return (
            f"上一个回答不符合要求（原因：{reason}）。上一个回答是：\n{answer}\n\n"
            f"请严格按要求重新回答，只输出{self.answer_format}。"
        )

    def apply(self, record: dict[str, Any], value: Any) -> dict[str, Any]:
        """Return a copy of ``record`` with the result stored under ``result_key``."""
        updated = dict(record)
        updated[self.result_key] = value
        return updated


class DescribeTask(DatagenTask):
    name = "describe"
    result_key = "description"
    system_prompt = DESCRIBE_SYSTEM_PROMPT
    instructions = DESCRIBE_INSTRUCTIONS
    examples = DESCRIBE_EXAMPLES
    max_tokens = 200
    expected_output_tokens = 40
    answer_format = "一行中文描述"

    def wants(self, record: dict[str, Any]) -> bool:
        return not (record.get("description") or "").strip()

    def user_message(self, record: dict[str, Any]) -> str:
        return str(record["prompt"])[:MAX_PROMPT_CHARS]

    def parse(self, answer: str, record: dict[str, Any]) -> str:
        return check_description(answer)


class AugmentTask(DatagenTask):
    name = "augment"
    result_key = "variants"
    system_prompt = AUGMENT_SYSTEM_PROMPT
    instructions = AUGMENT_INSTRUCTIONS
    examples = AUGMENT_EXAMPLES
    max_tokens = 300
    expected_output_tokens = 90
    answer_format = "一个包含 2 个字符串的 JSON 数组"

    def wants(self, record: dict[str, Any]) -> bool:
        return bool((record.get("description") or "").strip()) and not record.get("variants")

    def user_message(self, record: dict[str, Any]) -> str:
        return str(record["description"]).strip()

    def parse(self, answer: str, record: dict[str, Any]) -> list[str]:
        return parse_variants(answer, str(record["description"]))


TASKS: dict[str, DatagenTask] = {"describe": DescribeTask(), "augment": AugmentTask()}
