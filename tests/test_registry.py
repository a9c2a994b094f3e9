import pytest

import cnnlab
from cnnlab.errors import (
    CheckpointError,
    CnnlabError,
    ConfigError,
    DataError,
    DatasetNotFoundError,
    RegistryError,
    ShapeError,
)
from cnnlab.registry import Registry


def test_registry_did_you_mean():
    reg: Registry[int] = Registry("widget")
    reg.register("alpha", description="first")(1)
    reg.register("beta")(2)
    assert reg.get("alpha") == 1
    assert reg.names() == ["alpha", "beta"]
    with pytest.raises(RegistryError) as e:
        reg.get("alpah")
    assert str(e.value) == "unknown widget 'alpah'; did you mean 'alpha'? (known: alpha, beta)"
    with pytest.raises(ValueError, match="already registered"):
        reg.register("beta")(3)


def test_exception_tree():
    assert issubclass(DatasetNotFoundError, DataError)
    assert issubclass(DatasetNotFoundError, FileNotFoundError)
    for cls in (ConfigError, DataError, ShapeError, CheckpointError, RegistryError):
        assert issubclass(cls, CnnlabError)
        assert issubclass(cls, ValueError)


def test_public_api_all():
    assert sorted(cnnlab.__all__) == sorted(dir(cnnlab))
    for name in cnnlab.__all__:
        assert getattr(cnnlab, name) is not None


def test_api_functions_are_not_shadowed_by_subpackages():
    import cnnlab.training  # a subpackage import binds its name on the package

    assert callable(cnnlab.train) and callable(cnnlab.load)
