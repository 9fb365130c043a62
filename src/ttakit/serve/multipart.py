"""A fast path for the multipart bodies clients usually send: image files
under ``files`` (and an optional ``top_k`` field), plainly written.

Starlette's multipart parser (python-multipart) is one of the largest shares
of a small request's handling in a profile of the app alone, and the
server's event loop pays it while holding the GIL that the model's thread
wants. :func:`simple_multipart` reads the plain shape with a few
``bytes`` operations and answers ``None`` for anything else (other fields,
other headers, quoted or odd file names, a missing or extra delimiter...),
which then goes to Starlette's parser: it never reads a body differently
from it (``tests/test_serve_fuzz.py`` checks this on fuzzed bodies).
"""

from __future__ import annotations

import re

#: a boundary of RFC 2046's characters (no space: it would need quoting rules)
_CTYPE = re.compile(rb"multipart/form-data; ?boundary=([0-9A-Za-z'()+_,\-./:=?]{1,70})")
#: a part's headers: its Content-Disposition (a file under "files", or the "top_k" field), optionally a
#: Content-Type; a file name of plain characters only (no quoting, escaping or path rules to apply)
_NAME = rb"[0-9A-Za-z._\-+()](?:[0-9A-Za-z._\-+() ]{0,253}[0-9A-Za-z._\-+()])?"
_FILE = re.compile(rb'(?i:content-disposition): ?form-data; ?name="files"; ?filename="(' + _NAME + rb')"')
_TOP_K = re.compile(rb'(?i:content-disposition): ?form-data; ?name="top_k"')
_TYPE = re.compile(rb"(?i:content-type): ?[0-9A-Za-z_.+\-]+/[0-9A-Za-z_.+\-]+")
_DIGITS = re.compile(rb"[0-9]{1,7}")


def simple_multipart(content_type: bytes, body: bytes, max_parts: int):
    """``(files, top_k)`` from a plain multipart body: ``files`` the
    ``(file name, bytes)`` of each ``files`` part in order, ``top_k`` the
    ``top_k`` field's text or None; ``None`` when the body is not of that
    plain shape (or has more than ``max_parts`` parts)."""
    m = _CTYPE.fullmatch(content_type)
    if m is None:
        return None
    delimiter = b"--" + m.group(1)
    if not body.startswith(delimiter + b"\r\n"):
        return None
    end = b"\r\n" + delimiter + b"--"
    stop = body.find(end)
    if stop < 0 or body[stop + len(end):] not in (b"", b"\r\n"):
        return None
    chunks = body[len(delimiter) + 2:stop].split(b"\r\n" + delimiter + b"\r\n")
    if len(chunks) > max_parts or any(b"\r\n" + delimiter in c for c in chunks):
        return None  # too many parts, or a delimiter followed by something else than CRLF
    files, top_k = [], None
    for chunk in chunks:
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            return None
        lines = head.split(b"\r\n")
        if len(lines) > 2 or (len(lines) == 2 and _TYPE.fullmatch(lines[1]) is None):
            return None
        f = _FILE.fullmatch(lines[0])
        if f is not None:
            files.append((f.group(1).decode("ascii"), data))
        elif _TOP_K.fullmatch(lines[0]) is not None and len(lines) == 1 and top_k is None \
                and _DIGITS.fullmatch(data):
            top_k = data.decode("ascii")
        else:
            return None
    return files, top_k
