"""Every command's options: the parsers, and the types that check each value.

- :mod:`.types`: the option types, each checking one value;
- :mod:`.schema`: :class:`Option`, the one way an option is declared, and
  :func:`build`, the record filled from parsed options;
- :mod:`.serve`: the forced command's table, :data:`SERVE_OPTIONS` (argv and the
  config file alike);
- :mod:`.connect`: connect's table, disconnect's and status's parsers;
- :mod:`.admin`: the admin commands' parsers.

Every module here imports only argparse and the standard library's light modules.
"""

# ruff: noqa: F401 - the package's names, one public interface for its callers

from __future__ import annotations

from tunhelper.options.admin import (
    DOCTOR_DESCRIPTION,
    client_add_parser,
    client_list_parser,
    client_revoke_parser,
    doctor_parser,
    leases_parser,
    release_parser,
    renew_parser,
    repair_parser,
)
from tunhelper.options.connect import (
    CONNECT_EPILOG,
    CONNECT_OPTIONS,
    connect_parser,
    disconnect_parser,
    status_parser,
)
from tunhelper.options.schema import Option, Parser, build
from tunhelper.options.serve import (
    DESCRIPTION,
    SERVE_OPTION,
    SERVE_OPTIONS,
    given_options,
    serve_parser,
)
from tunhelper.options.types import DEFAULT_ROUTE
