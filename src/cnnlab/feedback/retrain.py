"""Close the loop: fine-tune the serving model on its feedback, and promote it only if better.

``retrain`` takes the champion (the model being served), the feedback store's images and
labels, and a replay sample of the champion's original training data (so the model does not
forget what it knew; ``replay=0`` replays nothing), and fine-tunes a challenger. Part of the
feedback is held out. The challenger is promoted - recorded as the current version in the
model registry (:mod:`cnnlab.feedback.versions`) - only if it is not worse than the champion
on the champion's validation split (when it has one) and not worse on the held-out feedback;
the test split is scored after that decision, for the report only. A running service picks
the promoted version up through ``POST /v1/admin/reload``.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import ConfigError, DataError, invalid_value
from cnnlab.feedback.store import FeedbackStore
from cnnlab.feedback.versions import register

__all__ = ["retrain"]


def _feedback_dataset(store: Any, model: Any) -> Any:
    from PIL import Image

    from cnnlab.data import ImageDataset

    rows = store.rows()
    if not rows:
        raise DataError(f"the feedback store {store.url} holds no feedback to retrain on")
    images, targets = [], []
    for r in rows:
        if r.label not in model.classes:
            continue
        img = Image.open(io.BytesIO(r.image_png))
        images.append(model.to_input(np.array(img)))  # a writable copy
        targets.append(model.classes.index(r.label))
    return ImageDataset(torch.stack(images), torch.tensor(targets), list(model.classes),
                        "feedback", store.url)


def retrain(champion: str, store_url: str, out: str | Path, *, replay: int = 5000,
            holdout: float = 0.2, epochs: int = 3, lr: float = 5e-4, seed: int = 0,
            data_dir: str | None = None, overwrite: bool = False,
            progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``champion`` on the feedback plus a replay sample; promote if not worse.

    Raises:
        DataError: no feedback, or the champion's training data cannot be found.
        ConfigError: invalid settings.
    """
    from cnnlab.data import stratified_split
    from cnnlab.inference import load_model
    from cnnlab.inference.batched import evaluate_loss_accuracy, predict_logits
    from cnnlab.training.data import PreparedData, load_split
    from cnnlab.training.loop import fit

    for name, value, ok, expected in (("holdout", holdout, 0 < holdout < 1, "in (0, 1)"),
                                      ("replay", replay, replay >= 0, ">= 0"),
                                      ("epochs", epochs, epochs >= 1, ">= 1"),
                                      ("lr", lr, math.isfinite(lr) and lr > 0,
                                       "a finite number > 0"),
                                      ("seed", seed, 0 <= seed <= 2**32 - 1,
                                       "in [0, 4294967295]")):
        if not ok:
            raise ConfigError(invalid_value(name, value, expected, kind="setting of retrain"))
    store = FeedbackStore(store_url)
    champ = load_model(champion)
    fb = _feedback_dataset(store, champ)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(fb), generator=g)
    n_hold = max(1, round(holdout * len(fb))) if len(fb) > 1 else 0
    held, fb_train = fb.subset(perm[:n_hold].numpy()), fb.subset(perm[n_hold:].numpy())
    try:
        train_full, _ = load_split(champ, "train", data_dir=data_dir, progress=progress)
    except Exception as e:
        raise DataError(f"retraining replays the champion's training data, which could not be "
                        f"loaded ({e}); set data_dir") from e
    # validation decides (with held-out feedback); the test split is reported after
    val: Any = None
    try:
        val, _ = load_split(champ, "val", data_dir=data_dir, progress=progress)
    except DataError:
        val = None  # trained on all its training images: held-out feedback decides
    try:
        test, _ = load_split(champ, "test", data_dir=data_dir, progress=progress)
    except DataError:
        test = None
    if replay == 0:  # no replay: the feedback alone
        train_full = train_full.subset(np.arange(0))
    elif replay < len(train_full):
        keep, _ = stratified_split(train_full.targets, 1 - replay / len(train_full), seed)
        train_full = train_full.subset(keep)
    from cnnlab.data import ImageDataset

    train = ImageDataset(torch.cat([train_full.images, fb_train.images]),
                         torch.cat([train_full.targets, fb_train.targets]),
                         list(champ.classes), "replay+feedback", store.url)
    spec = champ.input_spec
    data = PreparedData(train=train, val=None, test=None, classes=list(champ.classes),
                        mean=tuple(spec.mean), std=tuple(spec.std),
                        preprocessing=champ.preprocessing)
    from cnnlab.config import resolve_saved_config

    base = dict(champ.config)
    cfg = resolve_saved_config(base, {"optim": {"lr": lr, "scheduler": "cosine"},
                                      "train": {"epochs": epochs, "seed": seed, "ema": 0.0,
                                                "early_stopping": 0},
                                      "data": {"val_fraction": 0.0}})
    challenger = load_model(champion).classifier  # a fresh copy of the champion's weights
    result = fit(cfg, out_dir=out, overwrite=overwrite, progress=progress, data=data,
                 model=challenger)

    def score(model: Any, ds: Any) -> float | None:
        if ds is None or len(ds) == 0:
            return None
        logits = predict_logits(model, ds.images, spec.mean, spec.std)
        return round(evaluate_loss_accuracy(logits, ds.targets)[1], 6)

    report: dict[str, Any] = {
        "champion": champ.path, "challenger": str(Path(out) / "model.pt"),
        "feedback": len(fb), "feedback_train": len(fb_train), "feedback_held_out": len(held),
        "replay": len(train_full), "epochs": epochs,
        "validation": {"champion": score(champ.classifier, val),
                       "challenger": score(result.model, val)},
        "held_out_feedback": {"champion": score(champ.classifier, held),
                              "challenger": score(result.model, held)},
    }
    deciding = [v for v in (report["validation"], report["held_out_feedback"])
                if v["champion"] is not None]
    ok = bool(deciding) and all(v["challenger"] >= v["champion"] for v in deciding)
    report["promoted"] = ok
    report["decided_on"] = [k for k in ("validation", "held_out_feedback")
                            if report[k]["champion"] is not None]
    if report["validation"]["champion"] is None:
        report["note"] = ("the champion holds out no validation split: held-out feedback "
                          "decided")
    # reported once, after the decision
    report["test"] = {"champion": score(champ.classifier, test),
                      "challenger": score(result.model, test)}
    report["version"] = register(store, Path(out) / "model.pt", promoted=ok, report=report)
    (Path(out) / "retrain.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
