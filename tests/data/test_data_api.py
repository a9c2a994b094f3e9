"""The public surface of cnnlab.data."""

import cnnlab.data


def test_all_is_sorted_complete_and_importable():
    names = cnnlab.data.__all__
    assert len(set(names)) == len(names)
    for name in names:
        assert getattr(cnnlab.data, name) is not None
    public = {n for n in vars(cnnlab.data) if not n.startswith("_")}
    modules = {"datasets", "digits", "download", "export", "folders", "idx", "qmnist", "robust",
               "split", "transforms", "viz",
               "Any"}
    assert public - modules <= set(names)

