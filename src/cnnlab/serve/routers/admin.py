"""``POST /v1/admin/reload``: swap in another model without downtime.

Needs ``Authorization: Bearer $CNNLAB_ADMIN_TOKEN`` (:func:`~cnnlab.serve.dependencies.
require_admin`); off while that variable is unset. The model comes from the model registry
(:mod:`cnnlab.feedback.versions`): a version by number, or the current champion; only
versions that passed the champion/challenger gate (promoted) are served. A checkpoint path is
taken only from a service started with ``allow_reload_path`` (``--allow-reload-path``), and
then every failure to load one gets the same answer, so the endpoint never tells whether a
path exists.
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field, StrictInt, StrictStr

from cnnlab.feedback.versions import current_model, model_entry
from cnnlab.serve.dependencies import State, require_admin
from cnnlab.serve.errors import ClientError
from cnnlab.serve.state import ServiceState, load_for_serving

__all__ = ["ReloadRequest", "router"]

log = logging.getLogger("cnnlab.serve")

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])


class ReloadRequest(BaseModel):
    """Which model to serve: a registry ``version``, nothing (the current champion), or,
    on a service started with ``--allow-reload-path``, a checkpoint ``path``."""

    version: StrictInt | None = Field(None, ge=1, le=2**31 - 1, description=(
        "a version of the model registry (`cnnlab retrain` registers them); it must have "
        "been promoted"))
    path: StrictStr | None = Field(None, min_length=1, max_length=4096, description=(
        "a checkpoint or run directory; refused unless the service was started with "
        "--allow-reload-path"))

    model_config = {"extra": "forbid"}


class Reloaded(BaseModel):
    reloaded: bool
    model_version: str
    path: str
    registry_version: int | None = Field(description="the registry version now served "
                                         "(null for a path)")


async def _load(state: ServiceState, path: str, what: str) -> Any:
    """The model at ``path``; any failure is a 422 that names ``what``, never the reason
    (which goes to the log): the answer is the same for a missing and a corrupt file."""
    try:
        return await asyncio.get_running_loop().run_in_executor(
            None, partial(load_for_serving, path, state.settings))
    except Exception as e:
        log.warning("admin reload of %s failed: %s: %s", what, type(e).__name__, e)
        raise ClientError(422, "bad_model", f"no model could be loaded from {what}; the "
                          "model in use stays (the server log has the reason)") from None


def _registry_path(state: ServiceState, version: int | None) -> tuple[str, int]:
    """The checkpoint path of a promoted registry version (the newest without one)."""
    if version is None:
        entry = current_model(state.store)
        if entry is None:
            raise ClientError(404, "not_found", "the model registry has no promoted model; "
                              "run `cnnlab retrain` first")
    else:
        entry = model_entry(state.store, version)
        if entry is None:
            raise ClientError(404, "not_found", f"the model registry has no version "
                              f"{version}; `cnnlab feedback` lists its versions")
        if not entry["promoted"]:
            raise ClientError(409, "not_promoted", f"version {version} did not pass the "
                              "champion/challenger gate (it was not better than the model "
                              "it was retrained from), so it is not served")
    return str(entry["path"]), int(entry["version"])


@router.post("/v1/admin/reload", response_model=Reloaded, responses={
    401: {"description": "missing or wrong admin token"},
    403: {"description": "admin endpoints are off (CNNLAB_ADMIN_TOKEN unset), or a path "
                         "was sent to a service started without --allow-reload-path"},
    404: {"description": "no such registry version, or no promoted one"},
    409: {"description": "the version was not promoted"},
    422: {"description": "the request is malformed, or the model cannot be loaded"}})
async def reload(state: State, body: ReloadRequest | None = None) -> dict[str, Any]:
    """Serve a promoted registry version (the newest without ``version``), or with
    ``--allow-reload-path`` a checkpoint ``path``; the model in use stays if the new one
    cannot be loaded."""
    path = body.path if body is not None else None
    version = body.version if body is not None else None
    if path is not None and version is not None:
        raise ClientError(422, "validation_error", "send a registry 'version' or a 'path', "
                          "not both")
    registry_version: int | None = None
    if path is not None:
        if not state.settings.allow_reload_path:
            raise ClientError(403, "forbidden", "reloading from a path is off: send "
                              "{\"version\": N} of the model registry, or start the service "
                              "with --allow-reload-path")
        new = await _load(state, path, "that path")
    else:
        path, registry_version = _registry_path(state, version)
        new = await _load(state, path, f"registry version {registry_version}")
    state.use_model(new)  # requests from now on use the new model
    return {"reloaded": True, "model_version": state.version, "path": new.path,
            "registry_version": registry_version}
