"""The inference API: plain HTTP routes served beside the Gradio page, one request per prediction.

    POST /api/v1/classify        one image: multipart/form-data with the file in field "image", or
                                 the file's bytes as the body (any other Content-Type)
    POST /api/v1/classify_batch  up to MAX_BATCH images: multipart/form-data, files in fields "images"
    GET  /api/v1/openapi.json    the OpenAPI schema of these routes

An answer is `Service.analysis`, the same dict the Gradio /analyse endpoint returns (label,
probabilities, in_distribution, ood_score, ood_threshold, confidence); a batch answers
{"results": [one per image, in order]}. The bytes are decoded by dashboard/uploads.py with the
rules of a page upload (format allow-list, pixel and decoded-size budget, EXIF rotation, one-line
messages). A refusal is a 4xx with {"error": "<one line>"}: 413 for a body over its limit, 422 for
an image that cannot be used (a batch is refused whole, naming the image), 400 for anything else.

Why routes of their own: a prediction through Gradio's queue is three HTTP requests (upload, join,
read the events) and most of its server CPU is that machinery, not the model
(bench/results/load_classify_api.md beside load_classify.md). app.py hands `routes(service)` to
Gradio's FastAPI app (`demo.launch(app_kwargs={"routes": ...})`), so both share one server and port.
"""
from __future__ import annotations

import asyncio

from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse

from dashboard import uploads
from dashboard.service import Service
from imaging.preprocess import InvalidImageError

PREFIX = "/api/v1"
MAX_IMAGE_BYTES = 10 * 2**20     # one image file, here and on the page (app.py's max_file_size)
MAX_BATCH = 64                   # images in one classify_batch request
MAX_BATCH_BYTES = 64 * 2**20     # a whole classify_batch body
NO_ROOTS: list = []              # the API decodes request bytes, never a file named by a request


class ApiError(Exception):
    """A request the API refuses: its HTTP status and a one-line message for the caller."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def too_big(limit: int, what: str) -> ApiError:
    return ApiError(413, f"The {what} is larger than the limit of {limit // 2**20} MiB.")


async def read_body(request: Request, limit: int, what: str) -> bytes:
    """The whole body, refused (413) as soon as it passes `limit` bytes, declared or sent."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_big(limit, what)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big(limit, what)
        chunks.append(chunk)
    return b"".join(chunks)


async def form_files(request: Request, body: bytes, field: str, max_files: int) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each file in `field` of a multipart body already read."""
    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=max_files, max_fields=max_files)
    except (MultiPartException, HTTPException) as e:
        raise ApiError(400, f"The multipart body could not be read: {getattr(e, 'message', None) or e.detail}") from None
    try:
        files = [f for f in form.getlist(field) if not isinstance(f, str)]
        if not files:
            raise ApiError(400, f'Send the image file in the multipart field "{field}".')
        out = []
        for f in files:
            data = await f.read()
            if len(data) > MAX_IMAGE_BYTES:
                raise too_big(MAX_IMAGE_BYTES, f"image {uploads.clip(f.filename)}")
            out.append((f.filename or "", data))
        return out
    finally:
        await form.close()


async def images_of(request: Request, field: str, max_files: int, limit: int) -> list[tuple[str, bytes]]:
    """The (name, bytes) a request carries: multipart files in `field`, or the raw body as one image."""
    body = await read_body(request, limit, "request body")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await form_files(request, body, field, max_files)
    if max_files > 1:
        raise ApiError(400, f'Send the images as multipart/form-data, each in a field "{field}".')
    return [("", body)]


async def analysis_of(service: Service, data: bytes) -> dict:
    seen = await uploads.decode_async(data, NO_ROOTS)
    return service.analysis(await service.assess_async(seen.look, seen.photo, seen.drawing, seen.material))


def refusal(e: Exception) -> JSONResponse:
    if isinstance(e, ApiError):
        return JSONResponse({"error": e.message}, status_code=e.status)
    return JSONResponse({"error": str(e)}, status_code=422)          # InvalidImageError: one sentence


def routes(service: Service) -> list[APIRoute]:
    """The API's routes answering with `service`, for a FastAPI app's `routes`."""
    async def classify(request: Request) -> JSONResponse:
        try:
            [(_, data)] = await images_of(request, "image", 1, MAX_IMAGE_BYTES)
            return JSONResponse(await analysis_of(service, data))
        except (ApiError, InvalidImageError) as e:
            return refusal(e)

    async def classify_batch(request: Request) -> JSONResponse:
        try:
            images = await images_of(request, "images", MAX_BATCH, MAX_BATCH_BYTES)
            if len(images) > MAX_BATCH:
                raise ApiError(400, f"{len(images)} images in one request; the limit is {MAX_BATCH}.")
            answers = await asyncio.gather(*(analysis_of(service, data) for _, data in images),
                                           return_exceptions=True)
            for i, ((name, _), a) in enumerate(zip(images, answers)):
                if isinstance(a, InvalidImageError):
                    raise ApiError(422, f"Image {i + 1} ({uploads.clip(name)}): {a}")
                if isinstance(a, BaseException):
                    raise a
            return JSONResponse({"results": answers})
        except (ApiError, InvalidImageError) as e:
            return refusal(e)

    api = [APIRoute(f"{PREFIX}/classify", classify, methods=["POST"], summary="Classify one garment image",
                    openapi_extra=_body_doc(single=True), responses=_RESPONSES),
           APIRoute(f"{PREFIX}/classify_batch", classify_batch, methods=["POST"],
                    summary=f"Classify up to {MAX_BATCH} garment images", openapi_extra=_body_doc(single=False),
                    responses=_RESPONSES)]
    schema = get_openapi(title="Fashion-MNIST classifier API", version="1", routes=api,
                         description=__doc__.split("\n\n")[0])

    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(schema)

    return [*api, APIRoute(f"{PREFIX}/openapi.json", openapi, methods=["GET"], include_in_schema=False)]


_ERROR = {"content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}}
_RESPONSES = {200: {"description": "Service.analysis per image: label, probabilities, in_distribution, ood_score, "
                                   "ood_threshold, confidence"},
              400: {"description": "malformed request", **_ERROR}, 413: {"description": "body too large", **_ERROR},
              422: {"description": "an image that cannot be used", **_ERROR}}


def _body_doc(single: bool) -> dict:
    binary = {"type": "string", "format": "binary"}
    field = {"image": binary} if single else {"images": {"type": "array", "items": binary, "maxItems": MAX_BATCH}}
    content = {"multipart/form-data": {"schema": {"type": "object", "properties": field,
                                                  "required": list(field)}}}
    if single:
        content["application/octet-stream"] = {"schema": binary}
    return {"requestBody": {"required": True, "content": content}}
