"""Import users' prompt files into one record format.

``import_prompts`` reads prompts, with optional Chinese descriptions, from
JSONL, JSON, CSV or plain-text files and returns ``PromptRecord`` objects.
``write_records`` and ``read_records`` store them as JSONL, the format at the
boundary to the next stage.

Every prompt is normalized the same way, whatever file it comes from:

- line endings become ``\\n``, and the non-breaking spaces U+00A0, U+202F and
  U+2007 become plain spaces;
- leading and trailing whitespace is removed, and so is a Markdown code fence
  around the whole prompt (```` ```json ```` … ```` ``` ````);
- a prompt that then parses as a JSON object, or as a list of objects, is a
  JSON prompt and is stored re-serialized with ``indent=2``. Trailing commas
  before ``}`` or ``]`` are tolerated. Any other prompt is a text prompt and
  keeps its inner whitespace.

A record's id is ``"p-"`` plus the first 12 hex digits of the SHA-256 of the
normalized prompt, so the same prompt gets the same id in any file and order.

Supported input files, chosen by extension:

``.jsonl``
    One JSON object per line. ``prompt`` is required and may be a string or a
    JSON object. The description comes from ``description`` or
    ``description_zh``, the title from ``title`` or ``title_zh``.
    ``prompt_format`` is ignored because the importer detects the format
    itself. All other keys are kept in ``meta``.
``.json``
    A JSON array of such objects, or of prompt strings.
``.csv``
    A header row with a ``prompt`` column and optional ``description``
    (or ``description_zh``) and ``title`` (or ``title_zh``) columns. Other
    non-empty cells are kept in ``meta``. Quoted cells may span lines.
``.txt``, ``.md``
    One prompt per block of lines, with blocks separated by blank lines. Blank
    lines inside a ```` ``` ```` code fence do not end a block. When the first
    line of a block starts with ``描述:``, ``描述：`` or ``description:``, the
    rest of that line is the block's description and the remaining lines are
    the prompt.

A record's ``source`` is ``FILE:LINE`` with the input file's name and the
1-based line on which the record starts.

Prompt galleries mark their entries with flags, and the importer honours
them in JSONL and JSON files (pass ``keep_flagged=True`` to keep everything):

- an entry with ``"likely_truncated": true`` is skipped, because a prompt cut
  off in the middle would teach the model to stop mid-sentence;
- an entry with ``"description_zh_is_chinese": false`` keeps its prompt but
  loses its description, which ``data describe`` can then write anew.

Template slots in Raycast's syntax, ``{argument name="subject" default="a
cat"}``, are replaced by their default value (or by their name when there is
no default) in every prompt and description, because the model should learn
concrete prompts. A slot whose default contains a double quote is ambiguous
and stays; ``ImportResult.slots_left`` counts the records that keep one.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

from nbp_mlx.errors import DataFormatError
from nbp_mlx.i18n import _

logger = logging.getLogger(__name__)

PromptFormat = Literal["json", "text"]

SUPPORTED_EXTENSIONS = (".csv", ".json", ".jsonl", ".md", ".txt")

DESCRIPTION_KEYS = ("description", "description_zh")
TITLE_KEYS = ("title", "title_zh")
# Other tools write this key; the importer detects the format itself.
ADVISORY_KEYS = ("prompt_format",)

_NBSP_TRANSLATION = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2007": " "})
_FENCE = re.compile(r"\A```[\w+.-]*[ \t]*\n(?P<body>.*?)\n?[ \t]*```\Z", re.DOTALL)
_DESCRIPTION_PREFIXES = ("描述:", "描述：", "description:")
_ARGUMENT_SLOT = re.compile(
    r'\{argument name=\\?"(?P<name>[^"\\]*)\\?"(?: default=\\?"(?P<default>[^"\\]*)\\?")?\}'
)
_RECORD_KEYS = {"id", "prompt", "format", "description", "source", "title", "meta"}
_REQUIRED_RECORD_KEYS = ("id", "prompt", "format", "description", "source")


@dataclass
class PromptRecord:
    """One imported prompt, with its optional description."""

    id: str
    prompt: str
    format: PromptFormat
    description: str | None
    source: str
    title: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSONL form; ``title`` and ``meta`` appear only when set."""
        data: dict[str, Any] = {
            "id": self.id,
            "prompt": self.prompt,
            "format": self.format,
            "description": self.description,
            "source": self.source,
        }
        if self.title is not None:
            data["title"] = self.title
        if self.meta:
            data["meta"] = self.meta
        return data


@dataclass
class ImportResult:
    """Records of one input file after deduplication, with counts for display."""

    records: list[PromptRecord]
    duplicates: int
    json_count: int
    text_count: int
    with_description: int
    source: Path
    skipped_truncated: int = 0  # entries flagged "likely_truncated"
    descriptions_dropped: int = 0  # descriptions flagged as not Chinese
    slots_filled: int = 0  # prompts whose {argument ...} slots were replaced
    slots_left: int = 0  # records that still contain a slot the pattern cannot read


def import_prompts(path: str | Path, *, keep_flagged: bool = False) -> ImportResult:
    """Read prompts from a JSONL, JSON, CSV or plain-text file.

    Duplicate prompts (same id) are dropped and counted, keeping the first.
    When the first copy has no description or title, it takes them from the
    duplicate. Gallery flags are honoured unless ``keep_flagged`` is set; see
    the module docstring.

    Raises:
        DataFormatError: the file has an unsupported extension, cannot be read
            or decoded as UTF-8, or contains no or invalid entries. The message
            names the line and the fix.
    """
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(path, None, _("is a folder; pass the prompt file inside it"))
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        reason = _("unsupported file type '{suffix}'; use one of: {supported}").format(
            suffix=path.suffix or _("(none)"), supported=", ".join(SUPPORTED_EXTENSIONS)
        )
        raise DataFormatError(path, None, reason)

    logger.info("Importing prompts from %s", path)
    text = _read_text(path)
    if not text.strip():
        raise DataFormatError(path, None, _("file is empty; add at least one prompt"))

    if suffix == ".jsonl":
        entries = list(_entries_from_jsonl(text, path))
    elif suffix == ".json":
        entries = list(_entries_from_json_array(text, path))
    elif suffix == ".csv":
        entries = list(_entries_from_csv(text, path))
    else:
        entries = list(_entries_from_text(text, path))
    if not entries:
        raise DataFormatError(path, None, _("no prompts found; add at least one prompt"))

    screened = _screen_entries(entries, keep_flagged)
    if not screened.entries:
        raise DataFormatError(
            path,
            None,
            _("all {count} entries are flagged \"likely_truncated\"; pass --keep-flagged to import them anyway").format(
                count=len(entries)
            ),
        )
    records, duplicates = _deduplicate([_build_record(entry, path) for entry in screened.entries])
    result = ImportResult(
        records=records,
        duplicates=duplicates,
        json_count=sum(record.format == "json" for record in records),
        text_count=sum(record.format == "text" for record in records),
        with_description=sum(record.description is not None for record in records),
        source=path,
        skipped_truncated=screened.skipped_truncated,
        descriptions_dropped=screened.descriptions_dropped,
        slots_filled=screened.slots_filled,
        slots_left=sum(_has_slot(record.prompt) or _has_slot(record.description) for record in records),
    )
    logger.info(
        "Imported %d prompts from %s "
        "(%d JSON, %d text, %d with description, %d duplicates dropped)",
        len(records), path, result.json_count, result.text_count,
        result.with_description, duplicates,
    )
    return result


def summarize(result: ImportResult) -> dict[str, Any]:
    """Return the counts of an import as a flat dict for the CLI and the TUI."""
    return {
        "source": str(result.source),
        "records": len(result.records),
        "json": result.json_count,
        "text": result.text_count,
        "with_description": result.with_description,
        "without_description": len(result.records) - result.with_description,
        "duplicates_dropped": result.duplicates,
        "skipped_truncated": result.skipped_truncated,
        "descriptions_dropped": result.descriptions_dropped,
        "slots_filled": result.slots_filled,
        "slots_left": result.slots_left,
    }


def fill_argument_slots(prompt: str) -> tuple[str, int]:
    """Replace Raycast ``{argument name=... default=...}`` slots; return the text and the number replaced."""
    count = 0

    def replace(match: re.Match) -> str:
        nonlocal count
        count += 1
        default = match.group("default")
        return default if default is not None else match.group("name")

    return _ARGUMENT_SLOT.sub(replace, prompt), count


def normalize_prompt(text: str) -> tuple[str, PromptFormat]:
    """Normalize a prompt string and detect its format, as described in the module docstring.

    Returns the normalized text and ``"json"`` or ``"text"``. The text is empty
    when the prompt contains only whitespace or an empty code fence.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_NBSP_TRANSLATION).strip()
    fenced = _FENCE.match(text)
    if fenced and "\n```" not in fenced.group("body"):
        text = fenced.group("body").strip()

    parsed = _parse_json_prompt(text)
    if parsed is None:
        return text, "text"
    return json.dumps(parsed, ensure_ascii=False, indent=2), "json"


def prompt_id(normalized_prompt: str) -> str:
    """Return the record id of a prompt that ``normalize_prompt`` has already normalized."""
    return "p-" + hashlib.sha256(normalized_prompt.encode("utf-8")).hexdigest()[:12]


def write_records(path: str | Path, records: list[PromptRecord]) -> None:
    """Write records as JSONL, replacing ``path`` only once the new file is complete.

    The records go to a temporary file in the same folder, which is flushed to
    disk and then renamed over ``path``. If writing fails, for example because
    a ``meta`` value cannot be serialized to JSON, the temporary file is
    removed and an earlier file at ``path`` stays as it was.
    """
    path = Path(path)
    if path.is_dir():
        raise DataFormatError(path, None, _("the output is a folder; pass a file path such as data/prompts.jsonl"))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")

    # os.open with mode 0o666 lets the umask decide the permissions, as for any new file.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(descriptor, "w", encoding="utf-8", newline="\n") as output:
            for record in records:
                output.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
            output.flush()
            os.fsync(output.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise

    _fsync_folder(path.parent)
    logger.info("Wrote %d prompt records to %s", len(records), path)


def read_records(path: str | Path) -> list[PromptRecord]:
    """Read and validate a JSONL file written by ``write_records``.

    An empty file gives an empty list. Ids are taken as stored, not recomputed.

    Raises:
        DataFormatError: the file cannot be read, or a line is not a valid
            record. The message names the line and the fix.
    """
    path = Path(path)
    text = _read_text(path)
    if not text.strip():
        return []
    records = [_record_from_dict(value, path, line) for line, value in _iter_jsonl(text, path)]
    logger.info("Read %d prompt records from %s", len(records), path)
    return records


# --- reading and decoding -------------------------------------------------


@dataclass
class _Entry:
    """A prompt as found in an input file, before normalization."""

    line: int
    prompt: Any
    description: str | None = None
    title: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _read_text(path: Path) -> str:
    """Read a UTF-8 file, with or without a BOM, raising DataFormatError on any failure."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, None, _("file not found; check the path")) from None
    except OSError as error:
        reason = _("cannot read the file ({error}); check the path and its permissions").format(
            error=error.strerror or error
        )
        raise DataFormatError(path, None, reason) from error

    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = start + error.start
        line = data.count(b"\n", 0, offset) + 1
        reason = _(
            "invalid UTF-8 byte 0x{byte:02X} at byte offset {offset}; the file is not UTF-8 "
            "(it may be GBK or another legacy encoding), so re-save it as UTF-8"
        ).format(byte=data[offset], offset=offset)
        raise DataFormatError(path, line, reason) from error


def _iter_jsonl(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """Yield ``(line number, parsed value)`` for each line of a JSONL text.

    Blank lines are allowed only at the end of the file.
    """
    lines = text.split("\n")
    ends_with_newline = text.endswith("\n")
    blank_line: int | None = None

    for index, raw_line in enumerate(lines):
        number = index + 1
        line = raw_line.rstrip("\r")
        if not line.strip():
            if blank_line is None:
                blank_line = number
            continue
        if blank_line is not None:
            reason = _(
                "blank line between records; delete it, because every line of a JSONL file "
                "must be one JSON object"
            )
            raise DataFormatError(path, blank_line, reason)

        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            is_last_line = index == len(lines) - 1 and not ends_with_newline
            raise DataFormatError(
                path, number, _jsonl_error_reason(error, line, number, is_last_line)
            ) from error
        yield number, value


def _jsonl_error_reason(
    error: json.JSONDecodeError, line: str, number: int, is_last_line: bool
) -> str:
    # A value that stops early (unterminated string, or an error at the very
    # end) on a last line without a newline means the file was cut off.
    stops_early = error.msg.startswith("Unterminated") or error.pos >= len(line.rstrip())
    if is_last_line and stops_early:
        return _(
            "the last line is cut off (incomplete JSON: {message} at column {column}); the "
            "file was probably not written completely, so complete or delete this line"
        ).format(message=error.msg.removesuffix(" at"), column=error.colno)

    reason = _(
        "invalid JSON at column {column}: {message}; every line must be one complete JSON object"
    ).format(column=error.colno, message=error.msg)
    if number == 1 and line.lstrip().startswith("["):
        reason += " " + _("(the file looks like a JSON array, so rename it to .json)")
    return reason


# --- input formats ----------------------------------------------------------


def _entries_from_jsonl(text: str, path: Path) -> Iterator[_Entry]:
    for line, value in _iter_jsonl(text, path):
        yield _entry_from_object(value, path, line)


def _entries_from_json_array(text: str, path: Path) -> Iterator[_Entry]:
    """Yield entries of a JSON array, each with the line on which its element starts.

    The array is walked with ``raw_decode`` so that every element's position is known.
    """
    decoder = json.JSONDecoder()
    position = _skip_whitespace(text, 0)
    if text[position] != "[":
        reason = _(
            "expected a JSON array of objects or prompt strings, found {found}; wrap the "
            "entries in [ ], or use the .jsonl extension for one object per line"
        ).format(found=_describe_start(text, position, decoder))
        raise DataFormatError(path, _line_at(text, position), reason)

    position = _skip_whitespace(text, position + 1)
    if text[position : position + 1] == "]":
        _check_end_of_json(text, position + 1, path)
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise DataFormatError(path, error.lineno, _json_error_reason(error)) from error
        line = _line_at(text, position)
        if isinstance(value, str):
            yield _Entry(line=line, prompt=value)
        else:
            yield _entry_from_object(value, path, line)

        position = _skip_whitespace(text, end)
        separator = text[position : position + 1]
        if separator == "]":
            _check_end_of_json(text, position + 1, path)
            return
        if separator != ",":
            reason = _("expected ',' or ']' after an array element; the array is incomplete or "
                       "an element is followed by stray text")
            raise DataFormatError(path, _line_at(text, position), reason)
        position = _skip_whitespace(text, position + 1)


def _entries_from_csv(text: str, path: Path) -> Iterator[_Entry]:
    # strict=True raises on an unclosed quote instead of merging every later row into one cell.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as error:
        raise DataFormatError(path, reader.line_num, _csv_error_reason(error)) from error
    columns = [name.strip() for name in header]
    lowered = [name.lower() for name in columns]
    for name in set(lowered):
        if name and lowered.count(name) > 1:
            reason = _("column '{column}' appears more than once in the header; rename or "
                       "remove one of them").format(column=name)
            raise DataFormatError(path, 1, reason)
    if "prompt" not in lowered:
        reason = _(
            "no 'prompt' column; the header row has {found}. Name the prompt column 'prompt' "
            "and, optionally, add 'description' and 'title' columns"
        ).format(found=", ".join(repr(name) for name in columns) or _("no columns"))
        raise DataFormatError(path, 1, reason)

    previous_end = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise DataFormatError(path, previous_end + 1, _csv_error_reason(error)) from error
        line = previous_end + 1
        previous_end = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(columns):
            reason = _(
                "row has {count} cells but the header has {expected} columns; quote cells "
                "that contain commas"
            ).format(count=len(row), expected=len(columns))
            raise DataFormatError(path, line, reason)
        yield _entry_from_csv_row(dict(zip(lowered, row)), dict(zip(columns, row)), line)


def _entry_from_csv_row(by_key: dict[str, str], by_column: dict[str, str], line: int) -> _Entry:
    description_key = _first_present(by_key, DESCRIPTION_KEYS)
    title_key = _first_present(by_key, TITLE_KEYS)
    used = {"prompt", description_key, title_key, *ADVISORY_KEYS}
    meta = {
        column: value
        for column, value in by_column.items()
        if column.lower() not in used and column and value.strip()
    }
    return _Entry(
        line=line,
        prompt=by_key.get("prompt", ""),
        description=_clean_optional(by_key.get(description_key)) if description_key else None,
        title=_clean_optional(by_key.get(title_key)) if title_key else None,
        meta=meta,
    )


def _entries_from_text(text: str, path: Path) -> Iterator[_Entry]:
    for line, block in _split_blocks(text, path):
        first = block[0].strip()
        description = None
        body = block
        prefix = next((p for p in _DESCRIPTION_PREFIXES if first.lower().startswith(p)), None)
        if prefix is not None:
            description = _clean_optional(first[len(prefix) :])
            body = block[1:]
            if not "".join(body).strip():
                reason = _("the block has a description but no prompt; write the prompt on "
                           "the lines after the description line")
                raise DataFormatError(path, line, reason)
        yield _Entry(line=line, prompt="\n".join(body), description=description)


def _split_blocks(text: str, path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(first line number, lines)`` for each blank-line-separated block."""
    block: list[str] = []
    block_start = 0
    fence_start: int | None = None

    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.rstrip("\r")
        if not line.strip() and fence_start is None:
            if block:
                yield block_start, block
                block = []
            continue
        if not block:
            block_start = number
        block.append(line)
        # A line such as ```code``` opens and closes a fence at once.
        if line.lstrip().startswith("```") and line.count("```") % 2 == 1:
            fence_start = number if fence_start is None else None

    if fence_start is not None:
        reason = _("the code fence opened on this line is never closed; add a closing ``` line")
        raise DataFormatError(path, fence_start, reason)
    if block:
        yield block_start, block


def _entry_from_object(value: Any, path: Path, line: int) -> _Entry:
    """Build an entry from one JSON object of a JSONL or JSON file."""
    if not isinstance(value, dict):
        reason = _("expected a JSON object with a \"prompt\" key, found {found}").format(
            found=_json_type_name(value)
        )
        raise DataFormatError(path, line, reason)
    if "prompt" not in value:
        reason = _(
            "no \"prompt\" key; found keys: {found}. Expected \"prompt\" and, optionally, "
            "\"description\" (or \"description_zh\") and \"title\" (or \"title_zh\")"
        ).format(found=", ".join(f'"{key}"' for key in value) or _("none"))
        raise DataFormatError(path, line, reason)

    description_key = _first_present(value, DESCRIPTION_KEYS)
    title_key = _first_present(value, TITLE_KEYS)
    used = {"prompt", description_key, title_key, *ADVISORY_KEYS}
    return _Entry(
        line=line,
        prompt=value["prompt"],
        description=_optional_string(value, description_key, path, line),
        title=_optional_string(value, title_key, path, line),
        meta={key: item for key, item in value.items() if key not in used},
    )


# --- gallery flags and template slots --------------------------------------


@dataclass
class _Screened:
    entries: list[_Entry]
    skipped_truncated: int = 0
    descriptions_dropped: int = 0
    slots_filled: int = 0


def _screen_entries(entries: list[_Entry], keep_flagged: bool) -> _Screened:
    """Apply the gallery flags and fill template slots, as the module docstring describes."""
    screened = _Screened(entries=[])
    for entry in entries:
        if not keep_flagged and entry.meta.get("likely_truncated") is True:
            screened.skipped_truncated += 1
            continue
        if not keep_flagged and entry.meta.get("description_zh_is_chinese") is False and entry.description is not None:
            entry.meta["dropped_description"] = entry.description
            entry.description = None
            screened.descriptions_dropped += 1
        if isinstance(entry.prompt, str):
            entry.prompt, filled = fill_argument_slots(entry.prompt)
            screened.slots_filled += filled > 0
        if entry.description is not None:
            # Gallery descriptions sometimes repeat the slot of their prompt.
            entry.description, _filled = fill_argument_slots(entry.description)
        screened.entries.append(entry)
    return screened


def _has_slot(text: str | None) -> bool:
    return text is not None and "{argument name=" in text


# --- normalization and deduplication --------------------------------------


def _build_record(entry: _Entry, path: Path) -> PromptRecord:
    prompt = entry.prompt
    if isinstance(prompt, dict) or _is_list_of_objects(prompt):
        if not prompt:
            raise DataFormatError(path, entry.line, _empty_prompt_reason())
        # Serialize and normalize like a string prompt, so the id does not depend on the file type.
        prompt = json.dumps(prompt, ensure_ascii=False)
    elif not isinstance(prompt, str):
        reason = _(
            "\"prompt\" must be a string or a JSON object, found {found}; put the prompt text "
            "in quotes"
        ).format(found=_json_type_name(prompt))
        raise DataFormatError(path, entry.line, reason)

    text, prompt_format = normalize_prompt(prompt)
    if not text:
        raise DataFormatError(path, entry.line, _empty_prompt_reason())
    return PromptRecord(
        id=prompt_id(text),
        prompt=text,
        format=prompt_format,
        description=entry.description,
        source=f"{path.name}:{entry.line}",
        title=entry.title,
        meta=entry.meta,
    )


def _deduplicate(records: list[PromptRecord]) -> tuple[list[PromptRecord], int]:
    """Drop records whose id was seen before; fill a missing description or title from them."""
    kept: dict[str, PromptRecord] = {}
    duplicates = 0
    for record in records:
        first = kept.get(record.id)
        if first is None:
            kept[record.id] = record
            continue
        duplicates += 1
        logger.debug("Dropped duplicate prompt %s at %s (first at %s)",
                     record.id, record.source, first.source)
        if first.description is None and record.description is not None:
            first.description = record.description
        if first.title is None and record.title is not None:
            first.title = record.title
    return list(kept.values()), duplicates


def _parse_json_prompt(text: str) -> dict[str, Any] | list[dict[str, Any]] | None:
    """Return the parsed prompt if it is a JSON object or a list of objects, else None.

    NOTE: JSON prompts with Raycast placeholders inside strings, such as
    ``"{argument name="hair" default="red"}"``, contain unescaped quotes, so they
    do not parse and are kept verbatim as text prompts.
    """
    if not text.startswith(("{", "[")):
        return None
    try:
        value = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except ValueError:
        try:
            value = json.loads(
                _remove_trailing_commas(text), object_pairs_hook=_reject_duplicate_keys
            )
        except ValueError:
            # Duplicate keys also land here, because re-serializing would keep only the last value.
            return None
    if isinstance(value, dict) and value:
        return value
    if _is_list_of_objects(value) and value:
        return value
    return None


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("duplicate key in JSON object")
    return value


def _remove_trailing_commas(text: str) -> str:
    """Remove commas that are followed only by whitespace and then ``}`` or ``]``.

    Commas inside JSON strings are left alone.
    """
    output: list[str] = []
    in_string = False
    escaped = False
    for index, character in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif character == "\\":
                escaped = True
            elif character == '"':
                in_string = False
        elif character == '"':
            in_string = True
        elif character == ",":
            following = _skip_whitespace(text, index + 1)
            if text[following : following + 1] in ("}", "]"):
                continue
        output.append(character)
    return "".join(output)


# --- reading records back --------------------------------------------------


def _record_from_dict(value: Any, path: Path, line: int) -> PromptRecord:
    if not isinstance(value, dict):
        reason = _("expected a prompt record (a JSON object), found {found}").format(
            found=_json_type_name(value)
        )
        raise DataFormatError(path, line, reason)
    missing = [key for key in _REQUIRED_RECORD_KEYS if key not in value]
    unknown = sorted(set(value) - _RECORD_KEYS)
    if missing or unknown:
        reason = _(
            "not a prompt record: missing keys {missing}, unknown keys {unknown}. A record has "
            "\"id\", \"prompt\", \"format\", \"description\", \"source\" and optionally "
            "\"title\" and \"meta\"; re-create the file with the import command"
        ).format(missing=", ".join(missing) or "-", unknown=", ".join(unknown) or "-")
        raise DataFormatError(path, line, reason)

    for key in ("id", "prompt", "source"):
        if not isinstance(value[key], str) or not value[key]:
            reason = _("\"{key}\" must be a non-empty string, found {found}").format(
                key=key, found=_json_type_name(value[key])
            )
            raise DataFormatError(path, line, reason)
    if value["format"] not in ("json", "text"):
        reason = _("\"format\" must be \"json\" or \"text\", found {found}").format(
            found=json.dumps(value["format"], ensure_ascii=False)
        )
        raise DataFormatError(path, line, reason)
    for key in ("description", "title"):
        if value.get(key) is not None and not isinstance(value[key], str):
            reason = _("\"{key}\" must be a string or null, found {found}").format(
                key=key, found=_json_type_name(value[key])
            )
            raise DataFormatError(path, line, reason)
    meta = value.get("meta", {})
    if not isinstance(meta, dict):
        reason = _("\"meta\" must be a JSON object, found {found}").format(
            found=_json_type_name(meta)
        )
        raise DataFormatError(path, line, reason)

    return PromptRecord(
        id=value["id"],
        prompt=value["prompt"],
        format=value["format"],
        description=value["description"],
        source=value["source"],
        title=value.get("title"),
        meta=meta,
    )


# --- small helpers ---------------------------------------------------------


def _fsync_folder(folder: Path) -> None:
    """Flush the folder entry of a renamed file to disk, where the platform allows it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError as error:
        logger.debug("Could not fsync folder %s: %s", folder, error)
    finally:
        os.close(descriptor)


def _first_present(mapping: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """Return the first key that has a non-empty value, else the first key present."""
    present = [key for key in keys if key in mapping]
    for key in present:
        item = mapping[key]
        if not (item is None or (isinstance(item, str) and not item.strip())):
            return key
    return present[0] if present else None


def _optional_string(value: dict[str, Any], key: str | None, path: Path, line: int) -> str | None:
    if key is None or value[key] is None:
        return None
    if not isinstance(value[key], str):
        reason = _("\"{key}\" must be a string or null, found {found}").format(
            key=key, found=_json_type_name(value[key])
        )
        raise DataFormatError(path, line, reason)
    return _clean_optional(value[key])


def _clean_optional(text: str | None) -> str | None:
    """Return the text with NBSPs replaced and ends stripped, or None when nothing is left."""
    if text is None:
        return None
    text = text.translate(_NBSP_TRANSLATION).strip()
    return text or None


def _is_list_of_objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def _empty_prompt_reason() -> str:
    return _("the prompt is empty; write the prompt text or delete the entry")


def _json_type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return _("a boolean")
    if isinstance(value, (int, float)):
        return _("a number")
    if isinstance(value, str):
        return _("an empty string") if not value.strip() else _("a string")
    if isinstance(value, list):
        return _("an array")
    return _("an object")


def _json_error_reason(error: json.JSONDecodeError) -> str:
    return _("invalid JSON at column {column}: {message}").format(
        column=error.colno, message=error.msg
    )


def _csv_error_reason(error: csv.Error) -> str:
    return _(
        "invalid CSV in the row that starts on this line ({message}); check that every quoted "
        "cell has a closing quote and that quotes inside a cell are doubled"
    ).format(message=error)


def _check_end_of_json(text: str, position: int, path: Path) -> None:
    position = _skip_whitespace(text, position)
    if position < len(text):
        reason = _(
            "unexpected text after the JSON array; if the file has one object per line, "
            "rename it to .jsonl"
        )
        raise DataFormatError(path, _line_at(text, position), reason)


def _describe_start(text: str, position: int, decoder: json.JSONDecoder) -> str:
    try:
        value, _end = decoder.raw_decode(text, position)
    except json.JSONDecodeError:
        return _("text that is not JSON")
    return _json_type_name(value)


def _skip_whitespace(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _line_at(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1
