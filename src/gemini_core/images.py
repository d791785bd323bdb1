"""What an upload really is, judged by its bytes: JPEG, PNG, GIF or WebP, and
the pixel size its header declares.

Names and declared content types are never trusted: a file is an image of a
kind only when its first bytes say so. The declared width and height are read
from the header alone (PNG ``IHDR``, the GIF logical screen, the JPEG start of
frame, the WebP ``VP8 ``/``VP8L``/``VP8X`` chunk), so a decompression bomb (a
small file that declares an enormous canvas) is refused before anything
decodes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Enough bytes to recognise every supported signature and, for every format
# but JPEG, to read the declared size; a JPEG may need more (metadata segments
# come before its start of frame).
SNIFF_BYTES = 32

# Decoded at 4 bytes a pixel, 2**27 pixels is 512 MiB: more than any camera
# photo (a 108-megapixel phone picture fits) and far less than a bomb's canvas.
MAX_PIXELS = 2**27
# No single side longer than this, whatever the area (a 1 x 10**9 strip is a bomb too).
MAX_SIDE = 30_000

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GIF_SIGNATURES = (b"GIF87a", b"GIF89a")
_JPEG_SIGNATURE = b"\xff\xd8\xff"

# Start-of-frame markers: baseline, extended, progressive and lossless, Huffman
# or arithmetic coded. Not DHT (C4), JPG (C8) or DAC (CC), which share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length: TEM and the restart markers.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_JPEG_SOS, _JPEG_EOI = 0xDA, 0xD9


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """A recognised image. ``width`` and ``height`` are ``None`` when the bytes
    given end before the header says them."""

    content_type: str
    extension: str
    width: int | None = None
    height: int | None = None

    @property
    def size_known(self) -> bool:
        return self.width is not None and self.height is not None

    @property
    def is_bomb(self) -> bool:
        """Whether the declared canvas is too large to decode safely."""
        if self.width is None or self.height is None:
            return False
        return (
            self.width > MAX_SIDE or self.height > MAX_SIDE or self.width * self.height > MAX_PIXELS
        )


def sniff_image(head: bytes | bytearray) -> ImageInfo | None:
    """The kind and declared size of the image that starts with ``head``, or
    ``None`` when it is not a JPEG, PNG, GIF or WebP (or its header is broken).

    Give it at least ``SNIFF_BYTES`` bytes, or the whole file when shorter.
    Never raises, whatever the bytes.
    """
    if head.startswith(PNG_SIGNATURE):
        return _png(head)
    if head.startswith(_GIF_SIGNATURES):
        return _gif(head)
    if head.startswith(_JPEG_SIGNATURE):
        return _jpeg(head)
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(head)
    return None


def _png(head: bytes | bytearray) -> ImageInfo | None:
    # Signature, then the first chunk, which must be IHDR: length, type, width, height.
    if len(head) < 24:
        return ImageInfo("image/png", ".png")
    if head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return ImageInfo("image/png", ".png", width, height)


def _gif(head: bytes | bytearray) -> ImageInfo | None:
    if len(head) < 10:
        return ImageInfo("image/gif", ".gif")
    width, height = struct.unpack("<HH", head[6:10])
    return ImageInfo("image/gif", ".gif", width, height)


def _jpeg(head: bytes | bytearray) -> ImageInfo | None:
    unknown = ImageInfo("image/jpeg", ".jpg")
    position = 2  # after SOI
    while True:
        if position >= len(head):
            return unknown
        if head[position] != 0xFF:
            return None  # a segment must start with a marker
        # Any number of 0xFF fill bytes may precede a marker.
        while position < len(head) and head[position] == 0xFF:
            position += 1
        if position >= len(head):
            return unknown
        marker = head[position]
        position += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (_JPEG_SOS, _JPEG_EOI, 0x00, 0xD8):
            return None  # image data or the end before any frame header
        if position + 2 > len(head):
            return unknown
        (length,) = struct.unpack(">H", head[position : position + 2])
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            # length, sample precision, height, width
            if length < 7:
                return None
            if position + 7 > len(head):
                return unknown
            height, width = struct.unpack(">HH", head[position + 3 : position + 7])
            return ImageInfo("image/jpeg", ".jpg", width, height)
        position += length


def _webp(head: bytes | bytearray) -> ImageInfo | None:
    unknown = ImageInfo("image/webp", ".webp")
    if len(head) < 16:
        return unknown
    chunk, data = head[12:16], head[20:]
    if chunk == b"VP8 ":
        # A lossy key frame: 3-byte frame tag, start code, then 14-bit sizes.
        if len(data) < 10:
            return unknown
        if data[3:6] != b"\x9d\x01\x2a":
            return None
        width, height = struct.unpack("<HH", data[6:10])
        return ImageInfo("image/webp", ".webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L":
        # Lossless: a signature byte, then width - 1 and height - 1 in 14 bits each.
        if len(data) < 5:
            return unknown
        if data[0] != 0x2F:
            return None
        (bits,) = struct.unpack("<I", data[1:5])
        return ImageInfo("image/webp", ".webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        # Extended: flags, 3 reserved bytes, then canvas width - 1 and height - 1 in 24 bits.
        if len(data) < 10:
            return unknown
        width = int.from_bytes(data[4:7], "little") + 1
        height = int.from_bytes(data[7:10], "little") + 1
        return ImageInfo("image/webp", ".webp", width, height)
    return None
