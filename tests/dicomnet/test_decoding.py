"""Compressed transfer syntaxes: DX and CR radiographs encoded in each are decoded by the one decoder
(classifier.decoding, through pydicom's pylibjpeg plug-ins) and accepted by ingest; what truly
cannot be decoded is refused with the syntax named."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import MPEG2MPML

from classifier.decoding import UnreadableImageError, decode_grayscale
from radiology.ingest import IngestError, IngestLimits, ingest_file
from tests.dicomnet import factory

LIMITS = IngestLimits(max_bytes=50 * 1024 * 1024, max_pixels=60_000_000, min_side=32)


@pytest.mark.parametrize("modality", ["DX", "CR"])
@pytest.mark.parametrize("syntax", sorted(factory.SYNTAXES))
def test_it_decodes_each_transfer_syntax(syntax: str, modality: str) -> None:
    transfer_syntax, bits, lossless = factory.SYNTAXES[syntax]
    data = factory.radiograph(syntax=syntax, modality=modality)
    assert dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID == transfer_syntax

    image = ingest_file(f"{syntax}.dcm", data, LIMITS)
    assert (image.width, image.height) == (256, 256)
    assert image.dicom_attributes["TransferSyntaxUID"] == str(transfer_syntax)
    assert image.dicom_attributes["Modality"] == modality

    decoded = decode_grayscale(data).astype(int)
    reference = decode_grayscale(factory.radiograph(syntax="explicit_little", modality=modality, bits=bits))
    difference = np.abs(decoded - reference.astype(int))
    if lossless:
        assert difference.max() == 0
    else:
        # Lossy: the same radiograph, a little off (JPEG baseline, extended, JPEG-LS near-lossless, J2K).
        assert difference.mean() < 3.0
        assert np.corrcoef(decoded.ravel(), reference.ravel())[0, 1] > 0.99


def test_it_refuses_what_cannot_be_decoded_naming_the_syntax() -> None:
    dataset = dcmread(io.BytesIO(factory.radiograph(syntax="jpeg_ls_lossless")))
    dataset.file_meta.TransferSyntaxUID = MPEG2MPML  # video: no still-image decoder reads it
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    with pytest.raises(UnreadableImageError, match="MPEG2"):
        decode_grayscale(buffer.getvalue())
    with pytest.raises(IngestError) as refused:
        ingest_file("video.dcm", buffer.getvalue(), LIMITS)
    assert refused.value.code == "unreadable_image"
    assert "cannot decode" in refused.value.message


def _with_first_frame_cut_in_half(data: bytes) -> bytes:
    dataset = dcmread(io.BytesIO(data))
    frame = next(generate_frames(dataset.PixelData, number_of_frames=1))
    cut = frame[: len(frame) // 2]
    dataset.PixelData = encapsulate([cut + b"\x00" * (len(cut) % 2)])
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("syntax", ["jpeg_ls_lossless", "jpeg2000_lossless", "jpeg_baseline"])
def test_an_upload_whose_compressed_frame_is_cut_short_is_refused_as_truncated(syntax: str) -> None:
    # A whole file holding a codestream cut short (a broken encoder or archive): libjpeg returns half an
    # image from such a JPEG-LS frame instead of failing, so the one decoder checks the end marker and an
    # upload is refused like a network instance, not half-classified.
    data = _with_first_frame_cut_in_half(factory.radiograph(syntax=syntax))
    with pytest.raises(IngestError) as refused:
        ingest_file(f"{syntax}.dcm", data, LIMITS)
    assert refused.value.code == "unreadable_image"
    assert "stops before its end marker (truncated)" in refused.value.message


def test_a_file_cut_short_inside_its_pixel_data_is_called_incomplete_not_imageless() -> None:
    data = factory.radiograph(syntax="jpeg_ls_lossless")
    with pytest.raises(IngestError) as refused:
        ingest_file("cut.dcm", data[: len(data) - 3000], LIMITS)
    assert refused.value.code == "unreadable_image"
    assert "ends before its image data does" in refused.value.message
