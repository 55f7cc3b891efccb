"""One way to declare an option, and the record built from what was parsed.

An :class:`Option` is declared once, in a table (the forced command's
:data:`~tunhelper.options.serve.SERVE_OPTIONS`, connect's
:data:`~tunhelper.options.connect.CONNECT_OPTIONS`). argparse is built from the table
(:func:`add`), so is the config file's reading of a ``[pool NAME]``, and the record a
command runs with (:class:`tunhelper.settings.Settings`, ``connect.Options``) is filled
from the parsed values by :func:`build`: a field named as an option's ``dest`` takes
that option's checked value, so nothing is copied field by field.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from tunhelper import log
from tunhelper.errors import UsageError

T = TypeVar("T")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line, never usage plus exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(log.one_line(f"{message} (see '{self.prog} --help')"))


@dataclass(frozen=True)
class Option:
    """One option, as argparse and (for the forced command) the config file read it."""

    name: str  # without the leading --; also the config file's key
    help: str
    type: Callable[[str], Any] | None = None
    repeatable: bool = False  # given several times: a list
    flag: bool = False  # takes no value (in the config file: yes or no)
    default: Any = None
    metavar: str | None = None
    in_pools: bool = True  # may a [pool NAME] section set it
    fills: str | None = None  # the record's field it fills, if not named after the option
    short: str | None = None  # a one-letter alias, as "-e"
    negated: bool = False  # a flag that turns its field off (--no-aes-gcm: aes = False)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        """The parsed value's name, and the field of the record it fills."""
        return self.fills or self.name.replace("-", "_")


def add(parser: argparse.ArgumentParser, option: Option, default: Any = None) -> None:
    """Add ``option`` to ``parser``; ``default`` replaces the option's own if given."""
    names = [*([option.short] if option.short else []), f"--{option.name}"]
    value = option.default if default is None else default
    if option.flag:
        action = "store_false" if option.negated else "store_true"
        parser.add_argument(
            *names, dest=option.dest, action=action, default=value, help=option.help
        )
        return
    parser.add_argument(
        *names,
        dest=option.dest,
        type=option.type,
        action="append" if option.repeatable else "store",
        default=value,
        metavar=option.metavar,
        help=option.help,
        **option.extra,
    )


def given(options: tuple[Option, ...], argv: list[str]) -> set[str]:
    """The options (by dest) that ``argv`` set itself, unchecked: argv wins over the file."""
    quiet = argparse.ArgumentParser(add_help=False)
    for option in options:
        if option.flag:
            quiet.add_argument(
                f"--{option.name}",
                dest=option.dest,
                action="store_const",
                const=True,
                default=argparse.SUPPRESS,
            )
        else:
            quiet.add_argument(
                f"--{option.name}",
                dest=option.dest,
                action="append" if option.repeatable else "store",
                default=argparse.SUPPRESS,
            )
    known, _ = quiet.parse_known_args(argv)
    return set(vars(known))


def build(record: Callable[..., T], args: argparse.Namespace, **derived: Any) -> T:
    """The dataclass ``record`` from parsed ``args``: each field takes the value of the
    option of its name, except those the caller ``derived`` from several options.

    A field with neither is a bug in the schema, reported as one (never a silent
    default)."""
    values = dict(derived)
    for f in dataclasses.fields(record):  # type: ignore[arg-type]
        if f.name in values:
            continue
        if not hasattr(args, f.name):
            raise TypeError(f"{record.__name__}.{f.name}: no option fills it")  # type: ignore[attr-defined]
        values[f.name] = getattr(args, f.name)
    return record(**values)
