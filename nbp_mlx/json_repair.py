"""Repair a JSON prompt that a model left truncated or wrapped in a code fence.

Generation without a JSON constraint may stop at the token limit in the middle
of a string, or wrap the object in a Markdown fence. ``repair_json`` strips the
fence, cuts anything after the first complete top-level value, and closes an
unterminated string and every open bracket at the end. It reports what it
changed, so callers can say that the output was repaired.

Constrained generation streams a valid JSON prefix, which may still stop at the
token limit. ``StreamingJsonCloser`` closes such a stream by appending
characters only, so the chunks already shown stay as they are.
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


# States of an open container, named after the token it expects next. A container
# moves to AFTER_VALUE as soon as one of its values starts, so only the innermost
# container decides which characters are allowed.
OBJECT_FIRST = "key or }"
OBJECT_KEY = "key"
OBJECT_COLON = ":"
OBJECT_VALUE = "value"
ARRAY_FIRST = "value or ]"
ARRAY_VALUE = "array value"
AFTER_VALUE = ", or close"

JSON_WHITESPACE = " \t\n\r"
LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
# Number states after which the number may end: "0", digits, fraction digits, exponent digits.
NUMBER_ENDS = {"zero", "int", "frac", "exp_digits"}


class StreamingJsonCloser:
    """Follow a JSON text as it streams, and close it by appending characters if it stops early.

    ``feed`` returns the part of each chunk that can be shown at once. Text that
    could not be kept if the stream ended right there is held back until the
    next value starts: a comma and the object key after it, an escape sequence,
    or a partial number or literal. ``close`` returns the characters that
    complete the text shown so far (a closing quote and brackets), and the
    held-back text is dropped. So the shown text plus ``close()`` always parses,
    and nothing shown has to be taken back.

    Once a character cannot continue a JSON text, ``valid`` turns False and
    ``feed`` passes that chunk and every later one through unchanged. That is
    why ``repair_json`` keeps its own, more lenient closer: unconstrained output
    can be invalid long before the point where it was cut off.
    """

    def __init__(self) -> None:
        self.valid = True
        self.held_back = ""  # text received but not released yet
        self._containers: list[str] = []  # "{" or "[" for each open container, outermost first
        self._expects: list[str] = []  # what each open container expects next
        self._started = False
        self._done = False
        self._lexeme: str | None = None  # "string", "number" or "literal" while one is open
        self._string_is_key = False
        self._escape: str | None = None  # "\\" right after a backslash, "u" inside \uXXXX
        self._hex_left = 0
        self._number = ""
        self._literal_rest = ""
        self._closing = "{}"  # the characters that complete the text released so far

    @property
    def complete(self) -> bool:
        """Whether the text shown so far is a whole JSON value, with nothing held back."""
        return self.valid and self._started and not self.held_back and self._closing == ""

    def feed(self, chunk: str) -> str:
        """Take the next chunk of the stream and return the text that can be shown now."""
        if not self.valid:
            return chunk
        released: list[str] = []
        for index, char in enumerate(chunk):
            if not self._step(char):
                self.valid = False
                released.append(self.held_back + chunk[index:])
                self.held_back = ""
                return "".join(released)
            self.held_back += char
            if self._is_closable():
                released.append(self.held_back)
                self.held_back = ""
                self._closing = self._closing_text()
        return "".join(released)

    def close(self) -> str:
        """Return the characters that complete the text shown so far; empty when it is complete or invalid."""
        return self._closing if self.valid else ""

    # --- the parser ---------------------------------------------------------------

    def _step(self, char: str) -> bool:
        """Advance by one character; return False when it cannot continue a JSON text."""
        if self._lexeme == "string":
            return self._string_char(char)
        if self._lexeme == "literal":
            if not self._literal_rest.startswith(char):
                return False
            self._literal_rest = self._literal_rest[1:]
            if not self._literal_rest:
                self._end_scalar()
            return True
        if self._lexeme == "number":
            if self._number_char(char):
                return True
            if self._number not in NUMBER_ENDS:
                return False
            self._end_scalar()  # the number ends here, and the character is read as structure
        return self._structure_char(char)

    def _structure_char(self, char: str) -> bool:
        if char in JSON_WHITESPACE:
            return True
        if self._done:
            return False
        expects = self._expects[-1] if self._expects else OBJECT_VALUE

        if expects in (OBJECT_VALUE, ARRAY_FIRST, ARRAY_VALUE):
            if char == "]" and expects == ARRAY_FIRST:
                self._end_container()
                return True
            return self._start_value(char)
        if expects in (OBJECT_FIRST, OBJECT_KEY):
            if char == '"':
                self._lexeme, self._string_is_key = "string", True
                return True
            if char == "}" and expects == OBJECT_FIRST:
                self._end_container()
                return True
            return False
        if expects == OBJECT_COLON:
            if char != ":":
                return False
            self._expects[-1] = OBJECT_VALUE
            return True

        # AFTER_VALUE
        kind = self._containers[-1]
        if char == ",":
            self._expects[-1] = OBJECT_KEY if kind == "{" else ARRAY_VALUE
            return True
        if (kind, char) in (("{", "}"), ("[", "]")):
            self._end_container()
            return True
        return False

    def _start_value(self, char: str) -> bool:
        if char == "{" or char == "[":
            self._value_started()
            self._containers.append(char)
            self._expects.append(OBJECT_FIRST if char == "{" else ARRAY_FIRST)
        elif char == '"':
            self._value_started()
            self._lexeme, self._string_is_key = "string", False
        elif char in "-0123456789":
            self._value_started()
            self._lexeme = "number"
            self._number = {"-": "sign", "0": "zero"}.get(char, "int")
        elif char in LITERALS:
            self._value_started()
            self._lexeme, self._literal_rest = "literal", LITERALS[char]
        else:
            return False
        return True

    def _value_started(self) -> None:
        self._started = True
        if self._expects:
            self._expects[-1] = AFTER_VALUE

    def _end_scalar(self) -> None:
        self._lexeme = None
        if not self._containers:
            self._done = True

    def _end_container(self) -> None:
        self._containers.pop()
        self._expects.pop()
        if not self._containers:
            self._done = True

    def _string_char(self, char: str) -> bool:
        if self._escape is None:
            if char == '"':
                self._lexeme = None
                if self._string_is_key:
                    self._expects[-1] = OBJECT_COLON
                elif not self._containers:
                    self._done = True
            elif char == "\\":
                self._escape = "\\"
            elif ord(char) < 0x20:  # JSON strings cannot hold raw control characters
                return False
            return True
        if self._escape == "\\":
            if char == "u":
                self._escape, self._hex_left = "u", 4
                return True
            self._escape = None
            return char in '"\\/bfnrt'
        if char not in "0123456789abcdefABCDEF":
            return False
        self._hex_left -= 1
        if self._hex_left == 0:
            self._escape = None
        return True

    def _number_char(self, char: str) -> bool:
        """Advance the number by ``char``; return False when ``char`` does not continue it."""
        digit = char in "0123456789"
        state = self._number
        if state == "sign" and digit:
            self._number = "zero" if char == "0" else "int"
        elif state in ("int", "frac", "exp_digits") and digit:
            pass
        elif state in ("zero", "int") and char == ".":
            self._number = "dot"
        elif state in ("dot", "frac") and digit:
            self._number = "frac"
        elif state in ("zero", "int", "frac") and char in "eE":
            self._number = "exp"
        elif state == "exp" and char in "+-":
            self._number = "exp_sign"
        elif state in ("exp", "exp_sign") and digit:
            self._number = "exp_digits"
        else:
            return False
        return True

    def _is_closable(self) -> bool:
        """Return whether the text so far can be completed by appending a quote and brackets only."""
        if self._lexeme == "string":
            return not self._string_is_key and self._escape is None
        if self._lexeme == "literal":
            return False
        if self._lexeme == "number":
            return self._number in NUMBER_ENDS
        return not self._expects or self._expects[-1] in (OBJECT_FIRST, ARRAY_FIRST, AFTER_VALUE)

    def _closing_text(self) -> str:
        if not self._started:
            return "{}"
        quote = '"' if self._lexeme == "string" else ""
        return quote + "".join("}" if kind == "{" else "]" for kind in reversed(self._containers))
