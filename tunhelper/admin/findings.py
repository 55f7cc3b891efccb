"""What doctor reports: one finding a line, ``ok:``, ``warning:`` or ``error:``.

Apart from :mod:`tunhelper.admin.doctor` so that its checks in other modules
(:mod:`~tunhelper.admin.openssh`, :mod:`~tunhelper.admin.doctor_store`) speak the same
way without importing doctor back.
"""

from __future__ import annotations

from dataclasses import dataclass

OK, WARNING, ERROR = "ok", "warning", "error"


@dataclass(frozen=True)
class Finding:
    level: str
    text: str

    def __str__(self) -> str:
        return f"{self.level}: {self.text}"


def ok(text: str) -> Finding:
    return Finding(OK, text)


def warning(text: str) -> Finding:
    return Finding(WARNING, text)


def error(text: str) -> Finding:
    return Finding(ERROR, text)
