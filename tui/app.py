"""Entry point of the terminal app.

NOTE: the screens (generate, data, train, export) are not built yet; this
entry point only tells the user so and points to the CLI.
"""

from __future__ import annotations

import sys

from nbp_mlx.i18n import _


def main(argv: list[str] | None = None) -> int:
    sys.stderr.write(
        _("The terminal app is not available yet; use the commands of `python -m nbp_mlx --help`.") + "\n"
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
