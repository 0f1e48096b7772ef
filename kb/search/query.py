"""What a typed question asks for besides its words: exact phrases in double quotes (ASCII
``"…"`` or Chinese ``“…”`` / ``「…」``), which every hit must hold, and ``-词`` exclusions, which
no hit may hold. Both are matched after normalisation: width and case folded, whitespace and
punctuation ignored (``"由被动式服务，向主动服务转变"`` finds ``由被动式服务向主动服务转变``)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kb.text.process import fold

_PHRASE = re.compile(r'"([^"]*)"|“([^”]*)”|「([^」]*)」|＂([^＂]*)＂')
# -词 at the start or after a space; a hyphen inside a code (PPR-9087) is not one
_EXCLUDE = re.compile(r"(?:^|(?<=\s))[-－]([^\s\-－][^\s]*)")
_NOT_MATCHED = re.compile(r"[\W_]+")
MAX_PARTS = 8  # phrases or exclusions looked at in one question


def match_key(text: str) -> str:
    """``text`` as phrases are matched: folded, without whitespace or punctuation."""
    return _NOT_MATCHED.sub("", fold(text))


@dataclass(frozen=True)
class ParsedQuery:
    text: str  # what is searched: the question with its quotes and exclusions taken out
    phrases: tuple[str, ...] = ()  # as typed
    excluded: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.phrases or self.excluded)

    def admits(self, passage_text: str) -> bool:
        """Whether a passage holds every phrase and no excluded word."""
        key = match_key(passage_text)
        return (all(match_key(p) in key for p in self.phrases)
                and not any(match_key(w) in key for w in self.excluded))


def parse_query(query: str) -> ParsedQuery:
    """Phrases and exclusions out of ``query``; a phrase's words stay in the searched text,
    and a ``-`` inside a phrase is text."""
    phrases: list[str] = []
    excluded: list[str] = []

    def outside(part: str) -> str:
        def drop(m: re.Match) -> str:
            if match_key(m.group(1)) and len(excluded) < MAX_PARTS:
                excluded.append(m.group(1))
                return " "
            return m.group(0)
        return _EXCLUDE.sub(drop, part)

    pieces, at = [], 0
    for m in _PHRASE.finditer(query):
        pieces.append(outside(query[at:m.start()]))
        inner = next(g for g in m.groups() if g is not None).strip()
        if match_key(inner) and len(phrases) < MAX_PARTS:
            phrases.append(inner)
        pieces.append(f" {inner} ")
        at = m.end()
    pieces.append(outside(query[at:]))
    if not phrases and not excluded:
        return ParsedQuery(query)  # a plain question is searched exactly as typed
    text = re.sub(r"\s+", " ", "".join(pieces)).strip()
    return ParsedQuery(text, tuple(dict.fromkeys(phrases)), tuple(dict.fromkeys(excluded)))
