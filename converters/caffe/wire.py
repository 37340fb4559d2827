"""A minimal protobuf wire-format walker, so that blobs become NumPy views of the file's bytes.

Parsing a 230 MB caffemodel with the protobuf library would copy every float into a repeated
field and then again into an array.  Instead the caffemodel reader walks the few outer messages
by hand (NetParameter -> layer -> BlobProto), hands the small non-blob parts to protobuf, and maps
each packed ``data`` field with ``np.frombuffer``: no copy of any weight.
"""

from __future__ import annotations

from typing import Iterator

from resnet_port.converters.caffe.errors import CaffeFormatError

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


class Truncated(CaffeFormatError):
    """A length-delimited field runs past the end of its message (a file cut short)."""

    def __init__(self, where: str, message: str, number: int, payload_start: int, needed: int, remaining: int) -> None:
        super().__init__(message)
        self.where, self.number, self.payload_start = where, number, payload_start
        self.needed, self.remaining = needed, remaining


def read_varint(buf: memoryview, pos: int, end: int, where: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise CaffeFormatError(f"{where}: truncated inside a varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CaffeFormatError(f"{where}: malformed varint at byte {pos}")


def iter_fields(buf: memoryview, start: int, end: int, where: str) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield ``(field_number, wire_type, value_or_payload_start, payload_end, field_start)``.

    For LEN fields the payload is ``buf[value:payload_end]``; for varints ``value`` is the value;
    for fixed fields the payload is the raw 4 or 8 bytes.
    """
    pos = start
    while pos < end:
        field_start = pos
        tag, pos = read_varint(buf, pos, end, where)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise CaffeFormatError(f"{where}: invalid field number 0 at byte {field_start}")
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end, where)
            yield number, wire, value, pos, field_start
        elif wire == LEN:
            length, pos = read_varint(buf, pos, end, where)
            if pos + length > end:
                raise Truncated(
                    where,
                    f"{where}: truncated: field {number} at byte {field_start} needs {length} bytes, "
                    f"{end - pos} remain",
                    number, pos, length, end - pos,
                )
            yield number, wire, pos, pos + length, field_start
            pos += length
        elif wire in (FIXED32, FIXED64):
            size = 4 if wire == FIXED32 else 8
            if pos + size > end:
                raise CaffeFormatError(f"{where}: truncated inside field {number} at byte {field_start}")
            yield number, wire, pos, pos + size, field_start
            pos += size
        else:
            raise CaffeFormatError(
                f"{where}: not a protobuf message (wire type {wire} of field {number} at byte {field_start})"
            )


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_len_field(number: int, payload: bytes | memoryview) -> list[bytes | memoryview]:
    """The pieces of one length-delimited field (tag, length, payload), to be joined by the caller."""
    return [encode_varint(number << 3 | LEN) + encode_varint(len(payload)), payload]


__all__ = ["FIXED32", "FIXED64", "LEN", "VARINT", "Truncated", "encode_len_field", "encode_varint", "iter_fields", "read_varint"]
