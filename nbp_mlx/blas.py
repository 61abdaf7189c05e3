"""Preload Debian's OpenBLAS on Linux, where the ``mlx[cpu]`` wheel ships the reference BLAS.

The Linux wheel of ``mlx-cpu`` bundles the netlib reference BLAS
(``mlx_cpu.libs/libblas-*.so``). On a 2-core x86-64 machine a 1024x1024
float32 matmul runs at about 4-6 GFLOP/s with it and at 50-190 GFLOP/s with
OpenBLAS preloaded (see docs/benchmarks.md). ``LD_PRELOAD`` only takes effect
when a process starts, so the CLI re-executes itself once with the library
preloaded. Set ``NBP_MLX_NO_OPENBLAS=1`` to turn this off.
"""

from __future__ import annotations

import glob
import importlib.util
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

OPT_OUT_ENV = "NBP_MLX_NO_OPENBLAS"
# Set in the re-executed process, so that it neither loops nor stays silent about what happened.
MARKER_ENV = "NBP_MLX_OPENBLAS_PRELOADED"

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)


def bundled_reference_blas() -> Path | None:
    """Return the reference BLAS shipped in the ``mlx[cpu]`` wheel, or ``None``."""
    spec = importlib.util.find_spec("mlx")
    if spec is None or not spec.submodule_search_locations:
        return None
    site_packages = Path(next(iter(spec.submodule_search_locations))).parent
    matches = sorted(glob.glob(str(site_packages / "mlx_cpu.libs" / "libblas*.so*")))
    return Path(matches[0]) if matches else None


def find_openblas() -> Path | None:
    for candidate in OPENBLAS_CANDIDATES:
        if os.path.exists(candidate):
            return Path(candidate)
    return None


def preload_plan() -> Path | None:
    """Return the OpenBLAS library to preload, or ``None`` when nothing should change."""
    if not sys.platform.startswith("linux"):
        return None
    if os.environ.get(OPT_OUT_ENV, "").strip() not in ("", "0"):
        return None
    if os.environ.get(MARKER_ENV):
        return None
    if "openblas" in os.environ.get("LD_PRELOAD", ""):
        return None
    if bundled_reference_blas() is None:
        return None
    return find_openblas()


def reexec_with_openblas() -> None:
    """Re-execute the current process with OpenBLAS preloaded when ``preload_plan`` finds one.

    Returns normally when nothing is to be done; otherwise the process image is
    replaced and this function does not return.
    """
    library = preload_plan()
    if library is None:
        return
    environment = dict(os.environ)
    preload = environment.get("LD_PRELOAD", "")
    environment["LD_PRELOAD"] = f"{library}:{preload}" if preload else str(library)
    environment[MARKER_ENV] = str(library)
    argv = list(getattr(sys, "orig_argv", [])) or [sys.executable, *sys.argv]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], environment)


def preload_status_message() -> str | None:
    """Return the log line reporting that OpenBLAS is preloaded, or ``None`` when it is not."""
    from .i18n import _

    library = os.environ.get(MARKER_ENV)
    if not library:
        return None
    return _("Preloaded OpenBLAS ({library}) in place of mlx's reference BLAS; set {variable}=1 to turn this off.").format(
        library=library, variable=OPT_OUT_ENV
    )
