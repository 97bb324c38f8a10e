"""TextAssembler: whole UTF-8 characters only, stop sequences cut even across tokens."""

from worker.text import TextAssembler


def feed_all(assembler: TextAssembler, pieces: list[bytes]) -> str:
    return "".join(assembler.feed(p) for p in pieces) + assembler.flush()


def test_split_utf8_character_is_held_until_complete() -> None:
    euro = "€".encode()
    a = TextAssembler([])
    assert a.feed(b"price " + euro[:1]) == "price "
    assert a.feed(euro[1:]) == "€"


def test_stop_sequence_across_tokens_is_cut_and_never_shown() -> None:
    a = TextAssembler(["END"])
    shown = [a.feed(p) for p in (b"hello E", b"N", b"D more")]
    assert "".join(shown) == "hello "
    assert a.stopped


def test_false_start_of_a_stop_sequence_is_released() -> None:
    a = TextAssembler(["END"])
    assert feed_all(a, [b"EN", b"TRY"]) == "ENTRY"
    assert not a.stopped


def test_no_stop_passes_text_through() -> None:
    assert feed_all(TextAssembler([]), [b"a", b"b", b"c"]) == "abc"
