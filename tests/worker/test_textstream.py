"""Stop strings as OpenAI applies them: never released, even split across tokens; the text
before them is (pure: no torch needed)."""

from __future__ import annotations

from proxy.worker.textstream import PrefixDecoder, TextAssembler

PIECES = {1: "Hel", 2: "lo", 3: " wo", 4: "rld", 5: "!", 6: " EN", 7: "D", 8: " more"}


def feed_all(assembler: TextAssembler, tokens: list[int]) -> tuple[list[str], bool]:
    released: list[str] = []
    for token in tokens:
        piece, stopped = assembler.feed(token)
        released.append(piece)
        if stopped:
            return released, True
    released.append(assembler.flush())
    return released, False


def test_without_stop_strings_every_piece_leaves_at_once() -> None:
    assembler = TextAssembler(PIECES.get)
    released, stopped = feed_all(assembler, [1, 2, 3, 4])
    assert released == ["Hel", "lo", " wo", "rld", ""] and not stopped


def test_a_stop_string_split_across_tokens_is_never_released() -> None:
    assembler = TextAssembler(PIECES.get, ("END",))
    released, stopped = feed_all(assembler, [1, 2, 5, 6, 7, 8])
    assert stopped
    assert "".join(released) == "Hello! " and assembler.text == "Hello! "
    assert all("E" not in piece for piece in released)


def test_held_back_text_that_is_not_a_stop_string_is_released() -> None:
    assembler = TextAssembler(PIECES.get, ("ENDX",))
    released, stopped = feed_all(assembler, [1, 6, 7, 5])
    assert not stopped
    assert released == ["", "Hel", " ", "E", "ND!"]  # 3 characters wait until they cannot stop


def test_the_earliest_of_several_stop_strings_wins() -> None:
    assembler = TextAssembler(PIECES.get, ("rld", "wo"))
    released, stopped = feed_all(assembler, [1, 2, 3, 4])
    assert stopped and "".join(released) == "Hello "


def test_prefix_decoder_waits_for_whole_characters() -> None:
    data = "é!".encode()
    decoder = PrefixDecoder(lambda ids: bytes(ids).decode("utf-8", "replace"))
    assert [decoder.step(b) for b in data] == [None, "é", "!"]
