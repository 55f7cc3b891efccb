"""The note a newer session leaves for the one it replaces."""

from __future__ import annotations

import os
from pathlib import Path

from tunhelper.server import replaced


def test_note_is_read_once(tmp_path: Path) -> None:
    replaced.leave_note(str(tmp_path), "abc123", "replaced by a newer session of this key")
    assert (tmp_path / "replaced").stat().st_mode & 0o777 == 0o700
    assert replaced.take_note(str(tmp_path), "abc123") == "replaced by a newer session of this key"
    assert replaced.take_note(str(tmp_path), "abc123") is None


def test_no_note_for_another_token(tmp_path: Path) -> None:
    replaced.leave_note(str(tmp_path), "abc123", "x")
    assert replaced.take_note(str(tmp_path), "def456") is None


def test_a_token_never_names_a_path_outside(tmp_path: Path) -> None:
    replaced.leave_note(str(tmp_path), "../escape", "x")
    assert not (tmp_path / "escape").exists()
    assert replaced.take_note(str(tmp_path), "../escape") is None


def test_a_link_in_place_of_a_note_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "replaced").mkdir(mode=0o700)
    secret = tmp_path / "secret"
    secret.write_text("root only")
    os.symlink(secret, tmp_path / "replaced" / "abc123")
    assert replaced.take_note(str(tmp_path), "abc123") is None
    replaced.leave_note(str(tmp_path), "abc123", "x")
    assert secret.read_text() == "root only"


def test_old_unread_notes_are_pruned(tmp_path: Path) -> None:
    replaced.leave_note(str(tmp_path), "old", "x")
    os.utime(tmp_path / "replaced" / "old", (1, 1))
    replaced.leave_note(str(tmp_path), "new", "y")
    assert sorted(os.listdir(tmp_path / "replaced")) == ["new"]
