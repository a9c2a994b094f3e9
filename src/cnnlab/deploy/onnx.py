"""Export to ONNX and TorchScript, with a parity check, and ONNX Runtime inference.

An exported ONNX file is self-contained: the weights are embedded, the batch dimension is
dynamic, and the metadata property ``cnnlab`` holds what predict needs (classes, input size,
normalisation, preprocessing, the source checkpoint's model record, the opset). Every export is
checked against PyTorch on the model's own test split (or random inputs when it has none):
the largest absolute logit difference must be at most ``tolerance`` (1e-4) and the top-1
classes identical, otherwise :class:`~cnnlab.errors.ExportError` is raised and no file is
left behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import ConfigError, ExportError, invalid_value
from cnnlab.inference.ort import OnnxModel, load_onnx

__all__ = ["DEFAULT_OPSET", "OnnxModel", "compact_names", "export_model", "export_onnx",
           "export_torchscript", "load_onnx", "parity"]

DEFAULT_OPSET = 17
FORMATS = ("onnx", "torchscript")


def _metadata(model: Any, opset: int | None) -> dict[str, Any]:
    from cnnlab.inference.checkpoint import DEFAULT_NAME, default_model_path

    spec = model.input_spec
    packaged = model.path is not None and Path(model.path) == default_model_path()
    return {"classes": list(model.classes), "input_spec": spec.to_dict(),
            "preprocessing": model.preprocessing, "model": model.config.get("model"),
            "source": DEFAULT_NAME if packaged else model.path, "opset": opset,
            "format": "cnnlab-onnx", "version": 1}


def _write_atomic(out: Path, write: Any) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what a user's export wants
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def compact_names(proto: Any) -> Any:
    """Give ``proto``'s nodes and intermediate tensors short names (``n0``, ``t0``, ...), in
    place; the graph's input and output names stay. The exporter's and the quantiser's names
    (module paths, ``..._QuantizeLinear_Output``) are pure overhead at run time and made up 10 %
    of a quantised 55 k-parameter model's file."""
    graph = proto.graph
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    names: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in keep:
            return name
        return names.setdefault(name, f"t{len(names)}")

    for init in graph.initializer:
        init.name = short(init.name)
    for i, node in enumerate(graph.node):
        node.name, node.doc_string = f"n{i}", ""
        node.input[:] = [short(x) for x in node.input]
        node.output[:] = [short(x) for x in node.output]
    for info in graph.value_info:
        info.name = short(info.name)
    return proto


def export_onnx(model: Any, out: str | Path, *, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` (a :class:`cnnlab.inference.Model`) as one ONNX file with a dynamic batch.

    Raises:
        ExportError: the model cannot be traced or converted.
    """
    import onnx

    classifier = model.classifier.eval().cpu()
    spec = model.input_spec
    example = torch.zeros(1, *spec.shape)

    def write(tmp: Path) -> None:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                # the TorchScript-based exporter: no onnxscript needed, and it handles every
                # cnnlab family; its deprecation and tracer warnings are expected here
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    classifier, (example,), str(tmp), dynamo=False, opset_version=opset,
                    input_names=["input"], output_names=["logits"],
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
        except Exception as e:
            raise ExportError(f"cannot export {type(classifier).__name__} to ONNX "
                              f"(opset {opset}): {e}") from e
        proto = compact_names(onnx.load(str(tmp)))
        entry = proto.metadata_props.add()
        entry.key, entry.value = "cnnlab", json.dumps(_metadata(model, opset))
        proto.producer_name = "cnnlab"
        onnx.save(proto, str(tmp))

    return _write_atomic(Path(out), write)


def export_torchscript(model: Any, out: str | Path) -> Path:
    """Write ``model`` as a traced TorchScript file with the cnnlab metadata as an extra file.

    Raises:
        ExportError: the model cannot be traced.
    """
    classifier = model.classifier.eval().cpu()
    example = torch.zeros(1, *model.input_spec.shape)

    def write(tmp: Path) -> None:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(classifier, example)
                torch.jit.save(traced, str(tmp), _extra_files={
                    "cnnlab.json": json.dumps(_metadata(model, None))})
        except Exception as e:
            raise ExportError(f"cannot trace {type(classifier).__name__} to TorchScript: "
                              f"{e}") from e

    return _write_atomic(Path(out), write)


def parity(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, Any]:
    """How two sets of logits for the same images compare."""
    diff = (reference.float() - candidate.float()).abs()
    agree = (reference.argmax(1) == candidate.argmax(1)).float().mean().item()
    return {"images": len(reference), "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
            "top1_agreement": agree}


SAMPLES_SUFFIX = ".samples.npz"


def samples_path(checkpoint: str | Path) -> Path:
    """Where a checkpoint's own check images live: ``model.samples.npz`` beside ``model.pt``."""
    path = Path(checkpoint)
    return path.with_name(f"{path.stem}{SAMPLES_SUFFIX}")


def write_check_samples(checkpoint: str | Path, images: torch.Tensor, targets: torch.Tensor,
                        what: str) -> Path:
    """Store check images (uint8, already model input) beside a checkpoint, so its exports
    can be checked and calibrated where its data is not (the packaged default model)."""
    import io

    out = samples_path(checkpoint)
    buf = io.BytesIO()
    np.savez_compressed(buf, images=images.numpy(), targets=targets.numpy(),
                        what=np.array(what))
    _write_atomic(out, lambda p: p.write_bytes(buf.getvalue()))
    return out


def _stored_samples(model: Any) -> tuple[torch.Tensor, torch.Tensor, str] | None:
    if not model.path:
        return None
    path = samples_path(model.path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images, targets, what = z["images"], z["targets"], str(z["what"])
    except (OSError, ValueError, KeyError) as e:
        raise ExportError(f"{path} is not a readable samples file ({e}); delete it or restore "
                          "it") from e
    if tuple(images.shape[1:]) != model.input_spec.shape or images.dtype != np.uint8:
        raise ExportError(f"{path} holds images of shape {images.shape[1:]} ({images.dtype}); "
                          f"the model takes uint8 {model.input_spec.shape}: delete the file")
    return torch.from_numpy(images), torch.from_numpy(targets.astype(np.int64)), what


def check_images(model: Any, data_dir: str | None, limit: int = 0,
                 ) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Labelled images to check an export on, and to gate an INT8 model by: the validation
    split of the model's data, else its training split when it held out none, else the
    samples stored beside the checkpoint (:func:`write_check_samples`). Never the test split
    (that only reports) and never random images; never a download.

    Returns:
        uint8 images in the model's input form, their targets, and what they are.

    Raises:
        ExportError: none of those can be found.
    """
    from cnnlab.data import stratified_split
    from cnnlab.errors import DataError
    from cnnlab.training.data import load_split

    found = None
    errors = []
    for split, note in (("val", ""), ("train", " (the model holds out no validation split)")):
        try:
            ds, src = load_split(model, split, data_dir=data_dir, allow_download=False)
        except DataError as e:
            errors.append(str(e))
            continue
        found = (ds.images, ds.targets, f"{src.name} {split} split{note}")
        break
    if found is None:
        found = _stored_samples(model)
    if found is None:
        raise ExportError(
            f"no images to check {model.path or 'the model'} on: its validation or training "
            f"data is not here ({errors[-1] if errors else 'no data recorded'}) and no "
            f"{samples_path(model.path or 'model.pt').name} lies beside it; set data_dir")
    images, targets, what = found
    if limit and len(images) > limit:
        keep, _ = stratified_split(targets, 1 - limit / len(images), 0)
        images, targets = images[keep], targets[keep]
        what = f"{len(images)} images of the {what}"
    return images, targets, what


def test_images(model: Any, data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The model's own test split, to report figures on once decisions are made; None when it
    is not here."""
    from cnnlab.errors import DataError
    from cnnlab.training.data import load_split

    try:
        ds, _ = load_split(model, "test", data_dir=data_dir, allow_download=False)
    except DataError:
        return None
    return ds.images, ds.targets


def export_model(source: str | Path, out: str | Path, *, fmt: str = "onnx",
                 opset: int = DEFAULT_OPSET, data_dir: str | None = None, limit: int = 0,
                 tolerance: float = 1e-4,
                 check: tuple[torch.Tensor, torch.Tensor, str] | None = None) -> dict[str, Any]:
    """Export a checkpoint (or run directory, or ``default``) and check it against PyTorch on
    validation images (:func:`check_images`), or on ``check`` = (images, targets, what).

    Raises:
        ConfigError: an unknown format. CheckpointError: an unusable checkpoint.
        ExportError: the export fails, or disagrees with PyTorch beyond ``tolerance`` or in a
        top-1 class (the file is then removed).
    """
    from cnnlab.inference.batched import evaluate_loss_accuracy, predict_logits
    from cnnlab.inference.model import load_model

    if fmt not in FORMATS:
        raise ConfigError(invalid_value("fmt", fmt, f"one of {', '.join(FORMATS)}",
                                        kind="setting of export_model"))
    model = load_model(source)
    out = Path(out)
    t0 = time.perf_counter()
    if fmt == "onnx":
        export_onnx(model, out, opset=opset)
    else:
        export_torchscript(model, out)
    export_s = time.perf_counter() - t0
    images, targets, what = check if check is not None else check_images(model, data_dir, limit)
    spec = model.input_spec
    ref = predict_logits(model.classifier, images, spec.mean, spec.std)
    if fmt == "onnx":
        got = load_onnx(out).predict_logits(images)
    else:
        from cnnlab.data.transforms import normalize

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated
            ts = torch.jit.load(str(out))
        with torch.no_grad():
            got = torch.cat([ts(normalize(images[i:i + 1000], spec.mean, spec.std))
                             for i in range(0, len(images), 1000)])
    stats = parity(ref, got)
    report: dict[str, Any] = {
        "source": model.path, "out": str(out), "format": fmt,
        "opset": opset if fmt == "onnx" else None, "bytes": out.stat().st_size,
        "export_s": round(export_s, 3), "checked_on": what, **stats, "tolerance": tolerance}
    report["accuracy_pytorch"] = round(evaluate_loss_accuracy(ref, targets)[1], 6)
    report["accuracy_exported"] = round(evaluate_loss_accuracy(got, targets)[1], 6)
    if not (stats["max_abs_diff"] <= tolerance and stats["top1_agreement"] == 1.0):
        out.unlink(missing_ok=True)
        raise ExportError(
            f"the {fmt} export of {model.path} does not match PyTorch on {what}: max abs "
            f"logit difference {stats['max_abs_diff']:.3g} (allowed {tolerance:g}), top-1 "
            f"agreement {stats['top1_agreement']:.4%}; the file was removed")
    return report
