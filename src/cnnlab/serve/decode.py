"""Request bodies to model inputs: every form ``/v1/predict`` and ``/v1/predict/batch`` accept.

A raw ``image/png`` or ``image/jpeg`` body, multipart ``file``/``files``, or JSON
``{"image": "<base64 or data URL>"}``, ``{"pixels": [[...]]}`` or ``{"images": [...]}``. Each
image is decoded by :func:`cnnlab.data.read_image` (bounded against decompression bombs) and
brought to the model's input by the model's own preprocessing, so the service sees a file
exactly as ``predict`` does. Client mistakes raise :class:`~cnnlab.serve.errors.ClientError`.

Bounds, in the order they apply:

- the body: at most ``max_body_bytes``, counted while it is read (:mod:`.middleware`);
  multipart bodies also at most one file for ``/v1/predict``, ``max_batch_images`` for a
  batch, 10 fields and 64 kB per non-file field;
- the pixels: each image's header is read first (no pixel decoded): more than
  ``max_pixels`` in one image or ``max_request_pixels`` in all of a request's images is a
  413;
- the memory: an image over ``reduce_above_pixels`` is shrunk while it is decoded (JPEG's
  decoder scales itself, others by :meth:`PIL.Image.Image.reduce`) before any conversion to
  floats, so what the preprocessing allocates follows the reduced size;
- the event loop: a request whose body is over 64 kB or whose images have over
  ``inline_decode_pixels`` pixels is decoded on the worker threads of
  :class:`~cnnlab.serve.pool.DecodePool`, within ``decode_timeout_s`` (503 past it); small
  ones, nearly every request, are decoded in the loop, where a thread hand-off would cost
  more than the decoding.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from cnnlab.data import read_image
from cnnlab.errors import CnnlabError
from cnnlab.serve.errors import ClientError
from cnnlab.serve.state import ServeSettings, ServiceState

__all__ = ["INLINE_BODY_BYTES", "Pixels", "content_type", "decode_image", "decode_sources",
           "from_base64", "from_pixels", "image_size", "images_from_body",
           "images_from_request", "parse_body"]

# bodies up to this size are parsed in the event loop (a 28x28 digit as a PNG is ~0.3 kB, as
# JSON pixels ~3 kB); larger ones, JSON parsing included, on the decode workers
INLINE_BODY_BYTES = 64 * 1024
_MAX_FORM_FIELDS = 10
_MAX_FIELD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Pixels:
    """A JSON ``pixels`` array, not yet checked."""

    value: Any


# one image of a request: its name in errors, and its encoded bytes or its pixels
Source = tuple[str, "bytes | Pixels"]


def content_type(scope: Any) -> str:
    """The request's media type, lower case, without parameters."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.decode("latin-1").split(";")[0].strip().lower()
    return ""


def image_size(data: bytes) -> tuple[int, int] | None:
    """The (width, height) an encoded image's header claims (nothing decoded), or None when
    Pillow cannot read a header: the decoder then says what is wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.size
    except Image.DecompressionBombError:
        return (2**31, 2**31)  # over any limit: refused below
    except Exception:
        return None


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
        image = read_image(data, name=name, max_pixels=settings.max_pixels,
                           reduce_above=settings.reduce_above_pixels)
        return model.input_array(image)
    except CnnlabError as e:  # ImageTooLargeError is a 413 (errors.STATUS_BY_ERROR)
        raise ClientError.of(e, 400, "bad_image") from e


def from_pixels(pixels: Any, model: Any) -> np.ndarray:
    """A JSON array (H x W or C x H x W, 0-255 or 0-1) as the model's input.

    Raises:
        ClientError: 422 for anything but a finite numeric array of the model's size.
    """
    spec = model.input_spec
    want = f"({spec.height}, {spec.width}) or ({spec.channels}, {spec.height}, {spec.width})"
    try:
        arr = np.asarray(pixels, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as e:  # ragged, strings, ints past float
        raise ClientError(422, "validation_error", f"pixels must be a numeric array of shape "
                          f"{want}, of numbers 0-255 or 0-1") from e
    if arr.ndim not in (2, 3) or not np.isfinite(arr).all():
        raise ClientError(422, "validation_error",
                          f"pixels must be a finite array of shape {want}; got shape "
                          f"{arr.shape}")
    if arr.max(initial=0) > 1.0:
        arr = arr.clip(0, 255).astype(np.uint8)
    else:
        arr = arr.clip(0, 1).astype(np.float32)
    try:
        return model.input_array(arr)
    except CnnlabError as e:  # an array of another size: the schema is wrong, not the image
        raise ClientError.of(e, 422, "validation_error") from e


def from_base64(text: Any, name: str) -> bytes:
    """The bytes of a base64 string (or a browser's data URL).

    Raises:
        ClientError: 422 if ``text`` is not a string, 400 if it is not base64.
    """
    if not isinstance(text, str):
        raise ClientError(422, "validation_error", f"{name} must be a base64 string")
    if "," in text[:100] and text.startswith("data:"):
        text = text.split(",", 1)[1]  # a data URL from a browser
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ClientError(400, "bad_image", f"{name} is not valid base64") from e


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except RecursionError as e:  # nested deeper than the parser's stack
        raise ClientError(400, "bad_request", "the body is not usable JSON: it is nested too "
                          "deeply") from e
    except ValueError as e:  # UnicodeDecodeError included
        raise ClientError(400, "bad_request", f"the body is not valid JSON: {e}") from e


def parse_body(ctype: str, body: bytes, *, batch: bool, settings: ServeSettings
               ) -> list[Source]:
    """The images of a raw image or JSON body (``ctype`` without parameters), undecoded.

    Raises:
        ClientError: 415 for another content type, 400 for JSON that does not parse or
            base64 that does not decode, 422 for JSON of the wrong shape, 413 for too many
            images.
    """
    if ctype in ("image/png", "image/jpeg") and not batch:
        return [("body", body)]
    if ctype == "application/json":
        payload = _json(body)
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
            return [(f"images[{i}]", from_base64(t, f"images[{i}]"))
                    for i, t in enumerate(items)]
        if "image" in payload:
            return [("image", from_base64(payload["image"], "image"))]
        if "pixels" in payload:
            return [("pixels", Pixels(payload["pixels"]))]
        raise ClientError(422, "validation_error",
                          "the JSON body needs 'image' (base64) or 'pixels' (an array)")
    allowed = ("multipart/form-data or application/json" if batch else
               "multipart/form-data, image/png, image/jpeg or application/json")
    raise ClientError(415, "unsupported_media_type",
                      f"content type {ctype or '(none)'!r} is not accepted; send {allowed}")


def _claimed_pixels(sources: list[Source], settings: ServeSettings) -> list[int | None]:
    """Each encoded image's pixel count from its header; refuses a request over the pixel
    limits before anything is decoded.

    Raises:
        ClientError: 413 for one image over ``max_pixels`` or all of them over
            ``max_request_pixels``.
    """
    sizes = [image_size(s) if isinstance(s, bytes) else None for _, s in sources]
    claimed = [size[0] * size[1] if size else None for size in sizes]
    for (name, _), size in zip(sources, sizes, strict=True):
        if size is not None and size[0] * size[1] > settings.max_pixels:
            raise ClientError(413, "payload_too_large",
                              f"{name}: image of {size[0]}x{size[1]} = {size[0] * size[1]:,} "
                              f"pixels exceeds the limit of {settings.max_pixels:,}; scale it "
                              "down first")
    total = sum(n or 0 for n in claimed)
    if total > settings.max_request_pixels:
        raise ClientError(413, "payload_too_large",
                          f"the request's {len(sources)} images have {total:,} pixels in "
                          f"all, over the limit of {settings.max_request_pixels:,} per "
                          "request; send fewer or smaller images")
    return claimed


def decode_sources(sources: list[Source], model: Any, settings: ServeSettings
                   ) -> list[np.ndarray]:
    """Every image of a request as the model's input, after the pixel limits' check."""
    _claimed_pixels(sources, settings)
    return [from_pixels(s.value, model) if isinstance(s, Pixels)
            else decode_image(s, name, model, settings) for name, s in sources]


def _parse_and_decode(ctype: str, body: bytes, batch: bool, model: Any,
                      settings: ServeSettings) -> list[np.ndarray]:
    return decode_sources(parse_body(ctype, body, batch=batch, settings=settings), model,
                          settings)


async def _decode(state: ServiceState, sources: list[Source]) -> list[np.ndarray]:
    model, settings = state.model, state.settings  # the model of the time the request came
    claimed = _claimed_pixels(sources, settings)
    if sum(n or 0 for n in claimed) <= settings.inline_decode_pixels:
        return decode_sources(sources, model, settings)
    return await state.decoder.run(decode_sources, sources, model, settings)


async def images_from_body(state: ServiceState, ctype: str, body: bytes, *, batch: bool
                           ) -> list[np.ndarray]:
    """The images of a raw image or JSON body as model inputs; large bodies and large
    images are parsed and decoded on the decode workers.

    Raises:
        ClientError: what :func:`parse_body` and the decoders raise; 503 past the time
            budget.
    """
    if len(body) > INLINE_BODY_BYTES:
        return await state.decoder.run(_parse_and_decode, ctype, body, batch, state.model,
                                       state.settings)
    return await _decode(state, parse_body(ctype, body, batch=batch, settings=state.settings))


async def images_from_request(request: Any, state: ServiceState, *, batch: bool
                              ) -> list[np.ndarray]:
    """The images of a request of any accepted form (multipart read here, the others by
    :func:`images_from_body`)."""
    settings = state.settings
    ctype = content_type(request.scope)
    if ctype != "multipart/form-data":
        return await images_from_body(state, ctype, await request.body(), batch=batch)
    field_name = "files" if batch else "file"
    # the whole body first (held to the limit by the guard's receive), then the form parsed
    # from it: Starlette's parser closes its spooled files only on its own errors, not on
    # one raised by receive() mid-body
    await request.body()
    try:
        form = await request.form(max_files=settings.max_batch_images if batch else 1,
                                  max_fields=_MAX_FORM_FIELDS, max_part_size=_MAX_FIELD_BYTES)
    except Exception as e:  # python-multipart's parse errors have no common base class
        detail = getattr(e, "detail", None) or e
        hint = "" if batch else f" (send one image, in the field '{field_name}')"
        raise ClientError(400, "bad_request", f"unreadable multipart body: {detail}{hint}"
                          ) from e
    try:
        uploads = form.getlist(field_name) or form.getlist("file")
        if not uploads:
            raise ClientError(422, "validation_error",
                              f"multipart body has no '{field_name}' field with an image")
        sources: list[Source] = []
        for up in uploads:
            if isinstance(up, str):
                raise ClientError(422, "validation_error", "the file field must be a file")
            sources.append((up.filename or "upload", await up.read()))
    finally:
        await form.close()  # the spooled upload files
    return await _decode(state, sources)
