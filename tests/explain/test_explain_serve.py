"""POST /v1/explain: the input forms and error contract of /v1/predict, the attribution on the
model's input grid."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from cnnlab.serve.app import ServeSettings, create_app
from synth import make_png


@pytest.fixture(scope="module")
def client(abc_run: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    db = tmp_path_factory.mktemp("explain-store") / "feedback.db"
    app = create_app(ServeSettings(checkpoint=str(abc_run), engine="torch",
                                   feedback_url=f"sqlite:///{db}"))
    with TestClient(app) as c:
        yield c


def _forms(png: bytes) -> dict[str, dict]:
    return {
        "raw": {"content": png, "headers": {"content-type": "image/png"}},
        "multipart": {"files": {"file": ("d.png", png, "image/png")}},
        "base64": {"json": {"image": base64.b64encode(png).decode()}},
    }


@pytest.mark.parametrize("form", ["raw", "multipart", "base64"])
@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_every_input_form(client: TestClient, form: str, method: str) -> None:
    png = make_png()
    r = client.post(f"/v1/explain?method={method}", **_forms(png)[form])
    assert r.status_code == 200, r.text
    body = r.json()
    predicted = client.post("/v1/predict", **_forms(png)[form]).json()
    assert body["label"] == predicted["label"] and body["explained"] == body["label"]
    heat, seen = np.array(body["attribution"]), np.array(body["input"])
    assert heat.shape == (28, 28) and seen.shape == (28, 28)
    assert np.array_equal(seen, np.array(client.post("/v1/predict?include_input=true",
                                                     **_forms(png)[form]).json()["input"]))
    assert np.isclose(np.abs(heat).max(), 1.0) and body["scale"] > 0
    assert body["method"] == method and body["latency_ms"] > 0
    # deterministic
    assert client.post(f"/v1/explain?method={method}", **_forms(png)[form]).json()[
        "attribution"] == body["attribution"]


def test_pixels_and_a_chosen_target(client: TestClient) -> None:
    seen = client.post("/v1/predict?include_input=true", content=make_png(),
                       headers={"content-type": "image/png"}).json()["input"]
    r = client.post("/v1/explain?method=ig&target=c", json={"pixels": seen})
    assert r.status_code == 200, r.text
    assert r.json()["explained"] == "c" and r.json()["input"] == seen
    assert client.post("/v1/explain?target=1", json={"pixels": seen}).json()["explained"] == "b"


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"content": b"not an image", "headers": {"content-type": "image/png"}}, 400),
    ({"content": b"", "headers": {"content-type": "image/png"}}, 400),
    ({"content": b"{", "headers": {"content-type": "application/json"}}, 400),
    ({"json": {"nothing": 1}}, 422),
    ({"json": {"pixels": [[1, 2], [3]]}}, 422),
    ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415),
])
def test_the_error_contract_of_predict(client: TestClient, kwargs: dict, status: int) -> None:
    explained = client.post("/v1/explain", **kwargs)
    predicted = client.post("/v1/predict", **kwargs)
    assert explained.status_code == predicted.status_code == status
    assert set(explained.json()) == {"error"}
    assert explained.json()["error"]["type"] == predicted.json()["error"]["type"]


def test_unknown_method_and_target(client: TestClient) -> None:
    png = make_png()
    r = client.post("/v1/explain?method=gradcm", content=png,
                    headers={"content-type": "image/png"})
    assert r.status_code == 422
    assert "did you mean 'gradcam'" in r.json()["error"]["message"]
    r = client.post("/v1/explain?target=zebra", content=png,
                    headers={"content-type": "image/png"})
    assert r.status_code == 422 and "unknown class 'zebra'" in r.json()["error"]["message"]


def test_documented_on_openapi(client: TestClient) -> None:
    spec = json.loads(client.get("/openapi.json").text)
    assert "/v1/explain" in spec["paths"]
    params = {p["name"] for p in spec["paths"]["/v1/explain"]["post"]["parameters"]}
    assert params == {"method", "target"}
