"""Images in chat content: from a row's value to a content part, and from a part to request bytes.

A picture is megabytes of base64, and a chat is copied into every row's
``distilabel_metadata.raw_input_<task>`` and hashed into every cache key. So an image is carried
in two forms, at two moments:

* **When a row is formatted** (:func:`image_part`), a local file becomes a *reference*: a
  ``file://`` URL with the sha256 of the bytes in its fragment (``file:///data/cat.png#sha256=…``).
  The digest makes the cache key change when the file's bytes change, and the row stays small.
  An ``http(s)://`` URL stays as it is (the provider fetches it; its bytes are not known here, so
  a changed picture behind the same URL keeps its cached answers). Bytes given in the row itself
  (``bytes``, a ``datasets`` Image dict, a ``data:`` URI) are inlined as a ``data:`` URI: they
  are in the row anyway.
* **When a provider builds a request** (:func:`inline_images`, :func:`image_data`), a
  ``file://`` reference is read and encoded, and only then; the digest is checked again so an
  answer is never cached under bytes it was not given.

The media type comes from the bytes' magic numbers (PNG, JPEG, GIF, WEBP: what OpenAI and
Anthropic both take), not from a file name, because a ``.png`` that is really a JPEG is refused
by Anthropic for the mismatch. Everything heavy (base64, hashlib, urllib) is imported where it
is used, so ``import taskloom`` pays nothing for it.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from taskloom.errors import BadRequestError, RowInputError
from taskloom.typing import ChatMessage, ChatType, ContentPart, ImagePart

if TYPE_CHECKING:
    from taskloom.typing import Chat

__all__ = [
    "MEDIA_TYPES",
    "ImageData",
    "has_images",
    "image_data",
    "image_part",
    "image_parts",
    "inline_images",
    "media_type_of",
]

MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
"""The image types every image-reading provider here accepts."""

_DIGEST = "#sha256="

_OTHER_FORMATS: tuple[tuple[bytes, int, str], ...] = (
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypheix", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIF"),
    (b"ftypavif", 4, "AVIF"),
    (b"%PDF", 0, "PDF"),
    (b"<svg", 0, "SVG"),
    (b"<?xml", 0, "XML (an SVG?)"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
)
"""Formats that are refused, recognised only so the error can name them."""


class ImageData(NamedTuple):
    """An image as a request carries it: base64 data and its media type, or a URL the API fetches."""

    media_type: str | None
    data: str | None
    """Base64 (no ``data:`` header); None for a URL."""
    url: str | None
    """An ``http(s)://`` URL; None for inline data."""


def media_type_of(head: bytes) -> str | None:
    """The media type the first bytes of an image show, or None for a format not taken here."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _format_name(head: bytes) -> str:
    for magic, offset, name in _OTHER_FORMATS:
        if head[offset : offset + len(magic)] == magic:
            return name
    return f"an unknown format (first bytes {head[:8].hex(' ') or 'none: empty'})"


def _checked_type(head: bytes, what: str) -> str:
    media_type = media_type_of(head)
    if media_type is None:
        raise RowInputError(
            f"{what} is {_format_name(head)}, not an image type the providers take "
            "(PNG, JPEG, GIF or WEBP); convert it first."
        )
    return media_type


def _data_uri(raw: bytes, what: str) -> str:
    import base64

    media_type = _checked_type(raw[:16], what)
    return f"data:{media_type};base64,{base64.b64encode(raw).decode('ascii')}"


def _part(url: str) -> ImagePart:
    return {"type": "image_url", "image_url": {"url": url}}


def _shown(path: Path) -> str:
    """A path for a message; a long one (base64 given without its ``data:`` header?) cut short."""
    text = repr(str(path))
    return text if len(text) <= 200 else text[:200] + "...'"


def _file_reference(path: Path) -> str:
    """``file://`` URL of ``path`` with the sha256 of its bytes; the row error names the path."""
    import hashlib

    where = path.expanduser()
    try:
        where = where.resolve(strict=True)
        if where.is_dir():
            raise RowInputError(f"image path {_shown(path)} is a directory, not an image file.")
        digest = hashlib.sha256()
        with open(where, "rb") as file:
            head = file.read(16)
            digest.update(head)
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except FileNotFoundError:
        relative = "" if path.is_absolute() else f" (relative to {os.getcwd()!r})"
        raise RowInputError(f"image file not found: {_shown(path)}{relative}.") from None
    except OSError as error:
        raise RowInputError(f"image file {_shown(path)} cannot be read: {error.strerror or error}.") from None
    _checked_type(head, f"image file {_shown(path)}")
    return where.as_uri() + _DIGEST + digest.hexdigest()


def _checked_data_uri(uri: str) -> str:
    """A ``data:`` URI as given, once its bytes are known to be an image of the type it says."""
    import base64
    import binascii

    header, comma, payload = uri.partition(",")
    if not comma or not header.endswith(";base64"):
        raise RowInputError(f"image data URI {uri[:40]!r}... is not base64 (expected data:image/png;base64,...).")
    try:
        head = base64.b64decode(payload[:24], validate=True)
    except (binascii.Error, ValueError):
        raise RowInputError(f"image data URI {uri[:40]!r}... holds no valid base64.") from None
    media_type = _checked_type(head, f"image data URI {uri[:30]!r}...")
    declared = header[len("data:") : -len(";base64")]
    if declared != media_type:  # say what the bytes are: Anthropic refuses a mismatch
        return f"data:{media_type};base64,{payload}"
    return uri


def image_part(value: object) -> ImagePart:
    """One image content part of a column value; a :class:`RowInputError` says what is wrong with it.

    ``value`` is a local path (``str`` or ``os.PathLike``, or a ``file://`` URL), an
    ``http(s)://`` URL, a ``data:`` URI, ``bytes``, a ``datasets`` Image dict
    (``{"bytes": ..., "path": ...}``) or a PIL image (what ``datasets`` decodes one to).
    """
    if isinstance(value, str):
        if value.startswith(("http://", "https://")):
            return _part(value)
        if value.startswith("data:"):
            return _part(_checked_data_uri(value))
        if value.startswith("file://"):
            return _part(_file_reference(_path_of(value.split("#", 1)[0])))
        if not value.strip():
            raise RowInputError("image value is an empty string: give a path, a URL or bytes.")
        return _part(_file_reference(Path(value)))
    if isinstance(value, os.PathLike):
        return _part(_file_reference(Path(os.fspath(value))))
    if isinstance(value, bytes | bytearray | memoryview):
        return _part(_data_uri(bytes(value), "image bytes"))
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes") is not None:
            return image_part(bytes(value["bytes"]))
        if value.get("path"):
            return image_part(str(value["path"]))
        raise RowInputError("image dict has neither bytes nor a path.")
    if hasattr(value, "save") and hasattr(value, "mode"):  # a PIL image, without importing PIL
        import io

        buffer = io.BytesIO()
        image: Any = value
        image.save(buffer, format=image.format if image.format in ("PNG", "JPEG", "GIF", "WEBP") else "PNG")
        return _part(_data_uri(buffer.getvalue(), "PIL image"))
    raise RowInputError(
        f"image value of type {type(value).__name__} is not a path, a URL, a data URI or bytes: {value!r:.60}"
    )


def referenced(chat: ChatType) -> ChatType:
    """``chat`` with each image part that names a local file given its content digest (``file://...#sha256=``),
    as a column's image gets, so the cache key of a chat that came whole from a row (``chat-generation``'s
    ``messages``) also changes with the picture; other chats are returned as they are."""
    if isinstance(chat, str) or all(isinstance(m["content"], str) for m in chat):
        return chat
    made: list[ChatMessage] = []
    for message in chat:
        content = message["content"]
        if not isinstance(content, str):
            parts: list[ContentPart] = []
            for part in content:
                holder: Any = part.get("image_url") if part.get("type") == "image_url" else None
                url = holder.get("url") if isinstance(holder, dict) else None
                parts.append(image_part(url) if isinstance(url, str) and not url.startswith(_KEPT) else part)
            content = parts
        made.append({**message, "content": content})
    return made


_KEPT = ("http://", "https://", "data:")


def _absent(value: object) -> bool:
    """No image: None, an empty string (a blank CSV cell) or NaN (a missing value in pandas)."""
    return value is None or value == "" or (isinstance(value, float) and value != value)


def image_parts(value: object) -> list[ImagePart]:
    """The image parts of a column that holds one image or a list of them; none for a missing value."""
    if _absent(value):
        return []
    if isinstance(value, list | tuple):
        return [image_part(item) for item in value if not _absent(item)]
    return [image_part(value)]


def has_images(input: ChatType) -> bool:
    """Whether any message of ``input`` holds an image part (raw text holds none)."""
    if isinstance(input, str):
        return False
    for message in input:
        content = message["content"]
        if not isinstance(content, str) and any(part.get("type") == "image_url" for part in content):
            return True
    return False


def _path_of(url: str) -> Path:
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    return Path(url2pathname(urlparse(url).path))


@functools.lru_cache(maxsize=8)
def _file_data(reference: str) -> tuple[str, str]:
    """Media type and base64 of a ``file://`` reference, checked against its digest.

    Kept for a few references: an input asked for several answers (Anthropic takes one per
    request) or retried builds its body again, and the file need not be read again each time.
    """
    import base64
    import hashlib

    url, _, expected = reference.partition(_DIGEST)
    path = _path_of(url)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise BadRequestError(f"image file {_shown(path)} cannot be read: {error.strerror or error}.") from None
    if expected and hashlib.sha256(raw).hexdigest() != expected:
        raise BadRequestError(
            f"image file {_shown(path)} changed after its row was formatted (its sha256 differs); run again."
        )
    media_type = media_type_of(raw[:16])
    if media_type is None:
        raise BadRequestError(f"image file {_shown(path)} is {_format_name(raw[:16])}, not PNG, JPEG, GIF or WEBP.")
    return media_type, base64.b64encode(raw).decode("ascii")


def image_data(url: str) -> ImageData:
    """What a request carries for an image part's URL: inline base64 for a file or a ``data:``
    URI (a file is read now), the URL itself for ``http(s)://``.

    Raises :class:`~taskloom.errors.BadRequestError` (recorded on the row, not retried) for a
    file gone or changed since its row was formatted.
    """
    if url.startswith("file://"):
        media_type, data = _file_data(url)
        return ImageData(media_type, data, None)
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        return ImageData(header[len("data:") :].removesuffix(";base64"), data, None)
    return ImageData(None, None, url)


def inline_images(chat: Chat) -> Chat:
    """``chat`` as an OpenAI-shaped request sends it: each ``file://`` image as a ``data:`` URI.

    A chat without file references is returned as it is (no copy: the common, text-only case);
    otherwise the messages holding them are copied, never changed in place, since the chat is
    also what the row and the cache keep.
    """
    if not any(not isinstance(m["content"], str) for m in chat):
        return chat
    sent: list[ChatMessage] = []
    for message in chat:
        content = message["content"]
        if isinstance(content, str) or not any(_is_file_part(part) for part in content):
            sent.append(message)
            continue
        parts: list[ContentPart] = []
        for part in content:
            if _is_file_part(part):
                image = cast(ImagePart, part)
                media_type, data = _file_data(image["image_url"]["url"])
                parts.append({**image, "image_url": {**image["image_url"], "url": f"data:{media_type};base64,{data}"}})
            else:
                parts.append(part)
        sent.append({**message, "content": parts})
    return sent


def _is_file_part(part: ContentPart) -> bool:
    return part.get("type") == "image_url" and cast(ImagePart, part)["image_url"]["url"].startswith("file://")
