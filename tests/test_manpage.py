"""The man pages say what ``--help`` says: same commands, same options, both ways.

Admins read ``man tunhelper`` before they trust a forced command, so a page that has
drifted from the code is a bug. The parsers in the command table (``tunhelper.commands``)
are the truth; every command there must have a section whose ``.TP`` tags name exactly
its options.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab import REPO
from tunhelper import __version__, commands, options

MAN_DIR = REPO / "man"
MAIN_PAGE = MAN_DIR / "tunhelper.8"
# The forced command's options are the page's OPTIONS; each other command has a
# subsection titled "tunhelper COMMAND ..." in some page.
FORCED_COMMAND_SECTION = "OPTIONS"


def plain(text: str) -> str:
    """Roff text without font escapes, quotes or macro name, with real hyphens."""
    text = re.sub(r"\\f[BIRP]", "", text).replace("\\-", "-").replace("\\&", "")
    text = re.sub(r"^\.[A-Z]+\s*", "", text)
    return text.replace('"', "").strip()


@dataclass
class Section:
    page: Path
    title: str  # the .SH title, or the .SS title inside it
    tags: list[str] = field(default_factory=list)  # the .TP tags, as plain text


def sections(page: Path) -> list[Section]:
    """Every .SH and .SS of a page, each with its .TP tags."""
    out: list[Section] = []
    lines = page.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith((".SH ", ".SS ")):
            out.append(Section(page, plain(line)))
        elif line.startswith(".TP") and out and i + 1 < len(lines):
            out[-1].tags.append(plain(lines[i + 1]))
    return out


def pages() -> list[Path]:
    return sorted(p for p in MAN_DIR.iterdir() if re.fullmatch(r"[\w.-]+\.[1-8]", p.name))


def section_of(command: str) -> Section:
    """The section documenting a command's options (fails the test if there is none)."""
    if command == "":
        found = [s for s in sections(MAIN_PAGE) if s.title == FORCED_COMMAND_SECTION]
    else:
        title = re.compile(rf"tunhelper {re.escape(command)}(\s|$)")
        found = [s for page in pages() for s in sections(page) if title.match(s.title)]
    where = FORCED_COMMAND_SECTION if command == "" else f'.SS "tunhelper {command}"'
    assert len(found) == 1, f"'tunhelper {command}' needs one {where} section in man/"
    return found[0]


def documented_words(tag: str) -> set[str]:
    """Options (-x, --xyz) and operands (ADDRESS) a tag names; metavars after an option
    are not operands."""
    words = tag.replace(",", " ").split()
    out, after_option = set(), False
    for word in words:
        if word.startswith("-"):
            out.add(word)
            after_option = True
        elif not after_option and word.isupper():
            out.add(word)
    return out


def parser_words(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    """What --help lists: each option string (with its metavar) and each operand."""
    out: dict[str, str | None] = {}
    for action in parser._actions:
        if action.option_strings:
            metavar = action.metavar if action.nargs != 0 else None
            if action.nargs != 0 and metavar is None:
                metavar = action.dest.upper()
            for option in action.option_strings:
                out[option] = metavar
        else:
            out[action.metavar or action.dest.upper()] = None
    return out


@pytest.mark.parametrize("command", sorted(commands.BY_NAME))
def test_options_in_help_and_man_page_are_the_same(command: str) -> None:
    expected = parser_words(commands.BY_NAME[command].make_parser())
    section = section_of(command)
    documented = set().union(*(documented_words(tag) for tag in section.tags))
    name = f"tunhelper {command}".strip()
    assert not set(expected) - documented, (
        f"{name}: in --help but not in {section.page.name} [{section.title}]: "
        f"{sorted(set(expected) - documented)}"
    )
    assert not documented - set(expected), (
        f"{name}: in {section.page.name} [{section.title}] but not in --help: "
        f"{sorted(documented - set(expected))}"
    )
    for option, metavar in expected.items():
        if metavar is not None:
            (tag,) = [t for t in section.tags if option in documented_words(t)]
            assert metavar in tag.split(), f"{name}: {option} takes {metavar}; man says {tag!r}"


def test_no_page_mentions_an_option_that_does_not_exist() -> None:
    known = {o for c in commands.COMMANDS for o in parser_words(c.make_parser())}
    for page in pages():
        text = page.read_text().replace("\\-", "-")
        mentioned = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", text))
        assert mentioned <= known, f"{page.name} mentions {sorted(mentioned - known)}"


def test_every_parser_is_registered_and_every_command_runs() -> None:
    """A new ``*_parser()`` must join the command table, so the checks above see it;
    and every command's parser and entry point exist."""
    defined = {
        obj
        for name, obj in inspect.getmembers(options, inspect.isfunction)
        if name.endswith("_parser") and obj.__module__ == options.__name__
    }
    registered = {commands.load(c.parser) for c in commands.COMMANDS}
    unregistered = sorted(f.__name__ for f in defined - registered)
    assert not unregistered, f"add to tunhelper.commands (and document): {unregistered}"
    assert registered <= defined
    for c in commands.COMMANDS:
        assert callable(c.run()), c.entry


def test_page_header_carries_the_version() -> None:
    (header,) = [x for x in MAIN_PAGE.read_text().splitlines() if x.startswith(".TH ")]
    assert f'"tunhelper {__version__}"' in header


def render(page: Path) -> subprocess.CompletedProcess:
    man = shutil.which("man")
    assert man is not None, "man (man-db) is missing: tools/install.sh installs it"
    env = {"PATH": os.environ["PATH"], "MANWIDTH": "100", "LANG": "C.UTF-8"}
    return subprocess.run(
        [man, "--warnings=w", "-E", "UTF-8", "-l", str(page)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.name)
def test_page_renders_without_warnings(page: Path) -> None:
    result = render(page)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text = result.stdout
    assert "NAME" in text and "SYNOPSIS" in text
    if page == MAIN_PAGE:
        for c in commands.COMMANDS:
            for word in parser_words(c.make_parser()):
                assert re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text), word
