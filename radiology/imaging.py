"""Images as the web pages and the API send them: stored radiographs (DICOM drawn as PNG for browsers),
heatmap overlays, and the one HTTP response shape both use (private caching, ETag).

Drawing happens here, not in views or selectors: views ask for pixels and send them.
"""

from __future__ import annotations

import hashlib

import cv2
from django.http import HttpResponse

from classifier.decoding import decode_grayscale
from classifier.explain import stored_to_overlay_png
from radiology.models import Prediction, Radiograph

# Patient images are never written to any cache, the browser's included: a shared workstation's cache
# outlives the session that fetched them (kept for an hour, they were still there after logout).
IMAGE_CACHE_CONTROL = "private, no-store"

CONTENT_TYPES = {
    Radiograph.Format.PNG: "image/png",
    Radiograph.Format.JPEG: "image/jpeg",
    Radiograph.Format.DICOM: "application/dicom",
}


class ImageUnavailable(Exception):
    """The stored file is missing, or cannot be drawn (the message says which, in words for people)."""


def radiograph_stored(radiograph: Radiograph) -> tuple[bytes, str]:
    """The file as uploaded and its content type (the API's image endpoint sends it unchanged)."""
    try:
        with radiograph.image.open("rb") as handle:
            content = handle.read()
    except FileNotFoundError:
        raise ImageUnavailable("The stored image is missing.") from None
    return content, CONTENT_TYPES[Radiograph.Format(radiograph.format)]


def radiograph_for_display(radiograph: Radiograph) -> tuple[bytes, str]:
    """What a browser can show: PNG and JPEG as stored, DICOM drawn as PNG with the windowing the model
    sees (classifier.preprocessing decodes it, so the clinician and the model look at the same pixels)."""
    content, content_type = radiograph_stored(radiograph)
    if radiograph.format != Radiograph.Format.DICOM:
        return content, content_type
    ok, encoded = cv2.imencode(".png", decode_grayscale(content))
    if not ok:
        raise ImageUnavailable("The image cannot be displayed.")
    return encoded.tobytes(), "image/png"


def heatmap_overlay_png(prediction: Prediction) -> bytes:
    """A prediction's heatmap as an RGBA overlay PNG at the radiograph's size, from its stored levels."""
    if not prediction.heatmap:
        raise ImageUnavailable("This prediction has no heatmap.")
    try:
        with prediction.heatmap.open("rb") as handle:
            stored = handle.read()
    except FileNotFoundError:
        raise ImageUnavailable("The stored heatmap is missing.") from None
    radiograph = prediction.radiograph
    try:
        return stored_to_overlay_png(stored, radiograph.width, radiograph.height)
    except ValueError:
        raise ImageUnavailable("The stored heatmap cannot be read.") from None


def image_response(content: bytes, content_type: str, etag: str | None = None) -> HttpResponse:
    """An image for an authorised user: shown inline, stored in no cache, with an ETag (by default a digest
    of the content)."""
    response = HttpResponse(content, content_type=content_type)
    response["Cache-Control"] = IMAGE_CACHE_CONTROL
    response["ETag"] = f'"{etag or hashlib.sha256(content).hexdigest()[:32]}"'
    response["Content-Disposition"] = "inline"
    return response
