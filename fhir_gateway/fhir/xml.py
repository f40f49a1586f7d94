"""FHIR XML in and out, through the fhir.resources R4B models (they need `lxml`).

Why through the models: FHIR XML differs from FHIR JSON in more than syntax (element order is
fixed, primitives carry `value` attributes, repeated elements are not arrays, the narrative is
inline XHTML); the models know each type's structure. An XML body becomes the very dict the JSON
path produces, so everything behind the HTTP glue stays JSON-only.

The guards of the strict JSON path keep their intent here: the size is limited before the body is
read, a DOCTYPE (and with it every entity, external or internal) is refused, the parser never
touches the network, and a Bundle with too many entries is refused before any model is built.
An element that may occur once but is repeated (the JSON path's duplicate key), an unknown
element or attribute: 400 `structure` naming it. Element order is not checked (lenient reader).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from fhir_core.utils import get_fhir_type_name, is_list_type, is_primitive_type
from fhir_core.xml_utils import determine_version_prefix
from lxml import etree

from fhir_gateway.fhir import strict_json
from fhir_gateway.fhir.models import model_class
from fhir_gateway.fhir.outcome import FhirError, error
from fhir_gateway.fhir.strict_json import JsonLimits

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"
_FHIR = "{" + FHIR_NS + "}"


def _parser() -> etree.XMLParser:
    """No DTD loading, no entity expansion, no network, no huge trees (lxml's default depth and
    text-size limits stay on), comments and processing instructions dropped."""
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )


def _structure(message: str, where: str | None = None) -> FhirError:
    return FhirError(400, [error("structure", message, where)])


def loads(raw: bytes, limits: JsonLimits) -> dict[str, Any]:
    """The resource in `raw` (FHIR XML) as the FHIR JSON dict, or a FhirError (400/413)."""
    try:
        root = etree.fromstring(raw, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise _structure(f"The body is not well-formed XML: {str(exc)[:200]}") from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise _structure("A DOCTYPE (DTD, entities) is not allowed in FHIR XML")
    qname = etree.QName(root)
    if qname.namespace != FHIR_NS:
        raise _structure(f"The root element must be in the FHIR namespace {FHIR_NS}")
    rtype = qname.localname
    if rtype == "Bundle":
        entries = sum(1 for _ in root.iterchildren(_FHIR + "entry"))
        if entries > limits.max_bundle_entries:
            raise FhirError(
                413,
                [
                    error(
                        "too-costly",
                        f"The Bundle has {entries} entries; at most {limits.max_bundle_entries} "
                        "are accepted per request: split it",
                        "Bundle.entry",
                    )
                ],
            )
    doc = _resource(root, rtype)
    # the JSON path's depth rule on the very dict the router gets (XML 1.0 itself refuses the
    # control characters the JSON path checks for, even as character references)
    strict_json.count_keys(doc, limits.max_depth)
    return doc


# -- XML → the FHIR JSON dict ---------------------------------------------------------------------
# Written here rather than taken from the library's reader: that one builds models, and a model
# dumped back to JSON rewrites the client's values (`+00:00` becomes `Z`, `.120` `.120000`), which
# the workflow then sees as changed (a Task update that "changed authoredOn"). This reader keeps
# every value's text as sent, exactly like the JSON path; the router validates the dict as usual.
_PREFIX = determine_version_prefix("fhir.resources.R4B")
_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})


@dataclass(frozen=True, slots=True)
class _Field:
    many: bool
    primitive: bool
    type_name: str  # a FHIR type ("string", "xhtml", "HumanName", "Resource", …)


@cache
def _fields(cls: Any) -> tuple[dict[str, _Field], tuple[str, ...], tuple[str, ...]]:
    """A model's elements by JSON name, their order, and which are XML attributes (`id` of an
    element, `url` of an Extension). Cached: the model lookups cost more than the XML itself."""
    aliases = cls.get_alias_mapping()
    fields = {}
    for name, field_name in aliases.items():
        if name in ("resourceType", "fhir_comments") or field_name not in cls.model_fields:
            continue
        try:
            type_name = get_fhir_type_name(cls.model_fields[field_name], prefix=_PREFIX)
        except ValueError:
            continue  # not an element (internal fields)
        field = cls.model_fields[field_name]
        fields[name] = _Field(is_list_type(field), is_primitive_type(field), type_name)
    resource = cls.has_resource_base()
    attributes = () if resource else ("id", "url") if cls.get_resource_type() == "Extension" else ("id",)
    return fields, tuple(cls.elements_sequence()), attributes


def _resource(element: Any, rtype: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"resourceType": rtype}
    try:
        cls = model_class(rtype)
    except KeyError:  # not a FHIR resource type: `check_resource` refuses it as it would in JSON
        return doc
    doc.update(_object(element, cls, rtype))
    return doc


def _object(element: Any, cls: Any, path: str) -> dict[str, Any]:
    fields, _, attributes = _fields(cls)
    out: dict[str, Any] = {}
    for name, value in element.attrib.items():
        if name not in attributes:
            raise _structure(f"Unexpected attribute '{name}'", path)
        out[name] = value
    for child in element:
        if not isinstance(child.tag, str):
            continue
        qname = etree.QName(child)
        name = qname.localname
        where = f"{path}.{name}"
        if qname.namespace != (XHTML_NS if name == "div" else FHIR_NS):
            raise _structure(f"The element '{child.tag}' is not a FHIR element", where)
        field = fields.get(name)
        if field is None or name in attributes:
            raise _structure(f"Unknown element '{name}'", where)
        many, type_name = field.many, field.type_name
        if field.primitive:
            value, extra = _primitive(child, type_name, where)
            _put(out, name, value, many, where)
            if many:
                _put(out, "_" + name, extra, True, where)
            elif extra is not None:
                out["_" + name] = extra
        elif type_name == "Resource":
            inner = [c for c in child if isinstance(c.tag, str)]
            if len(inner) != 1 or etree.QName(inner[0]).namespace != FHIR_NS:
                raise _structure("A resource element must hold exactly one FHIR resource", where)
            _put(out, name, _resource(inner[0], etree.QName(inner[0]).localname), many, where)
        else:
            _put(out, name, _object(child, model_class(type_name), where), many, where)
    for name in [k for k in out if k.startswith("_")]:  # `_given` only when an item has extras
        if isinstance(out[name], list) and all(v is None for v in out[name]):
            del out[name]
    return out


def _put(out: dict[str, Any], name: str, value: Any, many: bool, where: str) -> None:
    if many:
        out.setdefault(name, []).append(value)
    elif name in out:
        raise _structure(f"'{name}' may occur only once", where)
    else:
        out[name] = value


def _primitive(element: Any, type_name: str, where: str) -> tuple[Any, dict[str, Any] | None]:
    """A primitive's JSON value (the text as sent; numbers and booleans as JSON ones) and its
    `_name` companion (id, extensions) or None."""
    if type_name == "xhtml":
        return etree.tostring(element, encoding="unicode", with_tail=False), None
    raw = element.get("value")
    value: Any = raw
    if raw is not None:
        if type_name == "boolean" and raw in ("true", "false"):
            value = raw == "true"
        elif type_name in _INTEGERS and raw.isascii() and raw.lstrip("-").isdigit():
            value = int(raw)
        elif type_name == "decimal" and _DECIMAL.fullmatch(raw):
            value = float(raw)
    extra: dict[str, Any] = {}
    for name, attr in element.attrib.items():
        if name == "id":
            extra["id"] = attr
        elif name != "value":
            raise _structure(f"Unexpected attribute '{name}'", where)
    extension_class = model_class("Extension")
    for child in element:
        if not isinstance(child.tag, str):
            continue
        if child.tag != _FHIR + "extension":
            raise _structure("A primitive element holds only extensions", where)
        extra.setdefault("extension", []).append(_object(child, extension_class, f"{where}.extension"))
    return value, extra or None


_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")  # FHIR decimal's regex


# -- the FHIR JSON dict → XML ---------------------------------------------------------------------
# Also written here, for the same reason: the library's writer goes through a model and writes a
# stored `Z` as `+00:00`; a client that sends back what it read would be told it changed the value.


def dumps(body: dict[str, Any]) -> bytes:
    """A resource dict (as stored or built: already validated) as FHIR XML, every value's text
    as in the JSON; elements in the order the specification fixes (the model's sequence)."""
    root = etree.Element(_FHIR + body["resourceType"], nsmap={None: FHIR_NS})
    _write_object(root, body, model_class(body["resourceType"]))
    xml: bytes = etree.tostring(root, xml_declaration=True, encoding="utf-8")
    return xml


def _write_object(element: Any, doc: dict[str, Any], cls: Any) -> None:
    fields, sequence, attributes = _fields(cls)
    for name in attributes:
        if isinstance(doc.get(name), str):
            element.set(name, doc[name])
    for name in sequence:
        value, extra = doc.get(name), doc.get("_" + name)
        if (value is None and extra is None) or name in attributes:
            continue
        field = fields[name]
        values = value if field.many and isinstance(value, list) else [value]
        extras = extra if field.many and isinstance(extra, list) else [extra]
        extras += [None] * (len(values) - len(extras))
        for item, item_extra in zip(values, extras, strict=False):
            if field.type_name == "xhtml":
                element.append(etree.fromstring(item, parser=_parser()))
                continue
            child = etree.SubElement(element, _FHIR + name)
            if field.primitive:
                _write_primitive(child, item, item_extra)
            elif field.type_name == "Resource":
                inner = etree.SubElement(child, _FHIR + item["resourceType"])
                _write_object(inner, item, model_class(item["resourceType"]))
            else:
                _write_object(child, item, model_class(field.type_name))


def _write_primitive(element: Any, value: Any, extra: Any) -> None:
    if value is not None:
        element.set("value", _text(value))
    if isinstance(extra, dict):
        if isinstance(extra.get("id"), str):
            element.set("id", extra["id"])
        for extension in extra.get("extension") or ():
            _write_object(etree.SubElement(element, _FHIR + "extension"), extension, model_class("Extension"))


def _text(value: Any) -> str:
    """A JSON primitive as its XML `value`: strings as they are, numbers and booleans as JSON
    writes them."""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
