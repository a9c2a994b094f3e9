import numpy as np
import pytest

from cnnlab.baselines import BASELINES, CLASSIFIERS, fit_baseline
from cnnlab.data import ImageDataset
from cnnlab.errors import ConfigError, DataError, RegistryError
from synth import learnable_images

CLASSES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def train_test():
    x, y = learnable_images(16, 4, seed=0)
    xt, yt = learnable_images(8, 4, seed=5)
    return (ImageDataset(x, y, CLASSES, "synthetic"), ImageDataset(xt, yt, CLASSES, "synthetic"))


def test_the_required_baselines_are_registered():
    required = {"hog-svm", "pixels-knn", "edges-tree", "hog-forest", "pixels-svm", "hog-knn"}
    assert required <= set(BASELINES.names())
    for entry in BASELINES:
        assert entry.name == f"{entry.obj.feature}-{entry.obj.classifier}"
        assert entry.obj.classifier in CLASSIFIERS and entry.description


@pytest.mark.parametrize("name", BASELINES.names())
def test_each_baseline_learns(name, train_test):
    train, test = train_test
    b = fit_baseline(name, train, seed=0, progress=False)
    preds = b.predict(test.images)
    assert preds.dtype == np.int64 and preds.shape == (len(test),)
    accuracy = (preds == test.targets.numpy()).mean()
    assert accuracy >= 0.75, (name, accuracy)  # chance is 0.25
    assert b.fit_time_s > 0 and b.train_images == len(train)
    assert b.stored_values > 0 and b.size_mb > 0
    if b.has_proba:
        probs = b.predict_proba(test.images)
        assert probs.shape == (len(test), 4) and np.allclose(probs.sum(1), 1)
    else:
        with pytest.raises(ConfigError, match=f"baseline '{name}' gives no probabilities"):
            b.predict_proba(test.images)


def test_max_train_takes_a_stratified_subset(train_test):
    b = fit_baseline("pixels-knn", train_test[0], seed=0, max_train=20, progress=False)
    assert b.train_images == 20
    assert len(np.unique(b.estimator._y)) == 4


def test_fit_prints_progress_lines(train_test, capsys):
    fit_baseline("pixels-svm", train_test[0], progress=True)
    err = capsys.readouterr().err
    assert "pixels-svm: pixels features 100%" in err
    assert "pixels-svm: fitting SVC on 64 x 784 features ..." in err
    assert "pixels-svm: fitted in" in err


def test_errors(train_test):
    with pytest.raises(RegistryError, match="unknown baseline 'hog-svn'; did you mean 'hog-svm'"):
        fit_baseline("hog-svn", train_test[0])
    with pytest.raises(ConfigError, match=r"'max_train' parameter of fit_baseline .* Got 0"):
        fit_baseline("hog-svm", train_test[0], max_train=0)
    one_class = train_test[0].subset(train_test[0].targets == 0)
    with pytest.raises(DataError, match="at least 2 classes; got 16 image"):
        fit_baseline("hog-svm", one_class, progress=False)


def test_public_names():
    import cnnlab.baselines as pkg

    assert sorted(pkg.__all__) == sorted(n for n in vars(pkg) if not n.startswith("_")
                                         and n not in {"classifiers", "features"})
