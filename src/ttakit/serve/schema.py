"""The shapes of the server's requests and answers, for the OpenAPI document
(``/docs``, ``/openapi.json``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. overloaded, invalid_image")
    message: str
    details: list[dict] | None = Field(None, description="per-image problems, when every image failed")


class ErrorBody(BaseModel):
    error: ErrorDetail


class TopK(BaseModel):
    label: int
    prob: float
    class_: str | None = Field(None, alias="class")


class ImageError(BaseModel):
    code: str
    message: str


class Prediction(BaseModel):
    index: int = Field(description="position of the image in the request")
    name: str = Field(description="the file name or the JSON body's name as sent, else #index")
    policy_id: str
    label: int | None = None
    class_: str | None = Field(None, alias="class")
    top_k: list[TopK] | None = None
    entropy: float | None = Field(None, description="predictive entropy of the merged probabilities (nats)")
    agreement: float | None = Field(None, description="weighted share of views whose top class is the label")
    views: int | None = Field(None, description="distinct views run for this image")
    degraded: bool | None = Field(None, description="a shorter prefix of the policy was run (deep queue)")
    error: ImageError | None = Field(None, description="why this image failed (the others are still predicted)")


class PredictResponse(BaseModel):
    model: str
    policy_id: str
    views: int
    degraded: bool
    failed: int
    predictions: list[Prediction]


class Health(BaseModel):
    status: str


class PolicyInfo(BaseModel):
    policy_id: str
    spec: str
    views: list[str]
    weights: list[float]
    merge: str
    forward_passes_per_input: int
    description: str
    classes: list[str] | None
    input: dict
    limits: dict
    batching: dict
    degrade: dict | None
    model: str


_image = {"oneOf": [
    {"type": "string", "description": "base64 of an image file (PNG, JPEG...), or a data: URL"},
    {"type": "array", "description": "nested (H, W, C) array: integers 0-255 or floats in [0, 1]",
     "items": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}},
]}


def request_body(max_images: int) -> dict:
    """The request body of POST /v1/predict, in OpenAPI terms, with the
    server's own ``--max-images``: a request the schema allows is refused
    only for what a schema cannot say (an image that does not decode or is
    over ``--max-pixels``, a body over ``--max-request-bytes``, ``names``
    not one per image)."""
    count = {"minItems": 1, "maxItems": int(max_images)}
    return {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}, **count},
                               "top_k": {"type": "integer", "minimum": 1, "maximum": 1000}},
                "required": ["files"]}},
            "application/json": {"schema": {
                "type": "object",
                "properties": {"images": {"type": "array", "items": _image, **count},
                               "names": {"type": "array", "items": {"type": "string"}, **count},
                               "top_k": {"type": "integer", "minimum": 1, "maximum": 1000}},
                "required": ["images"]}},
        },
    }
