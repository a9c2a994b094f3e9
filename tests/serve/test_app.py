"""The prediction service: every endpoint, every input form, and the errors clients cause."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cnnlab.serve.app import ServeSettings, create_app
from synth import make_png


@pytest.fixture(scope="module")
def client(run_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    db = tmp_path_factory.mktemp("store") / "feedback.db"
    app = create_app(ServeSettings(checkpoint=str(run_dir), engine="torch",
                                   max_body_bytes=200_000, max_pixels=1_000_000,
                                   feedback_url=f"sqlite:///{db}"))
    with TestClient(app) as c:
        yield c


def _check_prediction(body: dict) -> None:
    assert body["label"] in ("a", "b", "c")
    assert set(body["probabilities"]) == {"a", "b", "c"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["top_k"][0]["label"] == body["label"]
    assert len(body["prediction_id"]) == 32 and body["model_version"]
    assert body["latency_ms"] >= 0


def test_predict_in_every_form(client: TestClient) -> None:
    png = make_png()
    r = client.post("/v1/predict", files={"file": ("d.png", png, "image/png")})
    assert r.status_code == 200, r.text
    _check_prediction(r.json())
    first = r.json()
    r = client.post("/v1/predict", content=png, headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()["label"] == first["label"]
    r = client.post("/v1/predict", json={"image": base64.b64encode(png).decode()})
    assert r.status_code == 200 and r.json()["probabilities"] == first["probabilities"]
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    assert client.post("/v1/predict", json={"image": data_url}).json()["label"] == first["label"]
    pixels = np.zeros((28, 28))
    pixels[8:20, 8:20] = 230
    r = client.post("/v1/predict?include_input=true", json={"pixels": pixels.tolist()})
    assert r.status_code == 200
    assert len(r.json()["input"]) == 28 and len(r.json()["input"][0]) == 28
    assert "input" not in first  # only when asked for
    assert r.json()["prediction_id"] != first["prediction_id"]


def test_batch(client: TestClient) -> None:
    png = base64.b64encode(make_png()).decode()
    r = client.post("/v1/predict/batch", json={"images": [png, png, png]})
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert len(preds) == 3 and len({p["prediction_id"] for p in preds}) == 3
    r = client.post("/v1/predict/batch", files=[("files", ("a.png", make_png(), "image/png")),
                                                ("files", ("b.png", make_png(), "image/png"))])
    assert r.status_code == 200 and len(r.json()["predictions"]) == 2


def test_health_model_metrics_docs(client: TestClient) -> None:
    assert client.get("/v1/health").json()["status"] == "ok"
    info = client.get("/v1/model").json()
    assert info["classes"] == ["a", "b", "c"] and info["input"]["height"] == 28
    assert info["engine"] == "torch"
    client.post("/v1/predict", json={"image": base64.b64encode(make_png()).decode()})
    text = client.get("/metrics").text
    assert 'cnnlab_requests_total{path="/v1/predict",status="200"}' in text
    assert "cnnlab_request_latency_seconds_bucket" in text
    assert "cnnlab_predictions_total{label=" in text
    assert client.get("/docs").status_code == 200
    assert client.get("/openapi.json").json()["info"]["title"] == "cnnlab"


@pytest.mark.parametrize(("kwargs", "status", "kind"), [
    ({"content": b"", "headers": {"content-type": "image/png"}}, 400, "bad_image"),
    ({"content": b"this is text", "headers": {"content-type": "image/png"}}, 400, "bad_image"),
    ({"content": make_png()[:40], "headers": {"content-type": "image/png"}}, 400, "bad_image"),
    ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 415,
     "unsupported_media_type"),
    ({"content": b"x" * 300_000, "headers": {"content-type": "image/png"}}, 413,
     "payload_too_large"),
    ({"json": {"image": "not base64!"}}, 400, "bad_image"),
    ({"json": {"picture": "x"}}, 422, "validation_error"),
    ({"json": {"pixels": [[1, 2], [3]]}}, 422, "validation_error"),
    ({"json": {"pixels": np.zeros((5, 5)).tolist()}}, 422, "validation_error"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
     "bad_request"),
    ({"files": {"other": ("d.png", b"x", "image/png")}}, 422, "validation_error"),
])
def test_client_errors_get_4xx_with_one_body_shape(client: TestClient, kwargs: dict,
                                                   status: int, kind: str) -> None:
    r = client.post("/v1/predict", **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["type"] == kind
    assert body["error"]["message"]


def _samples(text: str, name: str) -> dict[str, float]:
    """The values of metric ``name`` in Prometheus text, keyed by their label set ("" for
    none)."""
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, value = line.rsplit(" ", 1)
        metric, _, labels = key.partition("{")
        if metric == name:
            out[labels.rstrip("}")] = float(value)
    return out


def test_decompression_bomb_and_unknown_path(client: TestClient) -> None:
    before = client.get("/metrics").text
    big = io.BytesIO()
    Image.new("L", (2000, 2000)).save(big, format="PNG")  # 4 M pixels > the 1 M limit
    r = client.post("/v1/predict", content=big.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]["message"]
    r = client.get("/v1/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    assert client.get("/v1/health").status_code == 200  # still serving
    after = client.get("/metrics").text
    # the two failed requests, and nothing else (the health check and the first /metrics
    # answered 200), are counted as errors, each under its path and status
    errors = _samples(after, "cnnlab_errors_total")
    assert set(errors) == {""}
    assert errors[""] - _samples(before, "cnnlab_errors_total")[""] == 2
    requests = _samples(after, "cnnlab_requests_total")
    earlier = _samples(before, "cnnlab_requests_total")
    for labels in ('path="/v1/predict",status="413"', 'path="other",status="404"'):
        assert requests[labels] - earlier.get(labels, 0) == 1, labels
    assert errors[""] == sum(n for labels, n in requests.items()
                             if int(labels.rsplit('status="', 1)[1].rstrip('"')) >= 400)


def test_feedback_is_stored_once(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/v1/predict", json={"image": base64.b64encode(make_png()).decode()})
    pred = r.json()
    other = next(c for c in ("a", "b", "c") if c != pred["label"])
    r = client.post("/v1/feedback", json={"prediction_id": pred["prediction_id"],
                                          "label": other})
    assert r.status_code == 201, r.text
    assert r.json()["predicted"] == pred["label"] and r.json()["label"] == other
    r = client.post("/v1/feedback", json={"prediction_id": pred["prediction_id"],
                                          "label": other})
    assert r.status_code == 409 and r.json()["error"]["type"] == "duplicate"
    r = client.post("/v1/feedback", json={"prediction_id": "f" * 32, "label": "a"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
    r = client.post("/v1/feedback", json={"prediction_id": pred["prediction_id"],
                                          "label": "z"})
    assert r.status_code == 422 and "not one of the model's classes" in r.text
    assert client.post("/v1/feedback", json={"label": "a"}).status_code == 422
    # in the store, with the input the model saw
    store = client.app.state.service.store  # type: ignore[attr-defined]
    rows = [row for row in store.rows() if row.prediction_id == pred["prediction_id"]]
    assert len(rows) == 1 and rows[0].label == other and rows[0].predicted == pred["label"]
    img = Image.open(io.BytesIO(rows[0].image_png))
    assert img.size == (28, 28)
    counts = store.export(tmp_path / "fb")
    assert counts[other] >= 1
    assert (tmp_path / "fb" / other / f"{pred['prediction_id']}.png").is_file()
    stats = store.stats()
    assert stats["feedback"] >= 1 and stats["corrected"] >= 1
    text = client.get("/metrics").text
    assert 'cnnlab_feedback_total{result="corrected"}' in text
    assert "cnnlab_feedback_accuracy" in text


def test_the_web_page(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for part in ('id="pad"', "touchstart", 'id="seen"', "/v1/predict", "/v1/feedback",
                 'type="file"', "ondrop"):
        assert part in page, part
    assert "http://" not in page and "https://" not in page  # nothing beyond the service


def test_drift_in_metrics_and_class_counts_in_checkpoints(client: TestClient,
                                                          run_dir: Path) -> None:
    import cnnlab

    counts = cnnlab.load(run_dir).metrics["train_class_counts"]
    assert set(counts) == {"a", "b", "c"} and sum(counts.values()) > 0
    client.post("/v1/predict", json={"image": base64.b64encode(make_png()).decode()})
    line = next(ln for ln in client.get("/metrics").text.splitlines()
                if ln.startswith("cnnlab_prediction_drift "))
    assert 0.0 <= float(line.split()[1]) <= 1.0


def test_feedback_by_index_or_label_which_must_agree(client: TestClient) -> None:
    classes = client.get("/v1/model").json()["classes"]

    def prediction_id() -> str:
        r = client.post("/v1/predict", json={"image": base64.b64encode(make_png()).decode()})
        return r.json()["prediction_id"]

    r = client.post("/v1/feedback", json={"prediction_id": prediction_id(), "index": 2})
    assert r.status_code == 201, r.text
    assert r.json()["label"] == classes[2] and r.json()["index"] == 2
    r = client.post("/v1/feedback", json={"prediction_id": prediction_id(), "label": classes[1],
                                          "index": 1})
    assert r.status_code == 201 and r.json()["label"] == classes[1]
    pid = prediction_id()
    for body, words in [({"label": classes[0], "index": 1}, "name different classes"),
                        ({"index": 3}, "out of range"),
                        ({}, "'label' (its name) or 'index'"),
                        ({"label": 1}, "label"),
                        ({"index": -1}, "index")]:
        r = client.post("/v1/feedback", json={"prediction_id": pid, **body})
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["type"] == "validation_error" and words in r.text, body
    r = client.post("/v1/feedback", content=b"{not json",
                    headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "bad_request"
    # none of the refused ones was stored: the prediction still takes its feedback
    assert client.post("/v1/feedback", json={"prediction_id": pid, "index": 0}).status_code == 201


def test_openapi_documents_the_request_models(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert set(schemas["FeedbackRequest"]["properties"]) == {"prediction_id", "label", "index"}
    assert "path" in schemas["ReloadRequest"]["properties"]
    reload = spec["paths"]["/v1/admin/reload"]["post"]
    assert reload["security"] and "bearer" in str(spec["components"]["securitySchemes"]).lower()
    predict = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/png", "image/jpeg", "application/json"} <= set(predict)
    page = client.get("/docs").text
    assert "/static/docs/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    assert client.get("/static/docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static/docs/redoc.standalone.js").status_code == 404  # not served


def test_statuses_come_from_exception_types() -> None:
    from cnnlab.errors import DataError, ImageTooLargeError
    from cnnlab.feedback.store import DuplicateFeedback
    from cnnlab.serve.errors import ClientError, status_of

    assert status_of(ImageTooLargeError("x")) == (413, "payload_too_large")
    assert status_of(DuplicateFeedback("x")) == (409, "duplicate")
    # the words of a message choose nothing
    assert status_of(DataError("exceeds the limit; decompression bomb")) is None
    e = ClientError.of(DataError("image: exceeds the limit"), 400, "bad_image")
    assert (e.status, e.kind) == (400, "bad_image")
    e = ClientError.of(ImageTooLargeError("image: 9 pixels"), 400, "bad_image")
    assert (e.status, e.kind, e.message) == (413, "payload_too_large", "image: 9 pixels")


def test_a_bug_is_a_logged_500_and_the_service_goes_on(client: TestClient,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    import cnnlab.serve.state

    def broken(model, images):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug in inference")

    monkeypatch.setattr(cnnlab.serve.state, "probabilities", broken)
    png = make_png()
    with caplog.at_level("ERROR", logger="cnnlab.serve"):
        raw = client.post("/v1/predict", content=png, headers={"content-type": "image/png"})
        form = client.post("/v1/predict", files={"file": ("d.png", png, "image/png")})
    for r in (raw, form):
        assert r.status_code == 500 and r.json()["error"]["type"] == "internal_error"
        assert "a bug" not in r.text  # the details go to the log, not to the client
    logged = [rec for rec in caplog.records if rec.exc_info]
    assert len(logged) == 2
    assert all("a bug in inference" in str(rec.exc_info[1]) for rec in logged)
    monkeypatch.undo()
    assert client.post("/v1/predict", content=png,
                       headers={"content-type": "image/png"}).status_code == 200
