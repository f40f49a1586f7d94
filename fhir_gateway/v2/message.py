"""An HL7 v2 (ER7) message as data: message → segment → field → repetition → component → subcomponent.

Why our own tokenizer next to hl7apy: hl7apy needs ≈ 20 ms per REF^I12 (it builds and validates a
typed tree) and silently drops Z-segments when it groups. Splitting ER7 on its five delimiters is
≈ 0.1 ms, keeps every segment (Z-segments included) and decodes escape sequences once, so code
that reads a message reads like the spec: `msg.segment("PID")[5][0][0][0]` is PID-5.1.1.
hl7apy stays available as an opt-in structure check (`inbound.check_structure`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SEGMENT_NAME = re.compile(r"^[A-Z][A-Z0-9]{2}$")
_SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # C0 controls other than tab, LF, CR

Component = list[str]  # subcomponents
Repetition = list[Component]  # components
Field = list[Repetition]  # repetitions


class V2ParseError(ValueError):
    """The bytes are not an ER7 message we can read (no MSH, bad delimiters, not text)."""

    def __init__(self, message: str, segment: str = "MSH", sequence: int = 1, field_no: int | None = None):
        super().__init__(message)
        self.segment = segment
        self.sequence = sequence
        self.field = field_no


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

    @property
    def encoding_characters(self) -> str:
        return f"{self.component}{self.repetition}{self.escape}{self.subcomponent}"


STANDARD = Delimiters()


@dataclass(slots=True)
class Segment:
    """One segment; `fields[n]` is field n in HL7 numbering (MSH-1 is the field separator)."""

    name: str
    fields: list[Field]
    raw: str  # the segment as received (Z-segments stay readable even if nothing maps them)
    sequence: int = 1  # 1-based occurrence of this segment name in the message (ERR-2 ERL.2)

    def field(self, n: int) -> Field:
        return self.fields[n] if 0 < n < len(self.fields) else []

    def __getitem__(self, n: int) -> Field:
        return self.field(n)

    def value(self, n: int, component: int = 1, subcomponent: int = 1, repetition: int = 1) -> str:
        """The text of SEG-n.component.subcomponent in the given repetition ('' when absent)."""
        reps = self.field(n)
        if len(reps) < repetition:
            return ""
        comps = reps[repetition - 1]
        if len(comps) < component:
            return ""
        subs = comps[component - 1]
        return subs[subcomponent - 1] if len(subs) >= subcomponent else ""


@dataclass(slots=True)
class Message:
    segments: list[Segment]
    delimiters: Delimiters = field(default_factory=Delimiters)

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    def all(self, name: str) -> list[Segment]:
        return [s for s in self.segments if s.name == name]

    def segment(self, name: str) -> Segment | None:
        for s in self.segments:
            if s.name == name:
                return s
        return None

    # -- header shortcuts (MSH) ------------------------------------------------------------------
    @property
    def message_type(self) -> str:
        """MSH-9.1^MSH-9.2, e.g. 'REF^I12'."""
        return f"{self.msh.value(9, 1)}^{self.msh.value(9, 2)}"

    @property
    def control_id(self) -> str:
        return self.msh.value(10)

    @property
    def version(self) -> str:
        return self.msh.value(12)

    @property
    def sender(self) -> str:
        """MSH-3.1^MSH-4.1: the key under which control ids must be unique."""
        return f"{self.msh.value(3)}^{self.msh.value(4)}"

    def to_er7(self, separator: str = "\r") -> str:
        return separator.join(s.raw for s in self.segments)


# -- escape sequences -------------------------------------------------------------------------------
_HIGHLIGHT = frozenset({"H", "N"})


def unescape(text: str, d: Delimiters = STANDARD) -> str:
    r"""Decode \F\ \S\ \T\ \R\ \E\, \Xhh..\ (hex bytes, UTF-8 else Latin-1) and \.br\; drop \H\ \N\."""
    esc = d.escape
    if esc not in text:
        return text
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        end = text.find(esc, i + 1)
        if end < 0:  # a lone escape character: keep it as text
            out.append(text[i:])
            break
        code = text[i + 1 : end]
        simple = {
            "F": d.field,
            "S": d.component,
            "T": d.subcomponent,
            "R": d.repetition,
            "E": d.escape,
            ".br": "\n",
        }
        if code in simple:
            out.append(simple[code])
        elif code in _HIGHLIGHT:
            pass
        elif code[:1] == "X" and len(code) > 1 and len(code) % 2 == 1:
            try:
                raw = bytes.fromhex(code[1:])
                try:
                    decoded = raw.decode("utf-8")
                except UnicodeDecodeError:
                    decoded = raw.decode("latin-1")
                # a control character (NUL: PostgreSQL refuses it) stays an escape, as text
                out.append(text[i : end + 1] if _CONTROL.search(decoded) else decoded)
            except ValueError:
                out.append(text[i : end + 1])
        else:
            out.append(text[i : end + 1])  # unknown escape: keep verbatim rather than lose text
        i = end + 1
    return "".join(out)


def escape(text: str, d: Delimiters = STANDARD, *, exact: bool = False) -> str:
    """Encode text for an ER7 value: delimiters become escape sequences, line breaks \\.br\\.

    `exact`: line breaks as hex (\\X0D\\, \\X0A\\, CRLF kept as two) so the value reads back
    unchanged: for identifiers echoed to their sender (MSH-10 in MSA-2), which \\.br\\ turned
    from CR into LF, so the sender could not match the ACK to its message."""
    if not text:
        return ""
    out = []
    table = {
        d.escape: f"{d.escape}E{d.escape}",
        d.field: f"{d.escape}F{d.escape}",
        d.component: f"{d.escape}S{d.escape}",
        d.subcomponent: f"{d.escape}T{d.escape}",
        d.repetition: f"{d.escape}R{d.escape}",
    }
    for ch in text if exact else text.replace("\r\n", "\n"):
        if ch in table:
            out.append(table[ch])
        elif ch in "\r\n" and not exact:
            out.append(f"{d.escape}.br{d.escape}")
        elif ch < " " and ch != "\t":  # other controls as hex: an ACK echoing junk stays readable
            out.append(f"{d.escape}X{ord(ch):02X}{d.escape}")
        else:
            out.append(ch)
    return "".join(out)


# -- parsing ----------------------------------------------------------------------------------------
def decode_bytes(data: bytes | str) -> str:
    """ER7 bytes → text: UTF-8 when valid, else Latin-1 (older Dutch HIS send ISO 8859-1)."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_er7(data: bytes | str) -> Message:
    """Split ER7 into segments/fields/repetitions/components/subcomponents (CR, LF or CRLF)."""
    text = decode_bytes(data).lstrip("\ufeff").strip("\x0b\x1c\r\n \t")
    if not text.startswith("MSH"):
        raise V2ParseError("The message does not start with an MSH segment", "MSH", 1)
    if len(text) < 8:
        raise V2ParseError("The MSH segment is too short to carry its delimiters", "MSH", 1, 2)
    fs = text[3]
    enc_end = text.find(fs, 4)
    encoding = text[4:enc_end] if enc_end > 0 else text[4:]
    delimiters = fs + encoding[:4]
    if len(encoding) < 4 or any(c.isalnum() or c.isspace() for c in delimiters) or len(set(delimiters)) != 5:
        raise V2ParseError("MSH-1/MSH-2 do not hold five distinct delimiters", "MSH", 1, 2)
    d = Delimiters(fs, encoding[0], encoding[1], encoding[2], encoding[3])
    segments: list[Segment] = []
    counts: dict[str, int] = {}
    for raw in _SEGMENT_SPLIT.split(text):
        raw = raw.strip("\x00")
        if not raw.strip():
            continue
        name = raw[:3]
        if not SEGMENT_NAME.match(name) or (len(raw) > 3 and raw[3] != fs):
            raise V2ParseError(
                f"Segment {len(segments) + 1} has no valid segment name", name or "?", len(segments) + 1
            )
        if name == "MSH" and len(raw) < 8:
            raise V2ParseError("An MSH segment without its delimiters", name, counts.get(name, 0) + 1, 2)
        counts[name] = counts.get(name, 0) + 1
        control = _CONTROL.search(raw)
        if control is not None:  # NUL and friends in text: refused (PostgreSQL cannot store NUL)
            field_no = raw.count(fs, 0, control.start()) + (1 if name == "MSH" else 0)
            raise V2ParseError(
                f"Segment {name} holds a control character (U+{ord(control.group()):04X}) in field "
                f"{field_no}; ER7 text may not",
                name,
                counts[name],
                field_no,
            )
        segments.append(Segment(name, _split_fields(raw, name, d), raw, counts[name]))
    if segments[0].name != "MSH":
        raise V2ParseError("The first segment is not MSH", "MSH", 1)
    return Message(segments, d)


def _split_fields(raw: str, name: str, d: Delimiters) -> list[Field]:
    parts = raw.split(d.field)
    if name == "MSH":
        # MSH-1 is the field separator itself and MSH-2 the encoding characters: not split further
        fields: list[Field] = [[], [[[d.field]]], [[[parts[1]]]]]
        rest = parts[2:]
    else:
        fields = [[]]
        rest = parts[1:]
    for value in rest:
        fields.append(_split_field(value, d))
    return fields


def _split_field(value: str, d: Delimiters) -> Field:
    if not value:
        return []
    if value == '""':  # explicit null: keep as an empty repetition so presence is visible
        return [[[""]]]
    reps: Field = []
    for rep in value.split(d.repetition):
        comps: Repetition = []
        for comp in rep.split(d.component):
            comps.append([unescape(sub, d) for sub in comp.split(d.subcomponent)])
        reps.append(comps)
    return reps


def encode_field(reps: Field, d: Delimiters = STANDARD) -> str:
    """A parsed field back to ER7 with the given delimiters (values re-escaped)."""
    return d.repetition.join(
        d.component.join(d.subcomponent.join(escape(s, d, exact=True) for s in comp) for comp in rep).rstrip(
            d.component
        )
        for rep in reps
    )
