"""The generated CIFAR-format set of the activation search (issue 22)."""
import numpy as np

from acon_mm.datasets import read_cifar
from acon_mm.testing.demo_data import make_cifar_demo, make_demo_data


def test_generated_cifar_reads_back_deterministic_and_balanced(tmp_path):
    out = make_cifar_demo(str(tmp_path / 'a'), num_train=200, num_test=50, seed=3)
    imgs, labels, folder = read_cifar(out['data_root'], 'train')
    assert imgs.shape == (200, 32, 32, 3) and imgs.dtype == np.uint8
    assert np.bincount(labels).tolist() == [20] * 10
    test_imgs, test_labels, _ = read_cifar(out['data_root'], 'test')
    assert len(test_imgs) == 50 and set(test_labels) == set(range(10))
    again = make_cifar_demo(str(tmp_path / 'b'), num_train=200, num_test=50, seed=3)
    np.testing.assert_array_equal(read_cifar(again['data_root'], 'train')[0], imgs)
    other = make_cifar_demo(str(tmp_path / 'c'), num_train=200, num_test=50, seed=4)
    assert not np.array_equal(read_cifar(other['data_root'], 'train')[0], imgs)
    # images vary within a class (not one template per class)
    same = imgs[np.asarray(labels) == 0].astype(float)
    assert same.std(0).mean() > 30


def test_make_demo_data_cifar_stamp(tmp_path):
    kw = dict(num_train=50, num_test=10)
    assert make_demo_data(str(tmp_path), which=['cifar'], cifar_kwargs=kw, log=None) == \
        {'cifar': True}
    assert make_demo_data(str(tmp_path), which=['cifar'], cifar_kwargs=kw, log=None) == \
        {'cifar': False}


def test_generated_cifar_contrast_and_bad_arguments(tmp_path):
    import pytest
    out = make_cifar_demo(str(tmp_path / 'a'), num_train=50, num_test=10, noise=0.0)
    imgs = read_cifar(out['data_root'], 'train')[0].astype(float)
    # without noise every grating spans at least `contrast` (100) in each channel
    # (the occluding patch can only widen the range)
    spread = imgs.reshape(50, -1, 3).max(1) - imgs.reshape(50, -1, 3).min(1)
    assert spread.min() >= 90
    with pytest.raises(ValueError, match='contrast'):
        make_cifar_demo(str(tmp_path / 'b'), num_train=50, num_test=10, contrast=300)
