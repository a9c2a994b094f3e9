"""``POST /v1/explain``: what a prediction rests on, on the model's input grid.

The same input forms and error contract as ``/v1/predict`` (:mod:`cnnlab.serve.decode`
reads them); the answer carries the attribution of the explained class (default: the
predicted one) as an H x W array over the input the model saw, scaled so its largest
magnitude is 1, and that input. The web page's "why" toggle overlays one on the other.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from cnnlab.errors import CnnlabError
from cnnlab.serve.decode import images_from_request
from cnnlab.serve.dependencies import State
from cnnlab.serve.errors import ClientError, dumps
from cnnlab.serve.routers.predict import _ERRORS, _PREDICT_BODY

__all__ = ["explain_one", "router"]

router = APIRouter(tags=["explain"])
# Captum hooks the model's modules while it computes: one explanation at a time per process
_LOCK = threading.Lock()


class Explanation(BaseModel):
    """One image's explanation (documentation only: answers are encoded without validation)."""

    method: str = Field(description="gradcam | ig | saliency | occlusion | guided-gradcam")
    label: str = Field(description="the predicted class")
    probability: float = Field(description="the predicted class's probability")
    explained: str = Field(description="the class whose evidence the attribution shows")
    attribution: list[list[float]] = Field(
        description="H x W on the model's input grid, summed over channels, scaled so the "
                    "largest magnitude is 1 (positive: evidence for the explained class)")
    scale: float = Field(description="the largest magnitude before scaling")
    input: list[list[int]] | None = Field(
        description="the H x W input the model saw (0-255; null for colour models)")
    model_version: str
    latency_ms: float


def explain_one(model: Any, x: np.ndarray, method: str, target: str | None) -> dict[str, Any]:
    """The answer's fields for one uint8 input ``x`` (C, H, W) of ``model``.

    Raises:
        ClientError: 422 for an unknown method (with "did you mean"), one the model cannot
            run, or an unknown target class.
    """
    import torch

    from cnnlab.explain import Explainer, check_method, heatmap
    from cnnlab.explain.images import parse_target

    try:
        explainer = Explainer.for_model(model)
        check_method(method, explainer.cam_layer, explainer.model_name)
        index = parse_target(target, list(model.classes))
    except CnnlabError as e:
        raise ClientError.of(e, 422, "validation_error") from e
    batch = torch.tensor(np.asarray(x)).unsqueeze(0)  # a copy: decoded arrays may be read-only
    with _LOCK:
        probs = explainer.predict(batch)[0]
        pred = int(probs.argmax())
        explained = pred if index is None else index
        heat = heatmap(explainer.attribute(batch, [explained], method))[0]
    scale = float(np.abs(heat).max())
    scaled = heat / scale if scale > 0 else heat
    classes = list(model.classes)
    return {"method": method, "label": classes[pred], "probability": round(float(probs[pred]), 6),
            "explained": classes[explained],
            "attribution": np.round(scaled, 4).tolist(), "scale": scale,
            "input": x[0].tolist() if x.shape[0] == 1 else None}


@router.post("/v1/explain", response_model=Explanation, openapi_extra=_PREDICT_BODY,
             responses=_ERRORS)
async def explain(request: Request, state: State, method: str = "gradcam",
                  target: str | None = None) -> Response:
    """Explain one image's prediction (the same input forms as ``/v1/predict``): ``method``
    (gradcam, ig, saliency, occlusion, guided-gradcam) and ``target`` (a class name or index;
    default: the predicted class)."""
    t0 = time.perf_counter()
    model = state.model  # the model of this request, even if a reload comes meanwhile
    (x,) = await images_from_request(request, state, batch=False)
    out = await asyncio.get_running_loop().run_in_executor(
        None, explain_one, model, x, method, target)
    out["model_version"] = state.version
    out["latency_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    return Response(dumps(out), media_type="application/json")
