"""Repair a JSON prompt that a model left truncated or wrapped in a code fence.

Backends that cannot constrain decoding to JSON may stop at the token limit in
the middle of a string, or wrap the object in a Markdown fence. ``repair_json``
strips the fence, cuts anything after the first complete top-level value, and
closes an unterminated string and every open bracket at the end. It reports
what it changed, so callers can say that the output was repaired.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

FENCE = re.compile(r"^\s*```[a-zA-Z]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


@dataclass
class RepairResult:
    value: Any | None  # the parsed JSON value, or None when even the repair does not parse
    text: str  # the repaired JSON text
    actions: list[str] = field(default_factory=list)  # what was changed, empty when the input parsed as is

    @property
    def ok(self) -> bool:
        return self.value is not None


def repair_json(text: str) -> RepairResult:
    actions: list[str] = []
    candidate = text.strip()
    fenced = FENCE.match(candidate)
    if fenced:
        candidate = fenced.group(1).strip()
        actions.append("stripped code fence")
    start = min((index for index in (candidate.find("{"), candidate.find("[")) if index >= 0), default=-1)
    if start < 0:
        return RepairResult(None, candidate, actions + ["no JSON object found"])
    if start > 0:
        candidate = candidate[start:]
        actions.append("dropped text before the JSON value")

    try:
        return RepairResult(json.loads(candidate), candidate, actions)
    except json.JSONDecodeError:
        pass

    closed, close_actions = _close_truncated(candidate)
    actions.extend(close_actions)
    try:
        return RepairResult(json.loads(closed), closed, actions)
    except json.JSONDecodeError:
        return RepairResult(None, closed, actions + ["repair failed"])


def _close_truncated(text: str) -> tuple[str, list[str]]:
    """Cut after the first complete top-level value, or close what is open at the end."""
    stack: list[str] = []
    in_string = False
    escaped = False
    for index, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]":
            if stack:
                stack.pop()
            if not stack:
                return text[: index + 1], ["dropped text after the JSON value"]

    actions = ["closed a structure truncated at the token limit"]
    body = text
    if in_string:
        if escaped:
            body = body[:-1]
        body += '"'
    body = body.rstrip()
    # A dangling comma, colon or object key without a value cannot be closed; drop it.
    for _ in range(3):
        stripped = re.sub(r',\s*$', "", body)
        stripped = re.sub(r',?\s*"(?:[^"\\]|\\.)*"\s*:\s*$', "", stripped)
        if stack and stack[-1] == "}":
            stripped = re.sub(r'(?<=[{,])(\s*)"(?:[^"\\]|\\.)*"\s*$', r"\1", stripped.rstrip())
        if stripped == body:
            break
        body = stripped.rstrip()
    return body + "".join(reversed(stack)), actions
