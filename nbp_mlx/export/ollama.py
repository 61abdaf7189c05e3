"""Write an Ollama Modelfile for an exported GGUF file, and render its template in Python.

The Modelfile's ``TEMPLATE`` is ChatML in Go template syntax. With the
training system prompt as ``SYSTEM`` and the instruction of
``prompts.render_instruction`` as the prompt, it renders the same text as the
Qwen2 chat template that training used (``tests/test_export.py`` compares the
token ids).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..generate import GenerationSettings
from ..i18n import _
from ..jsonl import atomic_write_text
from ..prompts import SYSTEM_PROMPT
from . import ExportError

logger = logging.getLogger(__name__)

CHATML_TEMPLATE = (
    "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    "{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}"
    "<|im_start|>assistant\n"
)
STOP_SEQUENCES = ("<|im_end|>", "<|endoftext|>")
MODELFILE_NAME = "Modelfile"
# Ollama model names: an optional namespace, a name and an optional tag.
MODEL_NAME = re.compile(r"^(?:[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*(?::[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$")


@dataclass
class OllamaExportResult:
    """The written Modelfile and what ``ollama create`` did with it."""

    modelfile: Path
    name: str
    create_command: list[str]
    created: bool  # True when ``ollama create`` ran and succeeded
    ollama_output: str = ""


def render_modelfile(gguf_name: str, *, system: str = SYSTEM_PROMPT, settings: GenerationSettings | None = None) -> str:
    """Return the Modelfile text for a GGUF file in the same folder, named ``gguf_name``."""
    settings = settings or GenerationSettings()
    lines = [
        f"FROM ./{gguf_name}",
        "",
        f'TEMPLATE """{_triple_quoted(CHATML_TEMPLATE, "TEMPLATE")}"""',
        "",
        f'SYSTEM """{_triple_quoted(system, "SYSTEM")}"""',
        "",
        f"PARAMETER temperature {settings.temperature:g}",
        f"PARAMETER top_p {settings.top_p:g}",
        f"PARAMETER num_predict {settings.max_tokens}",
    ]
    lines += [f'PARAMETER stop "{stop}"' for stop in STOP_SEQUENCES]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf: str | Path, name: str, *, run_create: bool = True) -> OllamaExportResult:
    """Write ``Modelfile`` next to ``gguf`` and, when ``ollama`` is on PATH and ``run_create``, run ``ollama create``.

    Raises:
        ExportError: the GGUF file is missing, ``name`` is not a valid Ollama
            model name, or ``ollama create`` failed.
    """
    gguf = Path(gguf)
    if not gguf.is_file():
        raise ExportError(_("{path}: GGUF file not found; write it first with `python -m nbp_mlx export gguf`").format(path=gguf))
    with gguf.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ExportError(_("{path}: not a GGUF file; write one with `python -m nbp_mlx export gguf`").format(path=gguf))
    if not MODEL_NAME.match(name):
        raise ExportError(
            _("invalid Ollama model name '{name}'; use lowercase letters, digits, '.', '-' and '_', with an optional ':tag'").format(name=name)
        )
    modelfile = gguf.parent / MODELFILE_NAME
    try:
        atomic_write_text(modelfile, render_modelfile(gguf.name))
    except OSError as error:
        raise ExportError(
            _("{path}: cannot write the Modelfile ({reason}); make the folder writable").format(path=modelfile, reason=error.strerror)
        ) from error

    command = ["ollama", "create", name, "-f", str(modelfile)]
    result = OllamaExportResult(modelfile=modelfile, name=name, create_command=command, created=False)
    executable = shutil.which("ollama")
    if not run_create or executable is None:
        return result

    logger.info("Running %s", " ".join(command))
    completed = subprocess.run([executable, *command[1:]], capture_output=True, text=True, cwd=gguf.parent)
    result.ollama_output = (completed.stdout + completed.stderr).strip()
    if completed.returncode != 0:
        raise ExportError(
            _("`{command}` failed with status {status}: {output}; check that `ollama serve` is running").format(
                command=" ".join(command), status=completed.returncode, output=result.ollama_output[-500:]
            )
        )
    result.created = True
    return result


def read_modelfile_template(modelfile: str | Path) -> tuple[str, str | None]:
    """Return the ``TEMPLATE`` and ``SYSTEM`` values of a Modelfile written by ``render_modelfile``."""
    text = Path(modelfile).read_text(encoding="utf-8")
    values = {}
    for key in ("TEMPLATE", "SYSTEM"):
        match = re.search(rf'^{key} """(.*?)"""', text, re.MULTILINE | re.DOTALL)
        values[key] = match.group(1) if match else None
    if values["TEMPLATE"] is None:
        raise ExportError(_("{path}: no TEMPLATE \"\"\"...\"\"\" block found").format(path=modelfile))
    return values["TEMPLATE"], values["SYSTEM"]


def render_ollama_template(template: str, *, system: str = "", prompt: str = "") -> str:
    """Render a Modelfile ``TEMPLATE`` as Ollama does for one system prompt and one user prompt.

    Supports the subset that ``CHATML_TEMPLATE`` uses: ``{{ .System }}``,
    ``{{ .Prompt }}``, ``{{ .Response }}`` (always empty here) and nested
    ``{{ if .X }} ... {{ end }}`` blocks, where an empty string is false as in
    Go templates.
    """
    values = {"System": system, "Prompt": prompt, "Response": ""}
    output: list[str] = []
    # Each entry is True when all enclosing if-blocks are true.
    active = [True]
    position = 0
    for match in re.finditer(r"\{\{-?\s*(.*?)\s*-?\}\}", template, re.DOTALL):
        if active[-1]:
            output.append(template[position : match.start()])
        position = match.end()
        action = match.group(1)
        if action.startswith("if "):
            active.append(active[-1] and bool(_template_value(action[3:].strip(), values)))
        elif action == "end":
            if len(active) == 1:
                raise ValueError("{{ end }} without a matching {{ if }}")
            active.pop()
        elif active[-1]:
            output.append(_template_value(action, values))
    if len(active) != 1:
        raise ValueError("{{ if }} without a matching {{ end }}")
    output.append(template[position:])
    return "".join(output)


def _template_value(expression: str, values: dict[str, str]) -> str:
    if not expression.startswith(".") or expression[1:] not in values:
        raise ValueError(f"unsupported template expression {{{{ {expression} }}}}")
    return values[expression[1:]]


def _triple_quoted(text: str, key: str) -> str:
    # Ollama's Modelfile parser ends a triple-quoted value at the first """,
    # and has no escape for it.
    if '"""' in text:
        raise ExportError(_('the {key} text contains """, which a Modelfile cannot quote').format(key=key))
    return text
