"""Parse a protobuf message whose string fields may hold invalid UTF-8, repairing them.

upb refuses a whole proto3 message when one ``string`` field is not valid UTF-8, so one span with a
bad attribute would cost every span of its request.  The fast path stays the strict C parse; only
when it fails is the request parsed again with a *lenient twin* of the message type: the same
descriptors with every ``string`` field declared ``bytes`` (identical on the wire, never checked).
The fields that were strings are then repaired in place (invalid sequences become U+FFFD, as the
storage sanitiser does with lone surrogates), the twin is serialised and parsed strictly.  That
costs a Python walk of the one bad request, nothing for the good ones.

Twins are built once per message type from the generated file descriptors.
"""

from __future__ import annotations

import threading
from typing import TypeVar

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.message import DecodeError, Message

__all__ = ["parse_lenient"]

M = TypeVar("M", bound=Message)

_twins: dict[str, tuple[type[Message], frozenset[str]]] = {}
_lock = threading.Lock()


def _files_in_order(file: FileDescriptor, seen: dict[str, FileDescriptor]) -> None:
    """``file`` and its dependencies, dependencies first (what a pool needs to add them)."""
    for dep in file.dependencies:
        _files_in_order(dep, seen)
    seen.setdefault(file.name, file)


def _as_bytes(messages, converted: set[str], prefix: str) -> None:
    """Declare every string field of ``messages`` (and nested ones) bytes; note their full names."""
    for msg in messages:
        name = f"{prefix}.{msg.name}"
        for fld in msg.field:
            if fld.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
                fld.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                converted.add(f"{name}.{fld.name}")
        _as_bytes(msg.nested_type, converted, name)


def _twin(descriptor: Descriptor) -> tuple[type[Message], frozenset[str]]:
    """The lenient message class for ``descriptor`` and the full names of its repaired fields."""
    with _lock:
        found = _twins.get(descriptor.full_name)
        if found is not None:
            return found
        files: dict[str, FileDescriptor] = {}
        _files_in_order(descriptor.file, files)
        pool = descriptor_pool.DescriptorPool()
        converted: set[str] = set()
        for file in files.values():
            proto = descriptor_pb2.FileDescriptorProto()
            file.CopyToProto(proto)
            _as_bytes(proto.message_type, converted, proto.package)
            pool.Add(proto)
        cls = message_factory.GetMessageClass(pool.FindMessageTypeByName(descriptor.full_name))
        found = _twins[descriptor.full_name] = (cls, frozenset(converted))
        return found


def _repair(message: Message, converted: frozenset[str]) -> int:
    """Replace invalid UTF-8 in the converted fields of ``message``, recursively; returns how many
    values were repaired."""
    repaired = 0
    for fd, value in message.ListFields():
        if fd.full_name in converted:
            if fd.is_repeated:
                for i, item in enumerate(value):
                    fixed = _valid_utf8(item)
                    if fixed is not item:
                        value[i] = fixed
                        repaired += 1
            else:
                fixed = _valid_utf8(value)
                if fixed is not value:
                    setattr(message, fd.name, fixed)
                    repaired += 1
        elif fd.type == FieldDescriptor.TYPE_MESSAGE:
            for item in (value if fd.is_repeated else (value,)):
                repaired += _repair(item, converted)
    return repaired


def _valid_utf8(raw: bytes) -> bytes:
    """``raw`` itself when it is valid UTF-8, else a repaired copy."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace").encode("utf-8")
    return raw


def parse_lenient(message_class: type[M], body: bytes) -> tuple[M, int]:
    """Parse ``body`` as ``message_class``; returns the message and how many string values had
    invalid UTF-8 (0 on the fast path).  Raises DecodeError when the body is not the message
    even leniently."""
    message = message_class()
    try:
        message.ParseFromString(body)
        return message, 0
    except DecodeError:
        twin_class, converted = _twin(message_class.DESCRIPTOR)
    twin = twin_class()
    twin.ParseFromString(body)  # a DecodeError here: malformed for another reason
    repaired = _repair(twin, converted)
    message = message_class()
    message.ParseFromString(twin.SerializeToString())
    return message, repaired
