"""The output guard: BSN, IBAN and card numbers that pass their checksums never leave the gateway.

It uses the corpus pipeline's detectors, so a number is redacted here exactly when the scrubber
would have removed it from training data. Streams are guarded too: the last HOLD characters of
an answer are held back until the next chunk shows whether they are the start of a number, and
released when the stream ends. No number is longer than HOLD, so none can slip out in pieces.
"""

from __future__ import annotations

from gptnl import pii

KINDS = ("BSN", "IBAN", "CREDIT_CARD")
HOLD = 48


def redact(text: str) -> tuple[str, int]:
    """`text` with guarded numbers replaced by `<KIND>`, and how many were replaced."""
    out, counts = pii.redact(text, "placeholder", kinds=KINDS)
    return out, sum(counts.values())


class StreamGuard:
    """One per streamed choice: feed each delta, send what it returns, then send `flush()`."""

    def __init__(self) -> None:
        self.pending = ""
        self.redacted = 0

    def feed(self, delta: str) -> str:
        buffer = self.pending + delta
        cut = max(0, len(buffer) - HOLD)
        for f in pii.find(buffer, KINDS):
            if f.start < cut < f.end:
                cut = f.start
        while 0 < cut < len(buffer) and buffer[cut - 1].isalnum() and buffer[cut].isalnum():
            cut -= 1  # never split a word or a number: a later chunk could complete it
        ready, self.pending = buffer[:cut], buffer[cut:]
        text, n = redact(ready)
        self.redacted += n
        return text

    def flush(self) -> str:
        text, n = redact(self.pending)
        self.pending = ""
        self.redacted += n
        return text
