"""Script text -> the pieces a speech engine says one by one, with the pause that follows each.

Pure functions, linear in the length of the text. A script is split into paragraphs at blank lines and
each paragraph into sentences at ``. ! ? …`` (followed by white space) and at the CJK full stops
``。！？`` (no space needed). A full stop after a known abbreviation ("Dr.", "e.g."), after an initial
("J. K.") or before a lower-case word is not a sentence end. Sentences longer than
:data:`MAX_PIECE_CHARS` are cut at clause punctuation, else at a space, so that no engine call gets a
runaway input.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from pipeline.core.errors import TextError

MAX_PIECE_CHARS = 250  # characters per engine call (XTTS-v2 warns above ~250 for English)
CLAUSE_PAUSE_S = 0.1  # seconds of silence where an over-long sentence was cut at a comma or space

# A full stop after these never ends a sentence (titles, Latin abbreviations).
NEVER_FINAL_ABBREVIATIONS = frozenset(
    "mr mrs ms mx dr prof rev hon st mt gen col capt lt sgt cpt fr vs cf viz e.g i.e approx ca".split()
)
# A full stop after these does not end a sentence when a number follows ("No. 5", "pp. 12").
NUMBER_ABBREVIATIONS = frozenset("no nos nr art p pp vol ch fig sec".split())

_CLOSERS = "\"'”’»)\\]」』）】"
# Possessive quantifiers and the look-behind keep these linear on runs like "......" (no backtracking).
_WESTERN_END = re.compile(rf"(?<![.!?…])[.!?…]++[{_CLOSERS}]*+(?=\s|$)")
_CJK_END = re.compile(rf"[。！？]++[{_CLOSERS}]*+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v]*+\n\s*+")
_SPACE_RUN = re.compile(r"\s+")
_CLAUSE_CUT = re.compile(r"[,;:—–、，；：]\s*|\s+")
_LAST_WORD = re.compile(r"(\S+)$")


@dataclass(frozen=True)
class Piece:
    """One engine call: ``text`` to say, then ``pause_after_s`` seconds of silence (0 after the last)."""

    text: str
    pause_after_s: float


def plan_pieces(text: str, sentence_pause_s: float, paragraph_pause_s: float) -> list[Piece]:
    """Split ``text`` into :class:`Piece` s; raises TextError when nothing in it can be spoken."""
    check_speakable(text)
    planned: list[tuple[str, float]] = []
    for paragraph in split_paragraphs(normalize_text(text)):
        for sentence in split_sentences(paragraph):
            chunks = split_long(sentence, MAX_PIECE_CHARS)
            planned += [(chunk, CLAUSE_PAUSE_S) for chunk in chunks[:-1]] + [(chunks[-1], sentence_pause_s)]
        planned[-1] = (planned[-1][0], paragraph_pause_s)
    pieces: list[Piece] = []
    for chunk, pause in planned:
        if is_speakable(chunk):
            pieces.append(Piece(chunk, pause))
        elif pieces:  # a dropped piece ("...", "***") keeps the longer of the two pauses
            pieces[-1] = Piece(pieces[-1].text, max(pieces[-1].pause_after_s, pause))
    pieces[-1] = Piece(pieces[-1].text, 0.0)
    return pieces


def is_speakable(text: str) -> bool:
    """True when ``text`` holds at least one letter or digit (of any script)."""
    return any(ch.isalnum() for ch in text)


def check_speakable(text: str, where: str = "the script") -> None:
    """Raise TextError when ``text`` is empty, white space or punctuation only."""
    if not text or not text.strip():
        raise TextError(f"{where} is empty: write the words to speak (UTF-8 text)")
    if not is_speakable(text):
        raise TextError(f"{where} holds only punctuation or symbols: write the words to speak")


def normalize_text(text: str) -> str:
    """NFC-normalised text with ``\\n`` line ends and control characters (except newline/tab) removed."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs separated by blank lines, with runs of white space (and single newlines) collapsed."""
    out = []
    for block in _PARAGRAPH_BREAK.split(text):
        block = _SPACE_RUN.sub(" ", block).strip()
        if block:
            out.append(block)
    return out


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph (white space already collapsed), in order, stripped, none empty."""
    cuts = sorted(
        [m.end() for m in _CJK_END.finditer(paragraph)]
        + [m.end() for m in _WESTERN_END.finditer(paragraph) if _ends_sentence(paragraph, m)]
    )
    sentences, start = [], 0
    for cut in cuts:
        if cut > start:
            sentences.append(paragraph[start:cut].strip())
            start = cut
    sentences.append(paragraph[start:].strip())
    return [s for s in sentences if s]


def _ends_sentence(text: str, match: re.Match[str]) -> bool:
    """Decide whether the western end mark ``match`` ends a sentence (abbreviations, initials, case)."""
    following = text[match.end() : match.end() + 2].lstrip()
    if following and following[0].islower():
        return False
    if match.group(0) != ".":
        return True
    word = _LAST_WORD.search(text, max(0, match.start() - 24), match.start())
    if word is None:
        return True
    stem = word.group(1).lstrip(_CLOSERS + "(\"'“‘«").lower()
    if stem in NEVER_FINAL_ABBREVIATIONS:
        return False
    if len(stem) == 1 and stem != "i" and stem.isalpha() and word.group(1)[-1].isupper():
        return False  # an initial: "J. K. Rowling"
    return not (stem in NUMBER_ABBREVIATIONS and following[:1].isdigit())


def split_long(sentence: str, max_chars: int) -> list[str]:
    """Cut ``sentence`` into chunks of at most ``max_chars``, preferring clause punctuation, then spaces."""
    chunks = []
    while len(sentence) > max_chars:
        cut = _best_cut(sentence, max_chars)
        chunks.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        chunks.append(sentence)
    return [c for c in chunks if c]


def _best_cut(sentence: str, max_chars: int) -> int:
    """Index to cut at: after the last clause mark within ``max_chars``, else the last space, else hard."""
    window = sentence[: max_chars + 1]
    clause = space = 0
    for m in _CLAUSE_CUT.finditer(window):
        if m.end() > max_chars:
            break
        if m.group(0).strip():
            clause = m.end()
        else:
            space = m.end()
    if clause > max_chars // 3:
        return clause
    return space or clause or max_chars
