"""Size caps on an inbound v2 message, checked on the raw text before anything reads it.

The tokenizer (`message.parse_er7`) is cheap, but what comes after it is not: the mapping runs
its rules over every repetition (a REF^I12 with 100 000 PID-3 repetitions took ≈ 9 s and was
accepted). So the segment count and the repetitions per field are counted with C-speed string
operations (`str.count`, `str.split`) on the decoded text first, and a message over either cap
is answered AR with an ERR naming the segment or field — before it is parsed, mapped or
journalled.

What a real REF^I12 needs: MSH, RF1, a few PRD, PID, some DG1/NTE/OBX — tens of segments; PID-3
(BSN, a practice number) and PID-13 (phone, e-mail) a handful of repetitions. The defaults
(`GATEWAY_MAX_V2_SEGMENTS` 200, `GATEWAY_MAX_V2_REPETITIONS` 50) leave ample room.
"""

from __future__ import annotations

import re

from fhir_gateway.v2.ack import DATA_TYPE_ERROR, SEGMENT_SEQUENCE_ERROR, AckError
from fhir_gateway.v2.mapping import Loc
from fhir_gateway.v2.message import decode_bytes

DEFAULT_MAX_SEGMENTS = 200
DEFAULT_MAX_REPETITIONS = 50
TOO_COSTLY = "too-costly"  # ERR-5: the FHIR issue type the HTTP limits answer with
_SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")


def check_limits(data: bytes | str, max_segments: int, max_repetitions: int) -> AckError | None:
    """The first cap the message breaks, as an ERR; None when it keeps to both (or when its MSH
    is too broken to read the delimiters: the parser then reports that). A cap ≤ 0 is off."""
    text = decode_bytes(data).lstrip("\ufeff").strip("\x0b\x1c\r\n \t")
    if not text.startswith("MSH") or len(text) < 8:
        return None
    fs, rep = text[3], text[5]
    lines = _SEGMENT_SPLIT.split(text)  # one split; blank lines are not segments (nor to the parser)
    if max_segments > 0 and len(lines) > max_segments:
        segments = [line for line in lines if line.strip("\x00").strip()]
        if len(segments) > max_segments:
            return AckError(
                SEGMENT_SEQUENCE_ERROR,
                f"The message has {len(segments)} segments; at most {max_segments} are accepted",
                Loc(segments[max_segments][:3], _occurrence(segments, max_segments)),
                application_code=TOO_COSTLY,
            )
    if max_repetitions <= 0 or text.count(rep) < max_repetitions:
        return None  # the whole message holds fewer separators than one field may use
    seen: dict[str, int] = {}
    for line in lines:
        name = line[:3]
        seen[name] = seen.get(name, 0) + 1
        if line.count(rep) < max_repetitions:
            continue
        parts = line.split(fs)
        for n, value in enumerate(parts[1:], start=1):
            if name == "MSH":
                if n == 1:
                    continue  # MSH-2 holds the encoding characters, not repetitions
                n += 1  # MSH-1 is the field separator itself
            count = value.count(rep) + 1
            if count > max_repetitions:
                return AckError(
                    DATA_TYPE_ERROR,
                    f"{name}-{n} has {count} repetitions; at most {max_repetitions} per field are accepted",
                    Loc(name, seen[name], n),
                    application_code=TOO_COSTLY,
                )
    return None


def _occurrence(segments: list[str], index: int) -> int:
    name = segments[index][:3]
    return sum(1 for s in segments[: index + 1] if s[:3] == name)
