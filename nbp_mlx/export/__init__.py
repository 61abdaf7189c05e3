"""Export a trained adapter for other runtimes: a fused MLX folder, a GGUF file, an Ollama Modelfile.

``nbp_mlx.fuse`` writes the fused folder, ``export.gguf`` converts it for
llama.cpp, ``export.ollama`` writes the Modelfile and ``export.check`` proves
that every form renders the same prompt tokens and decodes the same tokens.
"""

from __future__ import annotations

from ..errors import NbpError

# NOTE: these two belong with the rest of the family in nbp_mlx/errors.py; they
# live here until that file is next edited.


class ExportError(NbpError):
    """A model cannot be fused or exported: bad input, an unwritable path or an unsupported type."""


class ExportParityError(ExportError):
    """An exported model does not reproduce the outputs of the model it was exported from."""


__all__ = ["ExportError", "ExportParityError"]
