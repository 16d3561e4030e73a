"""One line of the doctor's report."""

from __future__ import annotations

from dataclasses import dataclass

#: the column the details start in, after "FAIL name     "
_INDENT = 14


@dataclass(frozen=True)
class Check:
    """What was checked, whether it passed, and the one thing to do when it did not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        word = "OK  " if self.ok else "FAIL"
        detail = self.detail.splitlines() or [""]
        out = [f"{word} {self.name:<9} {detail[0]}"]
        out += [f"{'':{_INDENT}}{line.strip()}" for line in detail[1:]]
        if not self.ok and self.fix:
            out.append(f"{'':{_INDENT}}fix: {self.fix}")
        return out
