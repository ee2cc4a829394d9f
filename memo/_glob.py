"""Redis-style glob patterns (``*``, ``?``, ``[abc]``, ``[a-z]``, ``[^a]``, ``\\x``) as regexes.

The memory backend and the flight table must match exactly the keys Redis's ``SCAN
MATCH`` would, so the translation follows Redis's rules rather than ``fnmatch``'s.
"""

from __future__ import annotations

import functools
import re

__all__ = ["compile_glob"]


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """A regex matching, with ``fullmatch``, exactly the strings ``pattern`` matches."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = i + 1
            if end < n and pattern[end] in "^!":
                end += 1
            if end < n and pattern[end] == "]":
                end += 1
            while end < n and pattern[end] != "]":
                end += 2 if pattern[end] == "\\" else 1
            if end >= n:  # no closing bracket: a literal "["
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                negate = body[:1] in ("^", "!")
                if negate:
                    body = body[1:]
                parts: list[str] = []
                j = 0
                while j < len(body):
                    ch = body[j]
                    if ch == "\\" and j + 1 < len(body):
                        j += 1
                        parts.append(re.escape(body[j]))
                    elif j + 2 < len(body) and body[j + 1] == "-":
                        lo, hi = sorted((ch, body[j + 2]))
                        parts.append(f"{re.escape(lo)}-{re.escape(hi)}")
                        j += 2
                    else:
                        parts.append(re.escape(ch))
                    j += 1
                out.append(f"[{'^' if negate else ''}{''.join(parts)}]" if parts else "(?!)")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)
