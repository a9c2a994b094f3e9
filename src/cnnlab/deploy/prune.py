"""Pruning for small machines: magnitude (unstructured) and channel (structured) pruning of a
trained model, with fine-tuning to win back the accuracy lost.

Two methods, two different gains:

* **magnitude** (:func:`magnitude_prune`): the smallest weights (L1, by default one global
  threshold over every conv and linear weight, the output head included) become exactly zero. The
  tensors keep their shapes, so the checkpoint is as large as before and a dense kernel runs
  as fast as before; the gain is in compression (zeros compress well) and in sparse kernels.
* **channel** (:func:`channel_prune`): whole output channels of every conv (and the hidden
  units of a dense layer) with the smallest batch-norm scale |gamma| (the L1 norm of the filter
  where there is no batch norm) are removed, and the layer that reads them is shrunk to match.
  The result is an ordinary, smaller model of the same family (``convnet`` with smaller
  ``widths``, ``paper-cnn`` with smaller ``filters``/``hidden``): fewer parameters, fewer MACs
  and a lower latency with any runtime.

:func:`prune_checkpoint` prunes a run's checkpoint, fine-tunes it with the run's own settings
(:func:`cnnlab.training.loop.fit`) and writes a new run directory with ``prune.json``.

Keeping magnitude-pruned weights at zero while fine-tuning: a gradient hook multiplies every
pruned weight's gradient by its 0/1 mask. The weights are zero when training starts and their
gradient is always zero, so the optimiser's state for them stays zero too (Adam's moments,
SGD's momentum) and no step moves them; weight decay adds ``decay * 0``. The model keeps plain
``weight`` parameters throughout (no ``weight_orig``/``weight_mask`` re-parametrisation), so
every checkpoint ``fit`` writes is an ordinary one that :func:`cnnlab.load` reads.

Longer than 450 lines: the two pruning methods share the masks, the fine-tuning and the report,
and each layer family's channel surgery must stay next to the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from cnnlab._io import clean_json
from cnnlab.errors import ConfigError
from cnnlab.models import Classifier, create_model
from cnnlab.models.convnet import ConvBlock, ConvNet
from cnnlab.models.paper_cnn import PaperCNN

if TYPE_CHECKING:
    from cnnlab.training.data import PreparedData

__all__ = [
    "CHANNEL_FAMILIES",
    "METHODS",
    "ChannelPruned",
    "channel_prune",
    "magnitude_prune",
    "prune_channels",
    "prune_checkpoint",
    "sparsity",
]

METHODS = ("magnitude", "channel")
SCOPES = ("global", "layer")
# the families whose channels can be removed consistently (the registered names)
CHANNEL_FAMILIES = ("convnet", "paper-cnn", "paper-cnn-tiny")


def _check_amount(amount: object) -> float:
    if isinstance(amount, bool) or not isinstance(amount, int | float) \
            or not math.isfinite(amount) or not 0 <= amount < 1:
        raise ConfigError(
            f"the pruning amount must be a fraction in [0, 1) (0.5 = prune half); got {amount!r}")
    return float(amount)


def _prunable(model: nn.Module, include_head: bool) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    """The conv and linear layers magnitude pruning works on, in registration order."""
    layers: list[tuple[str, nn.Conv2d | nn.Linear]] = [
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    if not include_head:
        linears = [m for _, m in layers if isinstance(m, nn.Linear)]
        if linears:  # the head is the last linear layer of every family
            layers = [(n, m) for n, m in layers if m is not linears[-1]]
    return layers


# --- magnitude pruning ------------------------------------------------------------------------

def sparsity(model: nn.Module, *, include_head: bool = True) -> dict[str, Any]:
    """Zeros among the conv and linear weights: per layer and overall (zeros / weights).

    ``include_head=False`` leaves the output layer out, as ``magnitude_prune(...,
    include_head=False)`` does.
    """
    layers: dict[str, dict[str, Any]] = {}
    zeros = total = 0
    for name, m in _prunable(model, include_head):
        w = m.weight.detach()
        z, n = int((w == 0).sum()), w.numel()
        layers[name] = {"weights": n, "zeros": z, "sparsity": round(z / n, 6)}
        zeros, total = zeros + z, total + n
    return {"weights": total, "zeros": zeros,
            "sparsity": round(zeros / total, 6) if total else 0.0, "layers": layers}


def magnitude_prune(model: nn.Module, amount: float, *, scope: str = "global",
                    include_head: bool = True) -> dict[str, Any]:
    """Set the ``amount`` fraction of smallest-magnitude conv and linear weights to zero,
    in place, and return the resulting :func:`sparsity` (with ``method``, ``amount``,
    ``scope``).

    ``scope="global"`` ranks all those weights together (torch's ``global_unstructured`` with
    the L1 criterion), so layers with many redundant weights (a large dense layer) lose more
    than small ones; ``scope="layer"`` prunes ``amount`` of each layer.

    The output head is pruned too unless ``include_head=False``: in ``convnet`` the flatten
    head holds 57 % of all weights (3136 x 10 of 54,778), so leaving it out would cap the
    model's sparsity near 40 %, and the global ranking already spares a head whose weights
    matter (they are large). ``include_head=False`` keeps every weight of the output layer, for
    a head with few, all-important weights (``paper-cnn``'s 128 x 10). Biases and batch-norm
    parameters are never pruned. The pruning is made permanent
    (``prune.remove``): the model keeps its plain ``weight`` parameters and state-dict keys, so
    its checkpoint loads like any other.

    Raises:
        ConfigError: ``amount`` outside [0, 1), an unknown ``scope``, no conv/linear layer.
    """
    amount = _check_amount(amount)
    if scope not in SCOPES:
        raise ConfigError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    layers = _prunable(model, include_head)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no conv or linear layer to prune")
    if amount > 0:
        params = [(m, "weight") for _, m in layers]
        if scope == "global":
            torch_prune.global_unstructured(params, pruning_method=torch_prune.L1Unstructured,
                                            amount=amount)
        else:
            for m, name in params:
                torch_prune.l1_unstructured(m, name, amount=amount)
        for m, name in params:
            torch_prune.remove(m, name)
    return {"method": "magnitude", "amount": amount, "scope": scope,
            "include_head": include_head, **sparsity(model, include_head=include_head)}


def _masks(model: nn.Module, include_head: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(m.weight, m.weight.detach() != 0) for _, m in _prunable(model, include_head)]


@contextlib.contextmanager
def _keep_zeros(masks: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """While inside, the masked-out entries of each weight get a zero gradient (see the module
    docstring for why that keeps them exactly zero under Adam, AdamW and SGD)."""

    def hook(mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        def apply(grad: torch.Tensor) -> torch.Tensor:
            return grad * mask.to(device=grad.device, dtype=grad.dtype)
        return apply

    handles = [p.register_hook(hook(mask)) for p, mask in masks]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# --- channel pruning --------------------------------------------------------------------------

@dataclass
class ChannelPruned:
    """What :func:`prune_channels` returns: the smaller model, the registered name and the
    builder kwargs that rebuild it (``create_model(name, in_channels=..., num_classes=...,
    input_size=..., **kwargs)``), and each pruned layer's width before and after."""

    model: Classifier
    name: str
    kwargs: dict[str, Any]
    channels: dict[str, tuple[int, int]]


def _keep_count(c: int, amount: float) -> int:
    return max(1, round((1 - amount) * c))


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest scores, in their original order (all of them at k = n, so
    nothing moves and the pruned model computes exactly what the original did)."""
    if k >= len(scores):
        return torch.arange(len(scores))
    return torch.topk(scores, k, sorted=False).indices.sort().values


def _conv_scores(conv: nn.Conv2d, bn: nn.Module) -> torch.Tensor:
    if isinstance(bn, nn.BatchNorm2d) and bn.weight is not None:
        return bn.weight.detach().abs().float().cpu()  # network slimming: |gamma|
    return conv.weight.detach().abs().flatten(1).sum(1).float().cpu()  # L1 norm of the filter


def _copy_conv(dst: nn.Conv2d, src: nn.Conv2d, out_idx: torch.Tensor,
               in_idx: torch.Tensor) -> None:
    dst.weight.copy_(src.weight[out_idx][:, in_idx])
    if src.bias is not None and dst.bias is not None:
        dst.bias.copy_(src.bias[out_idx])


def _copy_bn(dst: nn.Module, src: nn.Module, idx: torch.Tensor) -> None:
    if not isinstance(src, nn.BatchNorm2d) or not isinstance(dst, nn.BatchNorm2d):
        return
    for attr in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(src, attr)
        if value is not None:
            getattr(dst, attr).copy_(value[idx])
    if src.num_batches_tracked is not None and dst.num_batches_tracked is not None:
        dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _copy_flatten_linear(dst: nn.Linear, src: nn.Linear, channels: int, idx: torch.Tensor,
                         out_idx: torch.Tensor | None = None) -> None:
    """A dense layer reading a flattened (C, H, W) map: keep the columns of the kept channels
    (each channel owns H * W consecutive columns) and, with ``out_idx``, only those rows."""
    w = src.weight.view(src.out_features, channels, -1)[:, idx].reshape(src.out_features, -1)
    bias: torch.Tensor | None = src.bias
    if out_idx is not None:
        w = w[out_idx]
        bias = bias[out_idx] if bias is not None else None
    dst.weight.copy_(w)
    if bias is not None:
        dst.bias.copy_(bias)


def _convnet(model: ConvNet, amount: float) -> ChannelPruned:
    c = model.config
    if c.residual:
        raise ConfigError(
            "channel pruning cannot shrink a residual convnet: a skip connection adds the "
            "block's input to its output channel by channel, so both sides would have to lose "
            "the same channels; use magnitude pruning (method='magnitude'), or a convnet with "
            "residual=false")
    blocks = _conv_blocks(model)
    dev = next(model.parameters()).device
    keeps = [_top(_conv_scores(b.conv, b.bn), _keep_count(b.conv.out_channels, amount))
             for b in blocks]
    # every conv of a stage has the stage's width, so each keeps the same number of channels
    widths, i = [], 0
    per_stage = _stage_sizes(model)
    for n in per_stage:
        widths.append(len(keeps[i + n - 1]))
        i += n
    # every other setting as it was (pool_first, crop, ...): only the widths change
    kwargs: dict[str, Any] = {f.name: getattr(c, f.name) for f in dataclasses.fields(c)
                              if f.name not in ("width", "widths", "depth")}
    kwargs.update(widths=widths, pools=list(c.pools))
    if c.depth is not None:
        kwargs["depth"] = c.depth
    spec = model.input_spec
    new = create_model("convnet", in_channels=spec.channels, num_classes=model.num_classes,
                       input_size=(spec.height, spec.width), **kwargs)
    assert isinstance(new, ConvNet)
    channels: dict[str, tuple[int, int]] = {}
    with torch.no_grad():
        in_idx = torch.arange(spec.channels)
        for k, (old_b, new_b, keep) in enumerate(zip(blocks, _conv_blocks(new), keeps,
                                                      strict=True)):
            keep = keep.to(dev)
            _copy_conv(new_b.conv, old_b.conv, keep, in_idx.to(dev))
            _copy_bn(new_b.bn, old_b.bn, keep)
            channels[f"features.{k}.conv"] = (old_b.conv.out_channels, len(keep))
            in_idx = keep
        _copy_flatten_linear(new.fc, model.fc, blocks[-1].conv.out_channels, in_idx)
    return ChannelPruned(new, "convnet", kwargs, channels)


def _conv_blocks(model: ConvNet) -> list[ConvBlock]:
    """``model.features``, which holds only conv blocks, as a list of them (iterating an
    ``nn.Sequential`` gives plain modules)."""
    return [b for b in model.features if isinstance(b, ConvBlock)]


def _stage_sizes(model: ConvNet) -> tuple[int, ...]:
    from cnnlab.models.convnet import convs_for_depth

    c = model.config
    return (convs_for_depth(c.depth, len(c.widths)) if c.depth is not None
            else (1,) * len(c.widths))


def _paper_cnn(model: PaperCNN, amount: float, name: str) -> ChannelPruned:
    c = model.config
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    dev = next(model.parameters()).device
    keeps = [_top(_conv_scores(conv, nn.Identity()), _keep_count(conv.out_channels, amount))
             for conv in convs]
    # the hidden dense layer's units: the L1 norm of their incoming weights
    hidden_keep = _top(model.fc1.weight.detach().abs().sum(1).float().cpu(),
                       _keep_count(model.fc1.out_features, amount))
    kwargs: dict[str, Any] = {"filters": [len(k) for k in keeps], "kernel_size": c.kernel_size,
                              "hidden": len(hidden_keep), "dropout": c.dropout}
    spec = model.input_spec
    new = create_model(name, in_channels=spec.channels, num_classes=model.num_classes,
                       input_size=(spec.height, spec.width), **kwargs)
    assert isinstance(new, PaperCNN)
    new_convs = [m for m in new.features if isinstance(m, nn.Conv2d)]
    channels: dict[str, tuple[int, int]] = {}
    conv_names = [n for n, m in model.features.named_children() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        in_idx = torch.arange(spec.channels, device=dev)
        for cname, old, fresh, keep in zip(conv_names, convs, new_convs, keeps, strict=True):
            keep = keep.to(dev)
            _copy_conv(fresh, old, keep, in_idx)
            channels[f"features.{cname}"] = (old.out_channels, len(keep))
            in_idx = keep
        hk = hidden_keep.to(dev)
        _copy_flatten_linear(new.fc1, model.fc1, convs[-1].out_channels, in_idx, hk)
        channels["fc1"] = (model.fc1.out_features, len(hk))
        new.fc2.weight.copy_(model.fc2.weight[:, hk])
        new.fc2.bias.copy_(model.fc2.bias)
    return ChannelPruned(new, name, kwargs, channels)


def prune_channels(model: Classifier, amount: float, *, name: str | None = None
                   ) -> ChannelPruned:
    """Remove the ``amount`` fraction of output channels of every conv (and of the hidden
    units of ``paper-cnn``'s dense layer), keeping ``max(1, round((1 - amount) * C))`` per
    layer, ranked by batch-norm |gamma| (``convnet``) or the filters' L1 norm (``paper-cnn``,
    which has no batch norm).

    The next layer loses the matching inputs: the next conv its input channels, the flatten
    head the ``H * W`` columns each removed channel fed. The result is built with
    :func:`~cnnlab.models.create_model` from ``kwargs`` (new ``widths``; ``filters`` and
    ``hidden``) and gets the kept weights; ``amount=0`` gives an exact copy. ``name`` is the
    registered name to record (default: the family's, ``convnet`` or ``paper-cnn``); the
    kwargs are complete, so any name of the family rebuilds the same model.

    Raises:
        ConfigError: ``amount`` outside [0, 1), a residual convnet, or another family.
    """
    amount = _check_amount(amount)
    if isinstance(model, ConvNet):
        result = _convnet(model, amount)
    elif isinstance(model, PaperCNN):
        result = _paper_cnn(model, amount, name or "paper-cnn")
    else:
        raise ConfigError(
            f"channel pruning supports the {', '.join(CHANNEL_FAMILIES)} models, whose next "
            f"layer can be shrunk to match; {type(model).__name__} is not one of them. Use "
            "magnitude pruning (method='magnitude'), which works on every model.")
    result.model.input_spec = model.input_spec
    result.model.to(next(model.parameters()).device)
    result.model.train(model.training)
    return result


def channel_prune(model: Classifier, amount: float) -> Classifier:
    """The smaller model of :func:`prune_channels` (see there); use ``prune_channels`` when
    the builder kwargs are needed, e.g. to save a checkpoint that rebuilds it."""
    return prune_channels(model, amount).model


# --- a checkpoint, pruned and fine-tuned ------------------------------------------------------

def _accuracy(model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
              spec: Any, batch_size: int) -> float:
    from cnnlab.inference.batched import evaluate_loss_accuracy, predict_logits

    logits = predict_logits(model, images, spec.mean, spec.std, batch_size=batch_size)
    return round(evaluate_loss_accuracy(logits, targets)[1], 6)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _nonzero(model: nn.Module) -> int:
    return sum(int((p.detach() != 0).sum()) for p in model.parameters())


def prune_checkpoint(
    source: str | Path,
    *,
    method: str = "magnitude",
    amount: float,
    finetune_epochs: int = 2,
    data_dir: str | None = None,
    out: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    scope: str = "global",
    include_head: bool = True,
    lr: float | None = None,
    data: PreparedData | None = None,
    threads: int = 0,
) -> dict[str, Any]:
    """Prune the checkpoint (or run directory) ``source``, fine-tune it for
    ``finetune_epochs`` with the source run's settings on its dataset, and write the run
    directory ``out`` (``model.pt``, ``config.toml``, ``history.csv``, ``metrics.json``,
    ``prune.json``). Returns the report that ``prune.json`` holds.

    ``data_dir`` overrides where the data is: the ``data_dir`` of a registered dataset, or the
    folder itself for a run trained on an image folder. ``lr`` overrides the source's peak
    learning rate (its optimiser and schedule are kept), ``threads`` (> 0) its ``train.threads``
    for the fine-tuning. ``finetune_epochs=0`` saves the pruned
    model without training. ``data`` is the source's data already prepared (a
    :class:`~cnnlab.training.data.PreparedData`, to prune one run many times without loading
    it again).

    The report: ``method``, ``amount``, ``sparsity`` (magnitude: the fraction of zeros among
    the pruned weights, measured on the saved model; channel: the fraction of the conv and
    linear weights removed), ``params`` and ``macs`` before and after (magnitude pruning keeps
    the shapes, so its MACs are those of a dense kernel; ``params.nonzero_after`` counts what
    is left), ``accuracy`` of the source, of the pruned model and after fine-tuning on the
    data's test split (``eval_split`` says which; the validation split when there is no test
    split), per-layer figures, the new ``model`` record and the ``checkpoint`` path.

    Raises:
        ConfigError: an unknown method, an amount outside [0, 1), negative epochs, a model
            channel pruning does not support, or ``out`` holding a run without ``overwrite``.
        CheckpointError: an unreadable ``source``. DataError: missing data.
    """
    from cnnlab.config import ModelConfig, resolve_saved_config
    from cnnlab.inference.checkpoint import save_checkpoint
    from cnnlab.inference.model import load_model
    from cnnlab.models.summary import summarize
    from cnnlab.training.data import prepare_data
    from cnnlab.training.loop import checkpoint_payload, fit

    if method not in METHODS:
        raise ConfigError(f"the pruning method must be one of {', '.join(METHODS)}; "
                          f"got {method!r}")
    amount = _check_amount(amount)
    if isinstance(finetune_epochs, bool) or not isinstance(finetune_epochs, int) \
            or finetune_epochs < 0:
        raise ConfigError(f"finetune_epochs must be an int >= 0 (0 = no fine-tuning); got "
                          f"{finetune_epochs!r}")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise ConfigError(f"the fine-tuning learning rate must be > 0; got {lr!r}")
    out = Path(out)
    if not overwrite and ((out / "model.pt").exists() or (out / "last.pt").exists()):
        raise ConfigError(f"{out} already holds a run; set overwrite=True to replace it, or "
                          "choose another directory")

    src = load_model(source)
    classifier = src.classifier
    spec = src.input_spec
    cfg = resolve_saved_config(src.config)
    if data_dir:
        registered = cfg.data.dataset in _registered_datasets()
        cfg = dataclasses.replace(cfg, data=(
            dataclasses.replace(cfg.data, data_dir=str(data_dir)) if registered else
            dataclasses.replace(cfg.data, dataset=str(data_dir))))
    if data is None:
        data = prepare_data(cfg.data, seed=cfg.train.seed, progress=progress)
    if list(data.classes) != list(src.classes):
        raise ConfigError(f"the data has classes {data.classes}, the checkpoint {src.classes}; "
                          "set data_dir to use the data the source was trained on")
    # train with the normalisation the source was trained with (and records)
    data = dataclasses.replace(data, mean=tuple(spec.mean), std=tuple(spec.std))
    split = "test" if data.test is not None else ("val" if data.val is not None else None)
    eval_ds = data.test if data.test is not None else data.val
    batch = cfg.train.eval_batch_size

    def acc(model: nn.Module) -> float | None:
        if eval_ds is None:
            return None
        return _accuracy(model, eval_ds.images, eval_ds.targets, spec, batch)

    before = summarize(classifier)
    nonzero_before = _nonzero(classifier)
    acc_source = acc(classifier)
    layers: dict[str, Any]
    masks: list[tuple[torch.Tensor, torch.Tensor]] = []
    if method == "magnitude":
        pruned = classifier
        stats = magnitude_prune(pruned, amount, scope=scope, include_head=include_head)
        masks = _masks(pruned, include_head)
        layers = stats["layers"]
        model_cfg = cfg.model
    else:
        if scope != "global" or not include_head:
            raise ConfigError("the 'scope' and 'include_head' settings of prune are for magnitude "
                              "pruning; channel pruning removes the amount of every layer's "
                              "channels but the output layer's")
        result = prune_channels(classifier, amount, name=cfg.model.name)
        pruned = result.model
        layers = {k: {"before": b, "after": a} for k, (b, a) in result.channels.items()}
        model_cfg = ModelConfig(name=cfg.model.name, kwargs=result.kwargs)
    after = summarize(pruned)
    acc_pruned = acc(pruned)

    optim = cfg.optim if lr is None else dataclasses.replace(cfg.optim, lr=float(lr))
    ft_cfg = dataclasses.replace(
        cfg, model=model_cfg, optim=optim,
        train=dataclasses.replace(cfg.train, epochs=max(1, finetune_epochs),
                                  threads=threads or cfg.train.threads)).validate()
    t0 = time.perf_counter()
    if finetune_epochs > 0:
        with _keep_zeros(masks):
            fitted = fit(ft_cfg, out_dir=out, overwrite=overwrite, progress=progress, data=data,
                         model=pruned)
        final, checkpoint, metrics = fitted.model, fitted.checkpoint, fitted.metrics
    else:
        final = pruned.eval()
        metrics = {"epochs_run": 0, "parameters": _params(final)}
        if eval_ds is not None:
            metrics[f"{split}_accuracy"] = acc_pruned
        out.mkdir(parents=True, exist_ok=True)
        checkpoint = save_checkpoint(out / "model.pt", checkpoint_payload(
            final, ft_cfg, data, spec, metrics))
    finetune_s = round(time.perf_counter() - t0, 2)

    if method == "magnitude":
        final_sparsity = sparsity(final, include_head=include_head)
        layers = final_sparsity["layers"]
        sparse = final_sparsity["sparsity"]
    else:
        kept = sum(m.weight.numel() for _, m in _prunable(final, True))
        total = sum(m.weight.numel() for _, m in _prunable(classifier, True))
        sparse = round(1 - kept / total, 6)
    report: dict[str, Any] = {
        "source": str(src.path), "method": method, "amount": amount,
        **({"scope": scope, "include_head": include_head} if method == "magnitude" else {}),
        "sparsity": sparse,
        "params": {"before": before.total_params, "after": after.total_params,
                   "nonzero_before": nonzero_before, "nonzero_after": _nonzero(final)},
        "macs": {"before": before.total_macs, "after": after.total_macs},
        "eval_split": split, "eval_images": len(eval_ds) if eval_ds is not None else 0,
        "accuracy": {"source": acc_source, "pruned": acc_pruned,
                     "finetuned": acc(final) if finetune_epochs > 0 else None},
        "finetune_epochs": finetune_epochs, "finetune_time_s": finetune_s,
        "lr": ft_cfg.optim.lr,
        "layers": layers,
        "model": {"name": model_cfg.name, "kwargs": dict(model_cfg.kwargs)},
        "metrics": metrics,
        "run_dir": str(out), "checkpoint": str(checkpoint),
    }
    (out / "prune.json").write_text(json.dumps(clean_json(report), indent=2) + "\n")
    return report


def _registered_datasets() -> list[str]:
    from cnnlab.data import DATASETS

    return list(DATASETS.names())
