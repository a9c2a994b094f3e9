"""The feedback loop: retrain on feedback, champion against challenger, registry, hot reload."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cnnlab.cli.main import main
from cnnlab.serve.app import ServeSettings, create_app
from cnnlab.serve.retrain import current_model, retrain
from cnnlab.serve.store import FeedbackStore
from synth import learnable_images


def test_retrain_promote_and_reload(run_dir: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'fb.db'}"
    app = create_app(ServeSettings(checkpoint=str(run_dir), engine="torch", feedback_url=db))
    images, targets = learnable_images(n_per_class=6, num_classes=3, size=28, seed=7)
    with TestClient(app) as client:
        for img, k in zip(images, targets, strict=True):
            r = client.post("/v1/predict", json={"pixels": img[0].tolist()})
            assert r.status_code == 200
            fb = client.post("/v1/feedback", json={"prediction_id": r.json()["prediction_id"],
                                                   "label": "abc"[int(k)]})
            assert fb.status_code == 201
        before = client.get("/v1/model").json()["version"]

        out = tmp_path / "challenger"
        report = retrain(str(run_dir), db, out, replay=30, epochs=2, progress=False)
        assert report["feedback"] == 18 and report["feedback_held_out"] == 4
        assert report["replay"] <= 30 and (out / "model.pt").is_file()
        for key in ("test", "held_out_feedback"):
            assert set(report[key]) == {"champion", "challenger"}
        assert json.loads((out / "retrain.json").read_text())["version"] == report["version"]
        store = FeedbackStore(db)
        entry = current_model(store)
        assert (entry is not None) == report["promoted"]

        # reload: off without a token, refused with a wrong one, then swapped in
        assert client.post("/v1/admin/reload").status_code == 403
        monkeypatch.setenv("CNNLAB_ADMIN_TOKEN", "s3cret")
        r = client.post("/v1/admin/reload", headers={"authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["type"] == "unauthorized"
        r = client.post("/v1/admin/reload", headers={"authorization": "Bearer s3cret"},
                        json={"path": str(out / "model.pt")})
        assert r.status_code == 200, r.text
        after = client.get("/v1/model").json()["version"]
        assert after == r.json()["model_version"] and after != before
        pred = client.post("/v1/predict", json={"image": base64.b64encode(
            (run_dir / "config.toml").read_bytes()).decode()})
        assert pred.status_code == 400  # still validating input after the swap
        ok = client.post("/v1/predict", json={"pixels": images[0][0].tolist()})
        assert ok.json()["model_version"] == after
        bad = client.post("/v1/admin/reload", headers={"authorization": "Bearer s3cret"},
                          json={"path": str(tmp_path / "missing.pt")})
        assert bad.status_code == 422
    assert main(["retrain", "--from", str(run_dir), "--feedback", db, "--out",
                 str(tmp_path / "c2"), "--replay", "30", "--epochs", "1", "-q"]) == 0
    assert "version" in capsys.readouterr().out
