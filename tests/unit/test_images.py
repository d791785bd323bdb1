"""Sniffing images from their bytes: kinds, declared sizes, bombs, and junk."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gemini_core.images import MAX_PIXELS, MAX_SIDE, SNIFF_BYTES, ImageInfo, sniff_image
from tests.images import (
    BROKEN_PNG,
    HTML,
    PDF,
    SVG,
    TEXT,
    gif,
    jpeg,
    png,
    webp_extended,
    webp_lossless,
    webp_lossy,
)

BUILDERS = {
    "png": (png, "image/png", ".png"),
    "gif": (gif, "image/gif", ".gif"),
    "jpeg": (jpeg, "image/jpeg", ".jpg"),
    "webp-vp8": (webp_lossy, "image/webp", ".webp"),
    "webp-vp8l": (webp_lossless, "image/webp", ".webp"),
    "webp-vp8x": (webp_extended, "image/webp", ".webp"),
}


@pytest.mark.parametrize("kind", BUILDERS)
@pytest.mark.parametrize("size", [(1, 1), (640, 480), (16383, 2)])
def test_each_kind_and_its_declared_size_is_read(kind: str, size: tuple[int, int]) -> None:
    build, content_type, extension = BUILDERS[kind]
    info = sniff_image(build(*size))
    assert info == ImageInfo(content_type, extension, *size)
    assert not info.is_bomb


# Not JPEG: its frame header follows its metadata segments.
@pytest.mark.parametrize("kind", [kind for kind in BUILDERS if kind != "jpeg"])
def test_the_header_fits_in_the_sniffing_window(kind: str) -> None:
    build, _, _ = BUILDERS[kind]
    info = sniff_image(build(300, 200)[:SNIFF_BYTES])
    assert info is not None
    assert (info.width, info.height) == (300, 200)


def test_a_jpeg_frame_after_long_metadata_needs_more_bytes() -> None:
    data = jpeg(4000, 3000, metadata=150_000)
    early = sniff_image(data[:1000])
    assert early == ImageInfo("image/jpeg", ".jpg")  # a JPEG, size not known yet
    assert early is not None
    assert not early.size_known
    assert not early.is_bomb
    assert sniff_image(data) == ImageInfo("image/jpeg", ".jpg", 4000, 3000)


@pytest.mark.parametrize("marker", [0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF])
def test_every_start_of_frame_counts(marker: int) -> None:
    assert sniff_image(jpeg(10, 20, sof=marker)) == ImageInfo("image/jpeg", ".jpg", 10, 20)


def test_tables_that_share_the_marker_range_are_not_frames() -> None:
    # DHT (C4) is in the SOF range but carries no size; the real frame follows.
    data = jpeg(10, 20)
    dht = b"\xff\xc4\x00\x05\x00\x00\x00"
    spliced = data[:2] + dht + data[2:]
    assert sniff_image(spliced) == ImageInfo("image/jpeg", ".jpg", 10, 20)


@pytest.mark.parametrize(
    "data",
    [TEXT, HTML, SVG, PDF, BROKEN_PNG, b"", b"\x89PNG", b"GIF8", b"RIFF\x00\x00\x00\x00WAVEfmt "],
    ids=["text", "html", "svg", "pdf", "broken-png", "empty", "short-png", "short-gif", "wav"],
)
def test_anything_else_is_not_an_image(data: bytes) -> None:
    assert sniff_image(data) is None


def test_a_jpeg_whose_scan_starts_before_any_frame_is_refused() -> None:
    assert sniff_image(b"\xff\xd8\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00") is None


def test_a_webp_with_a_broken_frame_is_refused() -> None:
    broken = bytearray(webp_lossy(5, 5))
    broken[23] = 0  # the VP8 start code
    assert sniff_image(bytes(broken)) is None


@pytest.mark.parametrize(
    "build", [png, gif, jpeg, webp_extended], ids=["png", "gif", "jpeg", "webp-vp8x"]
)
def test_a_huge_declared_canvas_is_a_bomb(build: Callable[[int, int], bytes]) -> None:
    side = MAX_SIDE + 1
    info = sniff_image(build(side, 1))
    assert info is not None
    assert info.is_bomb


def test_bomb_limits() -> None:
    def info(width: int, height: int) -> ImageInfo:
        return ImageInfo("image/png", ".png", width, height)

    assert info(100_000, 100_000).is_bomb
    assert info(MAX_SIDE + 1, 1).is_bomb
    assert info(1, MAX_SIDE + 1).is_bomb
    assert not info(MAX_SIDE, MAX_PIXELS // MAX_SIDE).is_bomb
    assert info(MAX_SIDE, MAX_PIXELS // MAX_SIDE + 1).is_bomb
    assert not info(12_000, 9_000).is_bomb  # a 108-megapixel phone photo
    assert not ImageInfo("image/jpeg", ".jpg").is_bomb  # size unknown yet


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    sniff_image(data)


@given(
    st.sampled_from(
        [b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"RIFF\x00\x00\x00\x00WEBP"]
    ),
    st.binary(max_size=300),
)
def test_arbitrary_bytes_after_a_signature_never_raise(signature: bytes, rest: bytes) -> None:
    info = sniff_image(signature + rest)
    assert info is None or info.content_type.startswith("image/")


@given(st.sampled_from(list(BUILDERS)), st.integers(1, 16383), st.integers(1, 16383))
def test_every_prefix_of_an_image_is_safe_and_consistent(
    kind: str, width: int, height: int
) -> None:
    build, content_type, _ = BUILDERS[kind]
    data = build(width, height)
    for end in range(len(data) + 1):
        info = sniff_image(data[:end])
        if info is not None:
            assert info.content_type == content_type
            assert info.width in (None, width)
    assert sniff_image(data) == ImageInfo(content_type, BUILDERS[kind][2], width, height)
