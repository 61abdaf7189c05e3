"""The system prompt and instruction template shared by training and generation.

Training data, generation, the exported Ollama Modelfile and evaluation must all
render exactly the same messages, so they are built here and nowhere else.
"""

from __future__ import annotations

from typing import Literal

PromptFormat = Literal["text", "json"]

SYSTEM_PROMPT = (
    "You are a professional prompt engineer for Google's Nano Banana Pro image model. "
    "Turn the user's short Chinese description into a detailed, professional English image prompt "
    "that covers subject, appearance, scene, lighting, camera and style."
)

# The format names are the ones used in the instruction text the model is trained on.
FORMAT_LABELS: dict[str, str] = {"text": "自然语言", "json": "JSON"}

INSTRUCTION_TEMPLATE = """请根据以下描述，生成一段专业的 Nano Banana Pro 图像提示词。

格式：{format_label}
描述：{description}

要求：
1. 使用英文撰写，500 到 2000 个字符；
2. 写清主体、外观、场景、光线、镜头与构图、风格和画质；
3. 保留描述中的全部关键元素，不要添加与描述矛盾的内容；
4. {format_rule}"""

FORMAT_RULES: dict[str, str] = {
    "text": "输出一段连贯的自然语言提示词，不要使用列表或 Markdown。",
    "json": "只输出一个合法的 JSON 对象，不要使用代码块或任何解释文字。",
}


def render_instruction(description: str, prompt_format: PromptFormat) -> str:
    """Return the user message for ``description`` asking for ``prompt_format`` output."""
    if prompt_format not in FORMAT_LABELS:
        raise ValueError(f"unknown prompt format {prompt_format!r}; expected 'text' or 'json'")
    return INSTRUCTION_TEMPLATE.format(
        format_label=FORMAT_LABELS[prompt_format],
        description=description.strip(),
        format_rule=FORMAT_RULES[prompt_format],
    )


def build_messages(
    description: str, prompt_format: PromptFormat, answer: str | None = None
) -> list[dict[str, str]]:
    """Return chat messages: system, user instruction and, for training, the assistant answer."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": render_instruction(description, prompt_format)},
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return messages
