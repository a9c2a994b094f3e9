"""Request bodies to model inputs: every form ``/v1/predict`` and ``/v1/predict/batch`` accept.

A raw ``image/png`` or ``image/jpeg`` body, multipart ``file``/``files``, or JSON
``{"image": "<base64 or data URL>"}``, ``{"pixels": [[...]]}`` or ``{"images": [...]}``. Each
image is decoded by :func:`cnnlab.data.read_image` (bounded against decompression bombs) and
brought to the model's input by the model's own preprocessing, so the service sees a file
exactly as ``predict`` does. Client mistakes raise :class:`~cnnlab.serve.errors.ClientError`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from cnnlab.data import read_image
from cnnlab.errors import CnnlabError
from cnnlab.serve.errors import ClientError
from cnnlab.serve.state import ServeSettings

__all__ = ["content_type", "decode_image", "from_base64", "from_pixels", "images_from_body",
           "images_from_request"]


def content_type(scope: Any) -> str:
    """The request's media type, lower case, without parameters."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.decode("latin-1").split(";")[0].strip().lower()
    return ""


def decode_image(data: bytes, name: str, model: Any, settings: ServeSettings) -> np.ndarray:
    """Encoded image bytes as the model's uint8 input (C, H, W).

    Raises:
        ClientError: 400 for an empty, undecodable or truncated image (or one the model's
            preprocessing refuses), 413 for one over the byte or pixel limits.
    """
    if not data:
        raise ClientError(400, "bad_image", f"{name}: the image is empty (0 bytes)")
    if len(data) > settings.max_body_bytes:
        raise ClientError(413, "payload_too_large",
                          f"{name}: {len(data):,} bytes exceed the limit of "
                          f"{settings.max_body_bytes:,}")
    try:
        return model.input_array(read_image(data, name=name, max_pixels=settings.max_pixels))
    except CnnlabError as e:  # ImageTooLargeError is a 413 (errors.STATUS_BY_ERROR)
        raise ClientError.of(e, 400, "bad_image") from e


def from_pixels(pixels: Any, model: Any) -> np.ndarray:
    """A JSON array (H x W or C x H x W, 0-255 or 0-1) as the model's input.

    Raises:
        ClientError: 422 for anything but a finite numeric array of the model's size.
    """
    try:
        arr = np.asarray(pixels, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ClientError(422, "validation_error", "pixels must be a numeric H x W array") from e
    if arr.ndim not in (2, 3) or not np.isfinite(arr).all():
        raise ClientError(422, "validation_error",
                          f"pixels must be a finite H x W (or C x H x W) array; got shape "
                          f"{arr.shape}")
    if arr.max(initial=0) > 1.0:
        arr = arr.clip(0, 255).astype(np.uint8)
    else:
        arr = arr.clip(0, 1).astype(np.float32)
    try:
        return model.input_array(arr)
    except CnnlabError as e:  # an array of another size: the schema is wrong, not the image
        raise ClientError.of(e, 422, "validation_error") from e


def from_base64(text: Any, name: str, model: Any, settings: ServeSettings) -> np.ndarray:
    """A base64 string (or a browser's data URL) of an encoded image as the model's input.

    Raises:
        ClientError: 422 if ``text`` is not a string, 400 if it is not base64, and what
            :func:`decode_image` raises.
    """
    if not isinstance(text, str):
        raise ClientError(422, "validation_error", f"{name} must be a base64 string")
    if "," in text[:100] and text.startswith("data:"):
        text = text.split(",", 1)[1]  # a data URL from a browser
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ClientError(400, "bad_image", f"{name} is not valid base64") from e
    return decode_image(data, name, model, settings)


def images_from_body(ctype: str, body: bytes, *, batch: bool, model: Any,
                     settings: ServeSettings) -> list[np.ndarray]:
    """The images of a raw image or JSON body (``ctype`` without parameters).

    Raises:
        ClientError: 415 for another content type, 400 for JSON that does not parse, 422 for
            JSON of the wrong shape, 413 for too many images, and what the decoders raise.
    """
    if ctype in ("image/png", "image/jpeg") and not batch:
        return [decode_image(body, "body", model, settings)]
    if ctype == "application/json":
        try:
            payload = json.loads(body)
        except ValueError as e:
            raise ClientError(400, "bad_request", f"the body is not valid JSON: {e}") from e
        if not isinstance(payload, dict):
            raise ClientError(422, "validation_error", "the JSON body must be an object")
        if batch:
            items = payload.get("images")
            if not isinstance(items, list) or not items:
                raise ClientError(422, "validation_error",
                                  "images must be a non-empty list of base64 strings")
            if len(items) > settings.max_batch_images:
                raise ClientError(413, "payload_too_large",
                                  f"{len(items)} images exceed the limit of "
                                  f"{settings.max_batch_images} per request")
            return [from_base64(t, f"images[{i}]", model, settings) for i, t in enumerate(items)]
        if "image" in payload:
            return [from_base64(payload["image"], "image", model, settings)]
        if "pixels" in payload:
            return [from_pixels(payload["pixels"], model)]
        raise ClientError(422, "validation_error",
                          "the JSON body needs 'image' (base64) or 'pixels' (an array)")
    allowed = ("multipart/form-data or application/json" if batch else
               "multipart/form-data, image/png, image/jpeg or application/json")
    raise ClientError(415, "unsupported_media_type",
                      f"content type {ctype or '(none)'!r} is not accepted; send {allowed}")


async def images_from_request(request: Any, *, batch: bool, model: Any,
                              settings: ServeSettings) -> list[np.ndarray]:
    """The images of a request of any accepted form (multipart read here, the others by
    :func:`images_from_body`)."""
    ctype = content_type(request.scope)
    if ctype != "multipart/form-data":
        return images_from_body(ctype, await request.body(), batch=batch, model=model,
                                settings=settings)
    try:
        form = await request.form(max_files=settings.max_batch_images, max_fields=10)
    except Exception as e:  # python-multipart's parse errors have no common base class
        raise ClientError(400, "bad_request", f"unreadable multipart body: {e}") from e
    try:
        field_name = "files" if batch else "file"
        uploads = form.getlist(field_name) or form.getlist("file")
        if not uploads:
            raise ClientError(422, "validation_error",
                              f"multipart body has no '{field_name}' field with an image")
        out = []
        for up in uploads:
            if isinstance(up, str):
                raise ClientError(422, "validation_error", "the file field must be a file")
            out.append(decode_image(await up.read(), up.filename or "upload", model, settings))
        return out
    finally:
        await form.close()  # the spooled upload files
