"""``POST /v1/admin/reload``: swap in another model without downtime.

Needs ``Authorization: Bearer $CNNLAB_ADMIN_TOKEN`` (:func:`~cnnlab.serve.dependencies.
require_admin`); off while that variable is unset.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from cnnlab.errors import CnnlabError
from cnnlab.feedback.versions import current_model
from cnnlab.serve.dependencies import State, require_admin
from cnnlab.serve.errors import ClientError
from cnnlab.serve.state import load_for_serving

__all__ = ["ReloadRequest", "router"]

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])


class ReloadRequest(BaseModel):
    path: str | None = Field(None, description="a checkpoint or run directory to serve; "
                             "without it, the model registry's current (promoted) version")


class Reloaded(BaseModel):
    reloaded: bool
    model_version: str
    path: str


@router.post("/v1/admin/reload", response_model=Reloaded, responses={
    401: {"description": "missing or wrong admin token"},
    403: {"description": "admin endpoints are off (CNNLAB_ADMIN_TOKEN unset)"},
    404: {"description": "the registry has no promoted model"},
    422: {"description": "the checkpoint cannot be loaded"}})
async def reload(state: State, body: ReloadRequest | None = None) -> dict[str, Any]:
    """Serve the registry's current (promoted) version, or the checkpoint at ``path``; the
    model in use stays if the new one cannot be loaded."""
    path = body.path if body is not None else None
    if path is None:
        entry = current_model(state.store)
        if entry is None:
            raise ClientError(404, "not_found", "the model registry has no promoted model; "
                              "run `cnnlab retrain` first or send {\"path\": ...}")
        path = entry["path"]
    try:
        new = await asyncio.get_running_loop().run_in_executor(
            None, partial(load_for_serving, path, state.settings))
    except CnnlabError as e:
        raise ClientError(422, "bad_model", str(e)) from e
    state.use_model(new)  # requests from now on use the new model
    return {"reloaded": True, "model_version": state.version, "path": new.path}
