"""``cnnlab robustness RUN``: the suites (corruptions, real-world shifts, adversarial attacks,
out-of-distribution inputs) on one model, written as ``robustness.json``, plots and the
report's Robustness section.

Images: the first ``images`` MNIST test digits (the test split is read to report; the shifts
take the first ``shift_images`` of them, or as many spread evenly over them with
``shift_spread``, each drawn as 34 pages, and Square and AutoAttack
their own counts, as the output says). The
corruptions are applied to the records and read as records are (the MNIST-C protocol); the
shifts and the out-of-distribution pages are files a user could bring, read through the
checkpoint's preprocessing. The ``ood`` threshold comes from the run's validation split.

mCE (Hendrycks & Dietterich 2019): the corruption error of the model divided by that of a
reference model on the same images, averaged over the corruptions; 100 % is the reference's
robustness, lower is better. The reference is the packaged ``default`` model unless another
is given, and ``robustness.json`` names it with its SHA-256 (a regenerated default is another
reference).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import ConfigError, DataError, unknown_name
from cnnlab.robustness.adversarial import (
    ATTACKS,
    DEFAULT_EPS_L2,
    DEFAULT_EPS_LINF,
    check_attacks,
    check_autoattack_version,
    check_epsilons,
    run_adversarial,
)
from cnnlab.robustness.corruptions import CORRUPTIONS, check_corruptions, mnist_c
from cnnlab.robustness.ood import OOD_SETS, run_ood, write_ood_file
from cnnlab.robustness.shifts import SEVERITIES, SHIFTS, check_shifts, render_page, shifted_inputs

__all__ = ["RESULT_FILE", "SUITES", "RobustnessSettings", "check_suites", "output_dir",
           "run_robustness"]

log = logging.getLogger("cnnlab")

SUITES = ("corruptions", "shifts", "adversarial", "ood")
RESULT_FILE = "robustness.json"
DIGITS = [str(i) for i in range(10)]


@dataclass
class RobustnessSettings:
    """What ``cnnlab robustness`` measures; the CLI's flags have the same names."""

    suites: list[str] = field(default_factory=lambda: list(SUITES))
    images: int = 1000  # the first N MNIST test digits
    seed: int = 0
    corruptions: list[str] = field(default_factory=lambda: list(CORRUPTIONS))
    shifts: list[str] = field(default_factory=lambda: list(SHIFTS))
    attacks: list[str] = field(default_factory=lambda: list(ATTACKS))
    eps: list[float] = field(default_factory=lambda: list(DEFAULT_EPS_LINF))  # L-inf
    eps_l2: list[float] = field(default_factory=lambda: list(DEFAULT_EPS_L2))
    pgd_steps: int = 10
    pgd_restarts: int = 2
    black_box_images: int = 200  # Square's images (the first of them)
    autoattack_images: int = 100
    autoattack_eps: float = 0.3
    autoattack_version: str = "fast"  # or "standard" (cnnlab.robustness.adversarial)
    shift_images: int = 200  # the shifts' digits: the first of the images (pages cost ~5 ms)
    # the shifts' digits evenly spaced over the images instead of the first of them (MNIST
    # test's first 5,000 are all high-school students' digits, its last 5,000 employees')
    shift_spread: bool = False
    ood_images: int = 200  # pages per non-digit set
    ood_rate: float = 0.01  # the share of validation digits the ood flag marks
    reference: str = "default"  # the mCE reference model; "none" for no mCE
    data_dir: str | None = None  # where MNIST is (default: the usual lookup)
    cache_dir: str | None = None  # the MNIST-C cache root (default: ~/.cache/cnnlab)

    def check(self) -> RobustnessSettings:
        """Validate every field.

        Raises:
            ConfigError: an unknown name, an epsilon out of range, a count below 1.
        """
        check_suites(self.suites)
        check_corruptions(self.corruptions)
        check_shifts(self.shifts)
        check_attacks(self.attacks)
        self.eps = check_epsilons(self.eps, norm="linf")
        self.eps_l2 = check_epsilons(self.eps_l2, norm="l2")
        check_epsilons([self.autoattack_eps], norm="linf")
        check_autoattack_version(self.autoattack_version)
        for name in ("images", "pgd_steps", "pgd_restarts", "black_box_images",
                     "autoattack_images", "shift_images", "ood_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"The {name!r} setting of robustness must be an int >= 1. "
                                  f"Got {value!r} instead.")
        if not isinstance(self.shift_spread, bool):
            raise ConfigError(f"The 'shift_spread' setting of robustness must be a bool. Got "
                              f"{self.shift_spread!r} instead.")
        if not 0.0 < float(self.ood_rate) <= 0.5:
            raise ConfigError(f"The 'ood_rate' setting of robustness must be in (0, 0.5]. Got "
                              f"{self.ood_rate!r} instead.")
        return self


def check_suites(names: Sequence[str]) -> list[str]:
    """``names`` when every one is a suite.

    Raises:
        ConfigError: an unknown name ("did you mean"), or none.
    """
    if not names:
        raise ConfigError(f"give at least one suite ({', '.join(SUITES)})")
    for name in names:
        if name not in SUITES:
            raise ConfigError(unknown_name("robustness suite", name, SUITES))
    return list(names)


def output_dir(model: Any, out: str | Path | None = None) -> Path:
    """Where the results go: ``out``, else the run directory (the checkpoint's folder), and
    ``runs/default`` for the packaged model (never into the installed package)."""
    from cnnlab.inference.checkpoint import default_model_path

    if out is not None:
        return Path(out)
    path = Path(model.path) if model.path else None
    if path is None:
        raise ConfigError("the model has no file: pass an output directory")
    if path.resolve() == default_model_path().resolve():
        return Path("runs") / "default"
    return path.parent


def _load_mnist_test(settings: RobustnessSettings) -> tuple[np.ndarray, np.ndarray]:
    from cnnlab.data import load_dataset

    ds = load_dataset("mnist", "test", data_dir=settings.data_dir)
    n = min(settings.images, len(ds))
    return ds.images[:n, 0].numpy(), ds.targets[:n].numpy()


def _accuracy(model: Any, inputs: np.ndarray, targets: np.ndarray) -> float:
    if not len(targets):
        return float("nan")
    logits = model.logits(torch.from_numpy(np.ascontiguousarray(inputs)), batch_size=500)
    return float((logits.argmax(1).numpy() == targets).mean())


def _records(model: Any, digits: np.ndarray) -> np.ndarray:
    return np.asarray(model.preprocess.records(digits[:, None]))


def _corruption_suite(model: Any, digits: np.ndarray, targets: np.ndarray, clean: float,
                      settings: RobustnessSettings, say: Callable[[str], None]
                      ) -> dict[str, Any]:
    t0 = time.perf_counter()
    sets = mnist_c(digits, settings.corruptions, seed=settings.seed,
                   cache_dir=settings.cache_dir, progress=lambda n: say(f"making {n}"))
    made = time.perf_counter() - t0
    per = {name: _accuracy(model, _records(model, imgs), targets) for name, imgs in sets.items()}
    out: dict[str, Any] = {"images": len(targets), "seed": settings.seed,
                           "clean_accuracy": clean, "accuracy": per,
                           "mean_accuracy": float(np.mean(list(per.values()))),
                           "generate_or_read_s": round(made, 2)}
    ref = _reference(model, settings.reference)
    if ref is not None:
        ref_model, ref_name, ref_sha = ref
        ref_acc = {name: _accuracy(ref_model, _records(ref_model, imgs), targets)
                   for name, imgs in sets.items()}
        ce = {name: (1 - per[name]) / max(1 - ref_acc[name], 1.0 / len(targets))
              for name in per}
        out["reference"] = {"model": ref_name, "checkpoint_sha256": ref_sha,
                            "accuracy": ref_acc,
                            "mean_accuracy": float(np.mean(list(ref_acc.values())))}
        out["corruption_error"] = ce  # CE_c = error_c / reference error_c
        out["mce"] = float(np.mean(list(ce.values())))
    return out


def _reference(model: Any, reference: str) -> tuple[Any, str, str] | None:
    if reference in ("", "none"):
        return None
    from cnnlab.deploy.engine import load_with_engine
    from cnnlab.inference.checkpoint import checkpoint_path, checkpoint_sha256

    path = checkpoint_path(reference)
    sha = checkpoint_sha256(path)
    if model.path and checkpoint_sha256(Path(model.path)) == sha:
        return model, reference, sha
    return load_with_engine(path, engine="torch"), reference, sha


def _shift_suite(model: Any, digits: np.ndarray, targets: np.ndarray,
                 settings: RobustnessSettings, say: Callable[[str], None]) -> dict[str, Any]:
    t0 = time.perf_counter()
    pick = shift_indices(len(digits), settings.shift_images, spread=settings.shift_spread)
    digits, targets = digits[pick], targets[pick]
    base_in, base_t, base_refused = shifted_inputs(digits, targets, model.preprocess, None, 0,
                                                   seed=settings.seed)
    page_acc = _shift_accuracy(model, base_in, base_t, base_refused)
    curves: dict[str, Any] = {}
    for name in settings.shifts:
        say(f"shift {name}")
        accs, refused, counts = [], [], []
        for severity in SEVERITIES:
            x, t, r = shifted_inputs(digits, targets, model.preprocess, name, severity,
                                     seed=settings.seed)
            accs.append(_shift_accuracy(model, x, t, r))
            refused.append(len(r))
            counts.append(len(t) + len(r))
        curves[name] = {"severity": list(SEVERITIES), "accuracy": accs, "refused": refused,
                        "images": counts}
    middle = {name: c["accuracy"][len(SEVERITIES) // 2] for name, c in curves.items()}
    return {"images": len(targets), "spread": settings.shift_spread, "page_accuracy": page_acc,
            "page_refused": len(base_refused), "curves": curves,
            "middle_severity": middle,
            "min_middle_severity": min(middle.values()) if middle else None,
            "seconds": round(time.perf_counter() - t0, 2)}


def shift_indices(images: int, shift_images: int, *, spread: bool = False) -> np.ndarray:
    """Which of ``images`` digits the shifts draw: the first ``shift_images``, or as many
    evenly spaced over all of them (``spread``), always starting at the first."""
    n = min(images, shift_images)
    if not spread:
        return np.arange(n)
    return np.floor(np.arange(n) * (images / n)).astype(np.int64)


def _shift_accuracy(model: Any, inputs: np.ndarray, targets: np.ndarray,
                    refused: np.ndarray) -> float:
    """Accuracy with the pages the preprocessing refused counted as errors."""
    total = len(targets) + len(refused)
    if not total:
        return float("nan")
    if not len(targets):
        return 0.0
    return _accuracy(model, inputs, targets) * len(targets) / total


def _validation_inputs(model: Any, settings: RobustnessSettings) -> tuple[Any, str]:
    from cnnlab.training.data import load_split

    try:
        ds, src = load_split(model, "val", data_dir=settings.data_dir)
        return ds.images, src.detail
    except DataError as e:
        log.warning("robustness: no validation split (%s); the ood threshold comes from the "
                    "last 5,000 training images, on which the model is over-confident", e)
        ds, src = load_split(model, "train", data_dir=settings.data_dir)
        return ds.images[-5000:], f"{src.detail} (last 5,000: no validation split)"


def _ood_suite(model: Any, digits: np.ndarray, settings: RobustnessSettings,
               say: Callable[[str], None]) -> dict[str, Any]:
    t0 = time.perf_counter()
    val, val_source = _validation_inputs(model, settings)
    pick = shift_indices(len(digits), settings.shift_images, spread=settings.shift_spread)
    pages = [render_page(d) for d in digits[pick]]  # as the shifts'
    result = run_ood(model, pages, val, images=settings.ood_images, sets=OOD_SETS,
                     rate=settings.ood_rate, seed=settings.seed, progress=say)
    result["validation"] = val_source
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def run_robustness(model: Any, settings: RobustnessSettings | None = None, *,
                   out_dir: str | Path | None = None, progress: bool = False,
                   report: bool = True) -> dict[str, Any]:
    """Run the suites on a loaded model and write ``robustness.json``, plots, ``ood.json``
    and the report section into the output directory (:func:`output_dir`).

    Raises:
        ConfigError: invalid settings. DataError: a model that does not read MNIST digits,
            or MNIST missing.
    """
    from cnnlab._io import atomic_write_text, clean_json
    from cnnlab.robustness.documents import write_documents

    settings = (settings or RobustnessSettings()).check()
    if list(model.classes) != DIGITS:
        raise DataError(f"robustness measures digit models (classes 0-9, read as MNIST); this "
                        f"model's classes are {list(model.classes)[:12]}")
    out = output_dir(model, out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def say(message: str) -> None:
        if progress:
            log.info("robustness: %s (%.0f s)", message, time.perf_counter() - started)

    digits, targets = _load_mnist_test(settings)
    clean = _accuracy(model, _records(model, digits), targets)
    result: dict[str, Any] = {
        "checkpoint": model.path, "images": len(targets), "clean_accuracy": clean,
        "settings": asdict(settings), "seconds": {}}
    if "corruptions" in settings.suites:
        t0 = time.perf_counter()
        result["corruptions"] = _corruption_suite(model, digits, targets, clean, settings, say)
        result["seconds"]["corruptions"] = round(time.perf_counter() - t0, 2)
    if "shifts" in settings.suites:
        t0 = time.perf_counter()
        result["shifts"] = _shift_suite(model, digits, targets, settings, say)
        result["seconds"]["shifts"] = round(time.perf_counter() - t0, 2)
    examples = None
    if "adversarial" in settings.suites:
        t0 = time.perf_counter()
        adv = run_adversarial(
            model, torch.from_numpy(_records(model, digits)), torch.from_numpy(targets),
            eps_linf=settings.eps, eps_l2=settings.eps_l2, attacks=settings.attacks,
            steps=settings.pgd_steps, restarts=settings.pgd_restarts,
            black_box_images=settings.black_box_images,
            autoattack_images=settings.autoattack_images,
            autoattack_eps=settings.autoattack_eps,
            autoattack_version=settings.autoattack_version, seed=settings.seed, progress=say)
        examples = adv.pop("examples")
        result["adversarial"] = adv
        result["seconds"]["adversarial"] = round(time.perf_counter() - t0, 2)
    if "ood" in settings.suites:
        t0 = time.perf_counter()
        result["ood"] = _ood_suite(model, digits, settings, say)
        result["seconds"]["ood"] = round(time.perf_counter() - t0, 2)
        if model.path:
            files = [write_ood_file(out, model.path, result["ood"])]
            beside = Path(model.path).parent
            if beside.resolve() != out.resolve() and output_dir(model) == beside:
                files.append(write_ood_file(beside, model.path, result["ood"]))
            result["ood"]["files"] = [str(f) for f in files]
    result["seconds"]["total"] = round(time.perf_counter() - started, 2)
    result["files"] = write_documents(out, result, examples, report=report)
    result["files"]["json"] = str(out / RESULT_FILE)
    atomic_write_text(out / RESULT_FILE, json.dumps(clean_json(result), indent=2) + "\n")
    return result
