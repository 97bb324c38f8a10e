"""Turn a stream of token bytes into text pieces: whole UTF-8 characters, stop sequences cut."""

from __future__ import annotations


class TextAssembler:
    """Feed each token's bytes; get back the text safe to show now.

    Holds back an incomplete UTF-8 character, and any tail that could be the start of a stop
    sequence; once a stop sequence appears, the text before it is released and `stopped` is set.
    """

    def __init__(self, stop: list[str]):
        self._stop = [s for s in stop if s]
        self._pending_bytes = b""
        self._held = ""  # decoded text not yet released (could begin a stop sequence)
        self.stopped = False

    def feed(self, piece: bytes) -> str:
        if self.stopped:
            return ""
        data = self._pending_bytes + piece
        text, self._pending_bytes = _split_utf8(data)
        self._held += text
        return self._release()

    def flush(self) -> str:
        """At the end of generation: whatever is held (bad bytes replaced)."""
        if self.stopped:
            return ""
        self._held += self._pending_bytes.decode("utf-8", errors="replace")
        self._pending_bytes = b""
        out, self._held = self._held, ""
        return out

    def _release(self) -> str:
        for s in self._stop:
            at = self._held.find(s)
            if at != -1:
                self.stopped = True
                out, self._held = self._held[:at], ""
                return out
        keep = max((_overlap(self._held, s) for s in self._stop), default=0)
        cut = len(self._held) - keep
        out, self._held = self._held[:cut], self._held[cut:]
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of text that is a proper prefix of stop."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def _split_utf8(data: bytes) -> tuple[str, bytes]:
    """Decode the complete characters of data; return them and the incomplete tail."""
    try:
        return data.decode("utf-8"), b""
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data":
            return data[: exc.start].decode("utf-8", errors="replace"), data[exc.start :]
        return data.decode("utf-8", errors="replace"), b""
