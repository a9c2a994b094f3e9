"""Search spaces: the built-in ones, the TOML format, and the errors for invalid spaces."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.config import resolve_config
from cnnlab.errors import ConfigError
from cnnlab.tune.search import check_space, grid_order, trial_config
from cnnlab.tune.space import SPACES, load_space, nest, space_from_dict


def test_table3_is_the_papers_grid() -> None:
    space = load_space("table3")
    values = {p.key: p.values for p in space.params}
    assert values == {
        "optim.lr": (0.001, 0.01, 0.1),
        "train.batch_size": (32, 64, 128),
        "train.epochs": (10, 20, 30),
        "model.depth": (5, 10, 15),
        "model.kernel_size": (3, 5, 7),
    }
    grid = space.grid()
    assert len(grid) == 243
    assert len({tuple(sorted(p.items())) for p in grid}) == 243
    assert space.objectives == ("val_accuracy",)
    # the grid order is a seeded shuffle of the same points
    order = grid_order(space, seed=0)
    assert order == grid_order(space, seed=0) and order != grid
    assert sorted(map(str, order)) == sorted(map(str, grid))


def test_builtin_spaces_are_valid_for_convnet() -> None:
    for name in SPACES:
        space = load_space(name)
        base = resolve_config({"model": {"name": "convnet"}}, space.base)
        check_space(space, base)  # every choice and bound builds and validates
    nas = load_space("nas")
    assert nas.objectives == ("val_accuracy", "latency_ms") and nas.multi_objective
    assert {p.key for p in nas.params} >= {"model.depth", "model.width", "model.kernel_size",
                                          "model.residual", "model.batch_norm", "model.dropout"}


@pytest.mark.parametrize("family", ["vit", "inception", "densenet", "mobilenet", "efficientnet",
                                    "vit-tiny"])
def test_nas_space_has_knobs_for_the_new_families(family: str) -> None:
    space = load_space("nas", model=family)
    assert space.model == family.removesuffix("-tiny")
    assert "model.dropout" in space.keys and len(space.keys) >= 3
    assert "model.residual" not in space.keys  # convnet's knobs stay convnet's
    base = resolve_config({"model": {"name": family}}, space.base)
    check_space(space, base)  # every choice and bound builds this family


def test_table3_depths_build_convnets_of_that_many_layers() -> None:
    from torch import nn

    space = load_space("table3")
    base = resolve_config({"model": {"name": "convnet"}}, space.base)
    for depth in (5, 10, 15):
        cfg = trial_config(base, {"model.depth": depth, "model.kernel_size": 7})
        from cnnlab.models import create_model

        model = create_model("convnet", **cfg.model.kwargs)
        weighted = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
        assert len(weighted) == depth
        assert all(m.kernel_size == (7, 7) for m in weighted if isinstance(m, nn.Conv2d))


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(
        'objectives = ["val_accuracy", "params"]\n'
        "[base]\ndata.limit = 100\n"
        "[params]\n"
        "train.batch_size = [16, 32]\n"
        "optim.lr = { low = 1e-4, high = 1e-1, log = true }\n"
        "model.depth = { values = [4, 6], low = 4, high = 8 }\n"
        "model.dropout = { low = 0.0, high = 0.5, step = 0.1 }\n"
    )
    space = load_space(str(path))
    assert space.name == "mine" and space.objectives == ("val_accuracy", "params")
    assert space.base == {"data": {"limit": 100}}
    p = {q.key: q for q in space.params}
    assert p["train.batch_size"].values == (16, 32) and not p["train.batch_size"].is_range
    assert p["optim.lr"].log and not p["optim.lr"].is_int
    assert p["model.depth"].is_int and p["model.depth"].values == (4, 6)
    assert p["model.dropout"].step == 0.1 and not p["model.dropout"].is_int
    with pytest.raises(ConfigError, match=r"grid sampler needs the points.*optim\.lr"):
        space.grid()
    assert nest({"optim.lr": 0.1, "model.depth": 4}) == {"optim": {"lr": 0.1},
                                                         "model": {"depth": 4}}


@pytest.mark.parametrize(("params", "message"), [
    ({"optim.lr": []}, "'values' must be a non-empty list"),
    ({"optim.lr": {"values": []}}, "'values' must be a non-empty list"),
    ({"optim.lr": {"low": 0.1, "high": 0.01}}, "'low' must be below 'high'"),
    ({"optim.lr": {"low": 0.0, "high": 0.1, "log": True}}, "log-scale range needs low > 0"),
    ({"optim.lr": {"low": 0.001}}, "needs both 'low' and 'high'"),
    ({"optim.lr": {"values": [0.5], "low": 0.001, "high": 0.1}}, "inside the range"),
    ({"optim.lr": [0.1, 0.1]}, "repeat a value"),
    ({"optim.lr": "0.1"}, "expected a list of choices"),
    ({"lr": [0.1]}, "dotted paths"),
    ({"model.depth": {"low": 4, "high": 8, "step": -1}}, "'step' must be a positive number"),
])
def test_invalid_params(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        space_from_dict("bad", {"params": params})


def test_invalid_space_documents() -> None:
    with pytest.raises(ConfigError, match=r"has no \[params\] table"):
        space_from_dict("bad", {"base": {}})
    with pytest.raises(ConfigError, match="unknown top-level key"):
        space_from_dict("bad", {"params": {"optim.lr": [0.1]}, "parms": {}})
    with pytest.raises(ConfigError, match="unknown objective 'accuracy'"):
        space_from_dict("bad", {"params": {"optim.lr": [0.1]}, "objectives": ["accuracy"]})
    with pytest.raises(ConfigError, match="objectives must be"):
        space_from_dict("bad", {"params": {"optim.lr": [0.1]}, "objectives": ["params"]})
    with pytest.raises(ConfigError, match="neither a built-in space"):
        load_space("no-such-space")


@pytest.mark.parametrize(("params", "message"), [
    ({"optim.lrr": [0.1]}, "optim.lrr.*did you mean 'optim.lr'"),
    ({"optim.lr": {"low": -0.1, "high": 0.1}}, "optim.lr = -0.1.*must be a positive number"),
    ({"train.batch_size": [0, 32]}, "train.batch_size = 0.*must be an integer >= 1"),
    ({"model.dept": [4]}, "model.dept.*did you mean 'depth'"),
    ({"model.depth": [2, 5]}, "model.depth = 2.*int >= 4"),
    ({"model.kernel_size": [3, 4]}, "model.kernel_size = 4.*odd"),
])
def test_check_space_names_the_bad_setting(params: dict, message: str) -> None:
    space = space_from_dict("bad", {"params": params})
    base = resolve_config({"model": {"name": "convnet"}})
    with pytest.raises(ConfigError, match=message):
        check_space(space, base)


def test_table3_on_paper_cnn_searches_its_blocks_and_kernel_size() -> None:
    from torch import nn

    from cnnlab.models import create_model

    space = load_space("table3", model="paper-cnn")
    assert space.model == "paper-cnn"
    assert {p.key: p.values for p in space.params} == {
        "optim.lr": (0.001, 0.01, 0.1),
        "train.batch_size": (32, 64, 128),
        "train.epochs": (10, 20, 30),
        "model.blocks": (1, 2, 3),
        "model.kernel_size": (3, 5, 7),
    }
    assert len(space.grid()) == 243
    base = resolve_config({"model": {"name": "paper-cnn"}}, space.base)
    check_space(space, base)  # every choice and bound builds a paper-cnn at 28x28
    for blocks in (1, 2, 3):
        for kernel_size in (3, 5, 7):
            cfg = trial_config(base, {"model.blocks": blocks, "model.kernel_size": kernel_size})
            assert cfg.model.name == "paper-cnn"
            model = create_model(cfg.model.name, **cfg.model.kwargs)
            convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
            assert len(convs) == blocks
            assert all(c.kernel_size == (kernel_size,) * 2 for c in convs)
            assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    # Table II's network is the middle of the grid
    cfg = trial_config(base, {"model.blocks": 2, "model.kernel_size": 3})
    model = create_model(cfg.model.name, **cfg.model.kwargs)
    assert sum(p.numel() for p in model.parameters()) == 421_642


def test_table3_families() -> None:
    default = load_space("table3")
    assert default.model == "convnet" and default.for_model("convnet") == default
    assert load_space("table3", model="convnet") == default
    tiny = load_space("table3", model="paper-cnn-tiny")
    assert tiny == load_space("table3", model="paper-cnn") and tiny.model == "paper-cnn"
    # choosing a family twice, or going back, gives the same space
    assert tiny.for_model("convnet") == default and default.for_model("paper-cnn") == tiny
    assert tiny.with_objectives(("val_accuracy", "params")).for_model("convnet").objectives == \
        ("val_accuracy", "params")
    with pytest.raises(ConfigError, match=r"search space 'table3' has model knobs for the "
                                          r"families convnet, paper-cnn, not for model 'resnet'; "
                                          r".*\[models\.resnet\] table"):
        load_space("table3", model="resnet")
    # a space without per-family tables applies to every model as it is
    plain = space_from_dict("plain", {"params": {"optim.lr": [0.001, 0.01]}})
    assert plain.model == "" and plain.for_model("resnet") is plain


def test_toml_file_with_per_family_tables(tmp_path: Path) -> None:
    path = tmp_path / "families.toml"
    path.write_text(
        "[params]\noptim.lr = [0.001, 0.01]\n"
        "[models.paper-cnn]\nmodel.blocks = { values = [1, 2], low = 1, high = 3 }\n"
        "[models.convnet]\nmodel.depth = [4, 6]\nmodel.width = [8]\n"
    )
    space = load_space(str(path))
    assert space.model == "paper-cnn" and space.keys == ["optim.lr", "model.blocks"]
    convnet = load_space(str(path), model="convnet")
    assert convnet.keys == ["optim.lr", "model.depth", "model.width"]
    check_space(convnet, resolve_config({"model": {"name": "convnet"}}))
    assert len(convnet.grid()) == 4
    # per-family tables alone are a space too
    only = space_from_dict("only", {"models": {"paper-cnn": {"model": {"blocks": [1, 2]}}}})
    assert only.keys == ["model.blocks"]


@pytest.mark.parametrize(("data", "message"), [
    ({"params": {"model.blocks": [1]}, "models": {"paper-cnn": {"model.blocks": [2]}}},
     r"model\.blocks is in both \[params\] and \[models\.paper-cnn\]"),
    ({"params": {"optim.lr": [0.1]}, "models": {"paper-cnn": {}}},
     "'models' must hold one non-empty table per model family"),
    ({"params": {"optim.lr": [0.1]}, "models": ["paper-cnn"]},
     "'models' must hold one non-empty table per model family"),
    ({"models": {"paper-cnn": {"model.blocks": []}}}, "'values' must be a non-empty list"),
])
def test_invalid_per_family_tables(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        space_from_dict("bad", data)


def test_table3_on_paper_cnn_names_the_blocks_that_fit_small_images() -> None:
    space = load_space("table3", model="paper-cnn")
    base = resolve_config({"model": {"name": "paper-cnn"}}, space.base)
    with pytest.raises(ConfigError, match=r"model\.blocks = 3 is not a valid setting.*got 4x4, "
                                          r"where at most 2 block\(s\) fit"):
        check_space(space, base, size=(4, 4))
