"""pytest plugin that applies the CLI's OpenBLAS preload to test runs.

It is loaded with ``-p nbp_mlx.pytest_openblas`` from the pytest options in
pyproject.toml, which imports it while pytest parses its arguments and before
it redirects the output streams, so the re-executed process writes to the
terminal as usual. See ``nbp_mlx/blas.py``; ``NBP_MLX_NO_OPENBLAS=1`` turns it off.
"""

from nbp_mlx.blas import reexec_with_openblas

reexec_with_openblas()
