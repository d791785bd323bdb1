"""Tiny images built by hand, byte by byte (no imaging library), and fakes.

Each builder takes the pixel size its header should declare, so the same
code makes a 1 x 1 image and a decompression bomb.
"""

from __future__ import annotations

import struct
import zlib


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int = 1, height: int = 1) -> bytes:
    """An 8-bit RGB PNG; the pixel data is one red pixel whatever the size declared."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


def gif(width: int = 1, height: int = 1) -> bytes:
    """A GIF89a with a two-colour table and one image covering the screen."""
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global table of 2 colours
        + b"\xff\xff\xff\x00\x00\x00"
        + b","
        + struct.pack("<HHHHB", 0, 0, width, height, 0)
        + b"\x02\x02\x44\x01\x00"  # LZW minimum code size 2, one sub-block
        + b";"
    )


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg(width: int = 1, height: int = 1, *, metadata: int = 0, sof: int = 0xC0) -> bytes:
    """A baseline JPEG: JFIF header, ``metadata`` bytes of APP1 segments
    before the frame header (as EXIF puts them), tables, frame, scan."""
    jfif = _jpeg_segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    app1 = b""
    while metadata > 0:
        size = min(metadata, 65_000)
        app1 += _jpeg_segment(0xE1, b"Exif\x00\x00" + b"\x00" * size)
        metadata -= size
    tables = _jpeg_segment(0xDB, b"\x00" + bytes(range(1, 65)))
    frame = _jpeg_segment(sof, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    huffman = _jpeg_segment(0xC4, b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00")
    scan = _jpeg_segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\xf8\x00"
    return b"\xff\xd8" + jfif + app1 + tables + frame + huffman + scan + b"\xff\xd9"


def _riff(chunk: bytes, data: bytes) -> bytes:
    body = b"WEBP" + chunk + struct.pack("<I", len(data)) + data + b"\x00" * (len(data) % 2)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_lossy(width: int = 1, height: int = 1) -> bytes:
    """A ``VP8 `` key frame header: frame tag, start code, 14-bit sizes."""
    frame = b"\x30\x01\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", width, height) + b"\x00" * 8
    return _riff(b"VP8 ", frame)


def webp_lossless(width: int = 1, height: int = 1) -> bytes:
    """A ``VP8L`` header: signature byte, then width - 1 and height - 1 in 14 bits."""
    bits = (width - 1) | ((height - 1) << 14)
    return _riff(b"VP8L", b"\x2f" + struct.pack("<I", bits) + b"\x00" * 4)


def webp_extended(width: int = 1, height: int = 1) -> bytes:
    """A ``VP8X`` header (canvas sizes in 24 bits) followed by a lossy frame."""
    canvas = (
        b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    )
    inner = webp_lossy(width, height)[12:]
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(canvas)) + canvas + inner
    return b"RIFF" + struct.pack("<I", len(body)) + body


IMAGES = {
    "image/jpeg": (jpeg, ".jpg"),
    "image/png": (png, ".png"),
    "image/gif": (gif, ".gif"),
    "image/webp": (webp_lossy, ".webp"),
}

SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1">'
    b"<script>alert(document.cookie)</script></svg>"
)
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
TEXT = b"just some words, nothing like an image at all\n"
PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
# Right magic, broken header: a PNG whose first chunk is not IHDR.
BROKEN_PNG = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IDAT", b"\x00" * 13)
