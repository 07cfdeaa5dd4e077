"""Script splitting: sentences, abbreviations, CJK, paragraphs, long input; script files."""

from __future__ import annotations

import time

import pytest

import tts
from pipeline.core.errors import InputError, TextError
from tts.text import (
    CLAUSE_PAUSE_S,
    MAX_PIECE_CHARS,
    plan_pieces,
    split_long,
    split_paragraphs,
    split_sentences,
)


@pytest.mark.parametrize(
    ("paragraph", "expected"),
    [
        ("Hello world. How are you? Fine!", ["Hello world.", "How are you?", "Fine!"]),
        (
            "Dr. Smith met Mrs. Jones at St. Paul's. Then they left.",
            ["Dr. Smith met Mrs. Jones at St. Paul's.", "Then they left."],
        ),
        ("J. K. Rowling wrote it. It sold.", ["J. K. Rowling wrote it.", "It sold."]),
        ("Use e.g. Paris or i.e. Rome. Done.", ["Use e.g. Paris or i.e. Rome.", "Done."]),
        ("See No. 5 on the list. Say no. Then go.", ["See No. 5 on the list.", "Say no.", "Then go."]),
        ("Pi is 3.14 exactly. Next.", ["Pi is 3.14 exactly.", "Next."]),
        ("Wait... what? Wait... Now!", ["Wait... what?", "Wait...", "Now!"]),
        ("He paused… and went on. Then… Silence.", ["He paused… and went on.", "Then…", "Silence."]),
        ('She said "Stop." Then he stopped.', ['She said "Stop."', "Then he stopped."]),
        ("So did I. Then we ate.", ["So did I.", "Then we ate."]),
        ("你好。今天天气很好！真的吗？是的", ["你好。", "今天天气很好！", "真的吗？", "是的"]),
        ("「行こう。」と言った。", ["「行こう。」", "と言った。"]),
        ("¿Qué tal? ¡Très bien! Ça va.", ["¿Qué tal?", "¡Très bien!", "Ça va."]),
        ("No end mark at all", ["No end mark at all"]),
    ],
)
def test_split_sentences(paragraph, expected):
    assert split_sentences(paragraph) == expected


def test_paragraphs_split_at_blank_lines_and_join_wrapped_lines():
    text = "First line\nwraps here.\n\n  \n\nSecond   paragraph.\r\n\r\nThird."
    assert split_paragraphs(text.replace("\r\n", "\n")) == [
        "First line wraps here.",
        "Second paragraph.",
        "Third.",
    ]


def test_plan_pieces_assigns_sentence_paragraph_and_final_pauses():
    pieces = plan_pieces("One. Two.\n\nThree! Four?\n\nFive", 0.25, 0.6)
    assert [(p.text, p.pause_after_s) for p in pieces] == [
        ("One.", 0.25),
        ("Two.", 0.6),
        ("Three!", 0.25),
        ("Four?", 0.6),
        ("Five", 0.0),
    ]


def test_unspeakable_pieces_are_dropped_keeping_the_longer_pause():
    pieces = plan_pieces("Hello. :-)\n\n***\n\nWorld.", 0.25, 0.6)
    assert [(p.text, p.pause_after_s) for p in pieces] == [("Hello.", 0.6), ("World.", 0.0)]


def test_unicode_passes_through_unchanged_in_nfc():
    decomposed = "Cafe\u0301 au lait. Łódź, Zürich. 東京。"
    pieces = plan_pieces(decomposed, 0.25, 0.6)
    assert [p.text for p in pieces] == ["Café au lait.", "Łódź, Zürich.", "東京。"]


@pytest.mark.parametrize("text", ["", "   \n\t ", "...", "!?! — … ---", "。！？", "\u200b"])
def test_nothing_to_say_is_a_text_error(text):
    with pytest.raises(TextError):
        plan_pieces(text, 0.25, 0.6)


def test_long_sentence_is_cut_at_clause_marks_then_spaces():
    clause = "this clause has a few words in it, "
    sentence = (clause * 30).strip()
    chunks = split_long(sentence, MAX_PIECE_CHARS)
    assert all(len(c) <= MAX_PIECE_CHARS for c in chunks)
    assert all(c.endswith(",") for c in chunks[:-1])
    assert " ".join(chunks) == sentence
    words = "word " * 200
    assert all(len(c) <= 40 and not c.startswith(" ") for c in split_long(words.strip(), 40))
    assert split_long("字" * 100, 30) == ["字" * 30] * 3 + ["字" * 10]


def test_long_sentence_pieces_get_the_clause_pause():
    pieces = plan_pieces(("many words and more, " * 40).strip() + ". End.", 0.25, 0.6)
    assert len(pieces) > 3
    assert {p.pause_after_s for p in pieces[:-2]} == {CLAUSE_PAUSE_S}
    assert pieces[-2].pause_after_s == 0.25


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox, Dr. Smith, jumps. " * 1300,  # ~50,000 characters of ordinary prose
        "." * 50_000 + "a",  # a run that makes naive backtracking regexes quadratic
        ". " * 25_000 + "x",
        "word " * 10_000,  # one sentence without end marks
        "字" * 50_000,  # CJK without punctuation
        "a.\n" * 16_000 + "\n\n" * 1000,
    ],
)
def test_fifty_thousand_characters_split_quickly(text):
    start = time.perf_counter()
    pieces = plan_pieces(text, 0.25, 0.6)
    assert time.perf_counter() - start < 2.0
    assert all(len(p.text) <= MAX_PIECE_CHARS for p in pieces)


def test_prose_splits_into_every_sentence():
    pieces = plan_pieces("The quick brown fox, Dr. Smith, jumps. " * 1300, 0.25, 0.6)
    assert len(pieces) == 1300
    assert pieces[0].text == "The quick brown fox, Dr. Smith, jumps."


def test_read_script_utf8_with_and_without_bom(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("Grüße aus Köln.\n", encoding="utf-8")
    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeffHello.".encode())
    assert tts.read_script(plain) == "Grüße aus Köln.\n"
    assert tts.read_script(str(bom)) == "Hello."


def test_read_script_rejects_non_utf8_naming_the_file(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Grüße".encode("latin-1"))
    with pytest.raises(TextError, match=r"latin1\.txt.*UTF-8"):
        tts.read_script(latin)


def test_read_script_missing_folder_or_empty(tmp_path):
    with pytest.raises(InputError, match="not found"):
        tts.read_script(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="not a file"):
        tts.read_script(tmp_path)
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n", encoding="utf-8")
    with pytest.raises(TextError, match="empty"):
        tts.read_script(empty)
