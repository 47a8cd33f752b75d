"""One pixel limit for every command: `emotion.images.MAX_DECODE_PIXELS`, counted as the image will decode (a big
JPEG at a reduced DCT scale). The server refuses what is over it from the header alone (413), and what it lets
through, the decoder reads."""

import io

import pytest
from conftest import png_header_only
from PIL import Image

from emotion.images import MAX_DECODE_PIXELS, decode_image

pytest.importorskip("fastapi", reason="the serve extra (pip install -e '.[serve]') is not installed")

from emotion.serve.requests import MAX_PIXELS, MAX_SIDE, Refused, check_header  # noqa: E402


def big_jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 128).save(buf, format="JPEG", quality=50)
    return buf.getvalue()


def test_the_server_and_the_decoder_share_one_limit():
    assert MAX_PIXELS == MAX_DECODE_PIXELS


def test_a_40_mp_png_is_refused_413_from_its_header_naming_the_limit():
    with pytest.raises(Refused) as e:
        check_header(png_header_only(8_000, 5_000))
    assert e.value.status_code == 413 and f"{MAX_DECODE_PIXELS:,}" in e.value.detail
    with pytest.raises(ValueError, match=f"the limit is {MAX_DECODE_PIXELS}"):  # the CLI's decoder: the same limit
        decode_image(png_header_only(8_000, 5_000))


def test_a_48_mp_jpeg_passes_the_header_check_and_decodes_at_a_reduced_scale():
    data = big_jpeg(8_000, 6_000)
    check_header(data)  # not refused: it decodes at 1/4 scale
    assert max(decode_image(data, "rgb", MAX_SIDE).shape[:2]) == MAX_SIDE


def test_a_png_just_under_the_limit_passes_the_header_check():
    check_header(png_header_only(6_000, 5_000))
