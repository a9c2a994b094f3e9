"""``POST /v1/feedback``: a user confirms or corrects one of the service's recent predictions."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field, StrictInt, StrictStr, model_validator

from cnnlab.feedback.store import Feedback, png_bytes
from cnnlab.serve.dependencies import State
from cnnlab.serve.errors import ClientError

__all__ = ["FeedbackRequest", "router"]

router = APIRouter(tags=["feedback"])


class FeedbackRequest(BaseModel):
    """The true class of a prediction, by name (``label``), by its index in ``/v1/model``'s
    ``classes`` (``index``), or both, which must then name the same class."""

    prediction_id: StrictStr = Field(description="the prediction_id of a /v1/predict answer")
    label: StrictStr | None = Field(None, description="the true class's name", examples=["7"])
    index: StrictInt | None = Field(None, ge=0, description="the true class's index in the "
                                    "model's classes", examples=[7])

    model_config = {"json_schema_extra": {"examples": [
        {"prediction_id": "3f2a9c0d5e7b41a8b6c2d9e0f1a2b3c4", "label": "7"}]}}

    @model_validator(mode="after")
    def _names_a_class(self) -> FeedbackRequest:
        if self.label is None and self.index is None:
            raise ValueError("send the true class as 'label' (its name) or 'index' (its "
                             "position in the model's classes)")
        return self


class FeedbackStored(BaseModel):
    stored: bool
    prediction_id: str
    predicted: str = Field(description="what the model answered")
    label: str = Field(description="the true class, as stored")
    index: int = Field(description="the true class's index in the model's classes")
    model_version: str = Field(description="the version that made the prediction")


def true_label(body: FeedbackRequest, classes: list[str]) -> str:
    """The class ``body`` names among ``classes`` (the predicting model's).

    Raises:
        ClientError: 422 for an unknown label, an index out of range, or both given and
            naming different classes.
    """
    if body.index is not None and body.index >= len(classes):
        raise ClientError(422, "validation_error",
                          f"index {body.index} is out of range: the model has {len(classes)} "
                          f"classes (0-{len(classes) - 1})")
    if body.label is None:
        assert body.index is not None  # FeedbackRequest asks for one of the two
        return classes[body.index]
    if body.label not in classes:
        raise ClientError(422, "validation_error",
                          f"label {body.label!r} is not one of the model's classes {classes}")
    if body.index is not None and classes[body.index] != body.label:
        raise ClientError(422, "validation_error",
                          f"label {body.label!r} and index {body.index} "
                          f"({classes[body.index]!r}) name different classes; send one, or "
                          "both for the same class")
    return body.label


@router.post("/v1/feedback", status_code=201, response_model=FeedbackStored, responses={
    404: {"description": "no recent prediction has this id"},
    409: {"description": "the prediction already has feedback"},
    422: {"description": "not a class of the model, or label and index disagree"}})
async def feedback(body: FeedbackRequest, state: State) -> dict[str, Any]:
    """Store the true class of a recent prediction, with the input the model saw."""
    pred = state.recent.get(body.prediction_id)
    if pred is None:
        raise ClientError(404, "not_found",
                          f"no recent prediction has id {body.prediction_id!r} (feedback is "
                          f"taken for the last {state.settings.remember:,} predictions of this "
                          "service)")
    label = true_label(body, pred["classes"])
    fb = Feedback(prediction_id=body.prediction_id, predicted=pred["label"], label=label,
                  model_version=pred["model_version"], created=time.time(),
                  image_png=png_bytes(pred["input"]))
    # a second feedback raises DuplicateFeedback: 409 (cnnlab.serve.errors.STATUS_BY_ERROR)
    await asyncio.get_running_loop().run_in_executor(None, state.store.add, fb)
    state.metrics.feedback(confirmed=fb.predicted == fb.label)
    return {"stored": True, "prediction_id": fb.prediction_id, "predicted": fb.predicted,
            "label": label, "index": pred["classes"].index(label),
            "model_version": fb.model_version}
