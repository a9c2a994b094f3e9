"""The feedback loop: retrain on feedback, champion against challenger, registry, hot reload.

Each case is built so that the decision is forced by the held-out feedback, which decides under
any rule that also asks the champion's validation (or test) data not to get worse: the
challenger that learned what the feedback teaches is promoted, the one that got worse on the
feedback is not.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from cnnlab.cli.main import main
from cnnlab.feedback.retrain import retrain
from cnnlab.feedback.store import FeedbackStore
from cnnlab.feedback.versions import current_model
from cnnlab.serve.app import ServeSettings, create_app
from synth import learnable_images, make_png

CLASSES = "abc"
ADMIN = {"authorization": "Bearer s3cret"}


def _novel_digits(n: int, seed: int) -> torch.Tensor:
    """``n`` images of a pattern the champion never saw: the bright square in the bottom-right
    cell of the 4x4 grid (the classes a, b, c sit in the top row's first three cells)."""
    images, targets = learnable_images(n_per_class=n, num_classes=16, size=28, seed=seed)
    return images[targets == 15]


def _predict(client: TestClient, image: torch.Tensor) -> dict:
    r = client.post("/v1/predict", json={"pixels": image[0].tolist()})
    assert r.status_code == 200, r.text
    return r.json()


def _give_feedback(client: TestClient, images: torch.Tensor, labels: list[str]) -> list[str]:
    """Predict each image, then tell the service its label; returns the predicted labels."""
    predicted = []
    for image, label in zip(images, labels, strict=True):
        pred = _predict(client, image)
        predicted.append(pred["label"])
        fb = client.post("/v1/feedback", json={"prediction_id": pred["prediction_id"],
                                               "label": label})
        assert fb.status_code == 201, fb.text
    return predicted


def test_a_challenger_that_learned_the_feedback_is_promoted_and_reloaded(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'fb.db'}"
    app = create_app(ServeSettings(checkpoint=str(run_dir), engine="torch", feedback_url=db))
    novel = _novel_digits(20, seed=11)
    with TestClient(app) as client:
        # the feedback teaches the new pattern as the class the champion names least for it,
        # so the champion is wrong on most of it, in training and held-out feedback alike
        seen = [_predict(client, x)["label"] for x in novel]
        taught = min(CLASSES, key=seen.count)
        assert seen.count(taught) <= len(novel) // 3
        _give_feedback(client, novel, [taught] * len(novel))
        before = client.get("/v1/model").json()["version"]

        out = tmp_path / "challenger"
        report = retrain(str(run_dir), db, out, replay=30, epochs=3, progress=False)
        assert report["feedback"] == 20 and report["feedback_held_out"] == 4
        assert report["replay"] <= 30 and (out / "model.pt").is_file()
        held = report["held_out_feedback"]
        assert held["champion"] <= 0.5 and held["challenger"] >= 0.75
        assert report["promoted"] is True
        saved = json.loads((out / "retrain.json").read_text())
        assert saved["promoted"] is True and saved["version"] == report["version"]
        entry = current_model(FeedbackStore(db))
        assert entry is not None and entry["promoted"]
        assert entry["version"] == report["version"]
        assert entry["path"] == str((out / "model.pt").resolve())

        # reload: off without a token, refused with a wrong one, then the registry's
        # current version is swapped in
        assert client.post("/v1/admin/reload").status_code == 403
        monkeypatch.setenv("CNNLAB_ADMIN_TOKEN", "s3cret")
        r = client.post("/v1/admin/reload", headers={"authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        r = client.post("/v1/admin/reload", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert r.json()["path"] == entry["path"]
        after = client.get("/v1/model").json()["version"]
        assert after == r.json()["model_version"] and after != before
        # every part of the app sees the new model: health, metrics, model info, and the
        # multipart and batch routes as well as the fast raw path (below)
        assert client.get("/v1/health").json()["model_version"] == after
        assert f'cnnlab_model_info{{version="{after}"}} 1' in client.get("/metrics").text
        assert client.get("/v1/model").json()["path"] == entry["path"]
        png = make_png()
        for r in (client.post("/v1/predict", files={"file": ("d.png", png, "image/png")}),
                  client.post("/v1/predict/batch",
                              json={"images": [base64.b64encode(png).decode()]})):
            assert r.status_code == 200 and r.json()["model_version"] == after, r.text
        # the service now answers with what the feedback taught, on images it never saw,
        # and still knows the original classes
        for x in _novel_digits(4, seed=12):
            pred = _predict(client, x)
            assert pred["label"] == taught and pred["model_version"] == after
        known, known_targets = learnable_images(n_per_class=2, num_classes=3, size=28, seed=13)
        for x, k in zip(known, known_targets, strict=True):
            assert _predict(client, x)["label"] == CLASSES[int(k)]
        pred = client.post("/v1/predict", json={"image": base64.b64encode(
            (run_dir / "config.toml").read_bytes()).decode()})
        assert pred.status_code == 400  # still validating input after the swap
        # a path only on a service started with allow_reload_path (test_hardening.py)
        bad = client.post("/v1/admin/reload", headers=ADMIN,
                          json={"path": str(tmp_path / "missing.pt")})
        assert bad.status_code == 403 and bad.json()["error"]["type"] == "forbidden"
        bad = client.post("/v1/admin/reload", headers=ADMIN, json={"version": 10**6})
        assert bad.status_code == 404 and bad.json()["error"]["type"] == "not_found"
        assert client.get("/v1/model").json()["version"] == after  # a failed reload keeps it
        r = client.post("/v1/admin/reload", headers=ADMIN, json={"version": entry["version"]})
        assert r.status_code == 200 and r.json()["registry_version"] == entry["version"]
    assert main(["retrain", "--from", str(run_dir), "--feedback", db, "--out",
                 str(tmp_path / "c2"), "--replay", "30", "--epochs", "1", "-q"]) == 0
    assert "version" in capsys.readouterr().out


def test_a_challenger_worse_on_the_held_out_feedback_is_not_promoted(
        run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = f"sqlite:///{tmp_path / 'fb.db'}"
    app = create_app(ServeSettings(checkpoint=str(run_dir), engine="torch", feedback_url=db))
    images, targets = learnable_images(n_per_class=6, num_classes=3, size=28, seed=21)
    labels = [CLASSES[int(k)] for k in targets]
    with TestClient(app) as client:
        # feedback that confirms the champion on every image: it scores 1.0 on the held-out
        # part, and a challenger wrecked by a far too large learning rate cannot match it
        assert _give_feedback(client, images, labels) == labels
        before = client.get("/v1/model").json()["version"]
        out = tmp_path / "challenger"
        report = retrain(str(run_dir), db, out, replay=30, epochs=2, lr=10.0, progress=False)
        held = report["held_out_feedback"]
        assert report["feedback_held_out"] == 4
        assert held["champion"] == 1.0 and held["challenger"] < held["champion"]
        assert report["promoted"] is False
        saved = json.loads((out / "retrain.json").read_text())
        assert saved["promoted"] is False and isinstance(saved["version"], int)
        assert current_model(FeedbackStore(db)) is None  # recorded, but not the current model

        # the service keeps the champion: the registry has nothing to reload
        monkeypatch.setenv("CNNLAB_ADMIN_TOKEN", "s3cret")
        r = client.post("/v1/admin/reload", headers=ADMIN)
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found"
        # nor may the challenger be asked for by its version: the gate holds
        r = client.post("/v1/admin/reload", headers=ADMIN, json={"version": report["version"]})
        assert r.status_code == 409 and r.json()["error"]["type"] == "not_promoted"
        assert client.get("/v1/model").json()["version"] == before
        pred = _predict(client, images[0])
        assert pred["label"] == labels[0] and pred["model_version"] == before
