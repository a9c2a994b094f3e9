import dataclasses
import math

import pytest

from cnnlab.config import (
    FLAG_KEYS,
    FLAGS,
    RECIPES,
    AugmentSettings,
    Config,
    DataConfig,
    ModelConfig,
    OptimConfig,
    SettingError,
    TrainConfig,
    dump_toml,
    flags_layer,
    load_config_file,
    parse_set,
    resolve_config,
    resolve_run_config,
    resolve_saved_config,
)
from cnnlab.errors import ConfigError, RegistryError
from cnnlab.training.loop import check_model_settings


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
    with pytest.raises(ConfigError, match="Each override must be KEY=VALUE"):
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


# --- options from one source: field metadata -> flags, checks -----------------------------

def test_flags_are_generated_from_the_fields_with_their_defaults():
    # every flag the CLI had when they were written by hand, with the key it sets
    assert FLAG_KEYS == {
        "model": "model.name", "dataset": "data.dataset", "data_dir": "data.data_dir",
        "val_fraction": "data.val_fraction", "test_fraction": "data.test_fraction",
        "image_size": "data.image_size", "preprocess": "data.preprocess",
        "limit": "data.limit", "augment": "data.augment.enabled", "epochs": "train.epochs",
        "batch_size": "train.batch_size", "label_smoothing": "train.label_smoothing",
        "ema": "train.ema", "early_stopping": "train.early_stopping", "seed": "train.seed",
        "device": "train.device", "threads": "train.threads",
        "adversarial": "train.adversarial.method", "eps": "train.adversarial.eps",
        "steps": "train.adversarial.steps", "alpha": "train.adversarial.alpha",
        "optimizer": "optim.optimizer", "lr": "optim.lr", "weight_decay": "optim.weight_decay",
        "momentum": "optim.momentum", "scheduler": "optim.scheduler"}
    defaults = Config().to_dict()
    for flag in FLAGS:
        node = defaults
        for part in flag.key.split("."):
            node = node[part]
        assert flag.default == node, flag
        assert flag.help and "(default: " in flag.help_text(), flag
    by_name = {f.name: f for f in FLAGS}
    assert by_name["weight_decay"].option == "--weight-decay"
    assert by_name["epochs"].help_text().endswith("(default: 20)")
    assert by_name["optimizer"].choices == ("adam", "adamw", "sgd")
    assert by_name["preprocess"].choices == ("mnist-digits", "resize")
    assert by_name["augment"].help_text().endswith("(default: off)")
    assert {f.group for f in FLAGS} == {"model and data", "optimisation", "run"}
    assert [f.name for f in FLAGS if f.group == "run"] == ["seed", "device", "threads"]


def _numeric_keys():
    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from walk(value, f"{prefix}{f.name}.")
            elif isinstance(value, int | float) and not isinstance(value, bool):
                yield f"{prefix}{f.name}"
    return list(walk(Config(), ""))


@pytest.mark.parametrize("key", _numeric_keys())
def test_every_numeric_setting_must_be_finite(key):
    section, *rest = key.split(".")
    for bad in (math.inf, -math.inf, math.nan):
        layer = node = {}
        for part in [section, *rest[:-1]]:
            node = node.setdefault(part, {})
        node[rest[-1]] = bad
        with pytest.raises(SettingError) as e:
            # an int field refuses inf as a type error, a float field as out of range
            resolve_config(layer)
        assert e.value.key == key
        assert f"The '{key}' setting must be" in str(e.value)
        assert f"Got {bad!r} instead." in str(e.value)


@pytest.mark.parametrize(("layer", "message"), [
    ({"optim": {"weight_decay": math.inf}},
     "The 'optim.weight_decay' setting must be finite and >= 0. Got inf instead."),
    ({"train": {"min_delta": math.nan}},
     "The 'train.min_delta' setting must be finite and in [0, 1). Got nan instead."),
    ({"optim": {"warmup_epochs": math.inf}},
     "The 'optim.warmup_epochs' setting must be finite and >= 0. Got inf instead."),
    ({"train": {"min_delta": -0.1}},
     "The 'train.min_delta' setting must be in [0, 1). Got -0.1 instead."),
    ({"data": {"augment": {"scale_min": 1.5}}},
     "The 'data.augment.scale_min' setting must be > 0 and <= data.augment.scale_max"),
    ({"train": {"amp": "maybe"}}, "The 'train.amp' setting must be one of auto, on, off"),
    ({"data": {"preprocess": "crop"}},
     "must be one of mnist-digits, resize, or empty for auto. Got 'crop' instead."),
])
def test_ranges_and_finiteness_name_the_setting(layer, message):
    with pytest.raises(SettingError) as e:
        resolve_config(layer)
    assert message in str(e.value)


def test_settings_sections_validate_themselves():
    with pytest.raises(SettingError, match=r"The 'train\.min_delta' setting .* Got nan"):
        TrainConfig(min_delta=math.nan).validate()
    with pytest.raises(SettingError, match=r"The 'data\.augment\.translate' setting"):
        AugmentSettings(translate=1.0).validate()
    with pytest.raises(SettingError, match=r"The 'optim\.lr' setting"):
        OptimConfig(lr=0.0).validate()
    assert DataConfig().validate() == DataConfig()
    # replace() skips the merge's type coercion; validate still refuses what it lets through
    cfg = dataclasses.replace(Config(), train=dataclasses.replace(TrainConfig(), epochs=math.inf))
    with pytest.raises(SettingError, match=r"'train\.epochs' setting must be finite"):
        cfg.validate()


# --- model options combine across layers (issue 14 §2) ------------------------------------

def test_model_flag_keeps_model_settings_given_in_earlier_layers():
    # `--set model.depth=20 --model resnet`: the flag layer names the model, --set its depth
    cfg = resolve_config(parse_set(["model.depth=20"]), flags_layer({"model": "resnet"}))
    assert cfg.model == ModelConfig("resnet", {"depth": 20})
    # whatever layer gives which: the file the kwargs, --set the name
    cfg = resolve_config({"model": {"kernel_size": 5}}, parse_set(["model.name=resnet"]),
                         flags_layer({"epochs": 2}))
    assert cfg.model == ModelConfig("resnet", {"kernel_size": 5})
    # later layers add to and override earlier ones
    cfg = resolve_config({"model": {"name": "resnet", "depth": 14, "dropout": 0.2}},
                         parse_set(["model.depth=20"]), flags_layer({"model": "resnet"}))
    assert cfg.model.kwargs == {"depth": 20, "dropout": 0.2}


def test_the_recipes_model_settings_go_only_with_its_model():
    # the recipe's own model named again: its settings stay, with the user's on top
    same = resolve_config(flags_layer({"model": "resnet"}), parse_set(["model.dropout=0.3"]),
                          recipe="default")
    recipe_kwargs = {k: v for k, v in RECIPES["default"]["model"].items() if k != "name"}
    assert same.model == ModelConfig("resnet", {**recipe_kwargs, "dropout": 0.3})
    # another model: the recipe's resnet settings go, the user's stay
    other = resolve_config(parse_set(["model.width=8"]), flags_layer({"model": "convnet"}),
                           recipe="default")
    assert other.model == ModelConfig("convnet", {"width": 8})


def test_resume_base_is_the_saved_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    saved = resolve_config(parse_set(["model.depth=20"]), flags_layer({"model": "resnet"}))
    (run / "config.toml").write_text(dump_toml(saved.to_dict()))
    cfg = resolve_run_config(overrides=["train.epochs=3"], flags={"lr": 0.01, "seed": None},
                             resume_dir=run)
    assert cfg.model == ModelConfig("resnet", {"depth": 20})
    assert (cfg.train.epochs, cfg.optim.lr) == (3, 0.01)
    with pytest.raises(ConfigError, match=r"config\.toml does not exist; is '.*none' a "
                                          r"cross-validation directory\?"):
        resolve_run_config(resume_dir=tmp_path / "none", kind="cross-validation")


def test_a_saved_config_keeps_what_it_trained_with_not_what_its_recipe_reads_today(tmp_path):
    # a robust run saved before the outline, style and crop settings existed (as the packaged
    # model's config was): those settings take their defaults, which draw what it drew then
    saved = resolve_config(recipe="robust").to_dict()
    augment = saved["data"]["augment"]
    for key in ("robust_outline", "robust_styles", "robust_style_scale", "robust_crop"):
        del augment[key]
    cfg = resolve_saved_config(saved, {"train": {"epochs": 3}})
    a = cfg.data.augment
    assert (a.robust_outline, a.robust_styles, a.robust_style_scale, a.robust_crop) == (
        "band", False, 1.0, False)
    assert cfg.recipe == "robust" and cfg.train.epochs == 3
    assert cfg.model == resolve_config(recipe="robust").model
    # so does resuming it
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(dump_toml(saved))
    resumed = resolve_run_config(resume_dir=run)
    assert resumed.data.augment.robust_styles is False and resumed.recipe == "robust"
    # the recipe as it reads today has them
    today = resolve_config(recipe="robust").data.augment
    assert (today.robust_outline, today.robust_styles, today.robust_crop) == (
        "thin", True, True)


def test_the_resolver_layers_recipe_file_set_flags(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[optim]\nlr = 0.5\n[train]\nepochs = 3\nbatch_size = 7\n')
    cfg = resolve_run_config(recipe="paper", file=path,
                             overrides=["optim.lr=0.25", "train.epochs=4"],
                             flags={"lr": 0.125, "epochs": None})
    assert (cfg.optim.lr, cfg.train.epochs, cfg.train.batch_size) == (0.125, 4, 7)
    assert resolve_run_config(file={"train": {"epochs": 2}}).train.epochs == 2
    with pytest.raises(ConfigError, match="unknown option 'lrr'; did you mean 'lr'"):
        resolve_run_config(flags={"lrr": 1.0})


@pytest.mark.parametrize(("layers", "error", "message"), [
    # unknown keys, named with the model and what it takes
    ([parse_set(["model.nope=1"]), flags_layer({"model": "resnet"})], ConfigError,
     "model 'resnet' got an unknown keyword argument 'nope'"),
    # kwargs given for one model that do not apply to the model a later layer names
    ([parse_set(["model.depth=20"]), flags_layer({"model": "lenet5"})], ConfigError,
     "model 'lenet5' got an unknown keyword argument 'depth'"),
    ([{"model": {"name": "lenet5"}}, parse_set(["model.depth=20"])], ConfigError,
     "model 'lenet5' got an unknown keyword argument 'depth'"),
    # invalid values, named
    ([parse_set(["model.kernel_size=-3"]), flags_layer({"model": "resnet"})], ConfigError,
     "The 'kernel_size' parameter of model 'resnet' must be an odd int >= 1"),
    ([flags_layer({"model": "resnet"}), parse_set(["model.kernel_size=-3"])], ConfigError,
     "The 'kernel_size' parameter of model 'resnet' must be an odd int >= 1"),
    ([flags_layer({"model": "lenet"})], RegistryError, "unknown model 'lenet'"),
])
def test_model_settings_are_checked_by_the_builder(layers, error, message):
    cfg = resolve_config(*layers)
    with pytest.raises(error) as e:
        check_model_settings(cfg)
    assert message in str(e.value)


def test_valid_model_settings_pass_the_check_for_every_recipe():
    for name in RECIPES:
        check_model_settings(resolve_config(recipe=name))
    check_model_settings(resolve_config(parse_set(["model.depth=20"]),
                                        flags_layer({"model": "resnet"})))
    # 224x224 stands in for the data's own size: a model that needs more than 28x28 passes
    check_model_settings(resolve_config({"model": {"name": "paper-cnn", "blocks": 5}}))
    with pytest.raises(ConfigError, match="input_size must be at least 32x32"):
        check_model_settings(resolve_config({"model": {"name": "paper-cnn", "blocks": 5},
                                             "data": {"image_size": 28}}))
