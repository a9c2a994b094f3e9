import pytest

from cnnlab.config import (
    RECIPES,
    Config,
    dump_toml,
    flags_layer,
    load_config_file,
    parse_set,
    resolve_config,
)
from cnnlab.errors import ConfigError


def test_defaults_validate_and_round_trip_through_toml(tmp_path):
    cfg = resolve_config({"model": {"name": "resnet", "dropout": 0.2}}, recipe="paper")
    path = tmp_path / "c.toml"
    path.write_text(dump_toml(cfg.to_dict()))
    again = resolve_config(load_config_file(path))
    assert again == cfg
    assert again.recipe == "paper"
    assert again.model.kwargs == {"dropout": 0.2}


def test_precedence_recipe_file_set_flags():
    cfg = resolve_config(
        {"optim": {"lr": 0.5}, "train": {"epochs": 3, "batch_size": 7}},  # file
        parse_set(["optim.lr=0.25", "train.epochs=4"]),  # --set
        flags_layer({"lr": 0.125, "epochs": None}),  # flags; None = not given
        recipe="paper",
    )
    assert cfg.optim.lr == 0.125
    assert cfg.train.epochs == 4
    assert cfg.train.batch_size == 7
    assert cfg.optim.optimizer == RECIPES["paper"]["optim"]["optimizer"]


def test_set_parses_toml_values_and_nested_keys():
    layer = parse_set(["data.augment.enabled=true", "train.seed=3", "model.name=lenet5",
                       "data.dataset=some/dir"])
    assert layer == {"data": {"augment": {"enabled": True}, "dataset": "some/dir"},
                     "train": {"seed": 3}, "model": {"name": "lenet5"}}


def test_new_model_name_drops_old_kwargs_but_keeps_given_ones():
    cfg = resolve_config(parse_set(["model.dropout=0.3", "model.name=resnet"]), recipe="paper")
    assert cfg.model.name == "resnet"
    assert cfg.model.kwargs == {"dropout": 0.3}


@pytest.mark.parametrize(("layer", "message"), [
    ({"optim": {"lr": -1.0}}, "The 'optim.lr' setting must be a positive number. Got -1.0"),
    ({"train": {"epochs": 0}}, "The 'train.epochs' setting must be an integer >= 1. Got 0"),
    ({"optim": {"lrr": 0.1}}, "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
    ({"optim": {"optimizer": "adamm"}}, "must be one of adam, adamw, sgd"),
    ({"train": {"epochs": "many"}}, "The 'train.epochs' setting must be a int. Got 'many'"),
    ({"data": {"val_fraction": 1.0}}, "The 'data.val_fraction' setting must be in [0, 1)"),
    ({"data": 3}, "The 'data' setting must be a table"),
])
def test_invalid_settings_name_the_key(layer, message):
    with pytest.raises(ConfigError) as e:
        resolve_config(layer)
    assert message in str(e.value)


def test_unknown_recipe_suggests():
    with pytest.raises(ConfigError, match="unknown recipe 'fats'; did you mean 'fast'"):
        resolve_config(recipe="fats")


def test_bad_set_syntax():
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        parse_set(["optim.lr"])


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim\nlr = ")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config_file(bad)


def test_every_recipe_resolves():
    for name in RECIPES:
        assert isinstance(resolve_config(recipe=name), Config)
