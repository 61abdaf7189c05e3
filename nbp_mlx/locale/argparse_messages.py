"""The argparse messages that users of the CLI see, marked so that Babel extracts them.

argparse translates its own texts through the global ``gettext`` domain;
``nbp_mlx.i18n.set_language`` points that domain at this package's catalog, so
the entries extracted from this file translate ``--help`` and usage errors.
This module is never imported.
"""


def _(message: str) -> str:
    return message


ARGPARSE_MESSAGES = [
    _("usage: "),
    _("positional arguments"),
    _("options"),
    _("show this help message and exit"),
    _("show program's version number and exit"),
    _("%(prog)s: error: %(message)s\n"),
    _("the following arguments are required: %s"),
    _("unrecognized arguments: %s"),
    _("invalid choice: %(value)r (choose from %(choices)s)"),
    _("invalid %(type)s value: %(value)r"),
    _("argument %(argument_name)s: %(message)s"),
    _("expected one argument"),
    _("ambiguous option: %(option)s could match %(matches)s"),
]
