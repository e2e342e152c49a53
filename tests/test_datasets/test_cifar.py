"""CIFAR-10 read without running anything its pickles contain (issue 22)."""
import os
import os.path as osp
import pickle

import numpy as np
import pytest

from acon_mm.datasets import DataValidationError, ValidatedCIFAR10, read_cifar, write_cifar


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), \
        rng.integers(0, 10, n).tolist()


@pytest.mark.parametrize('version', ['python', 'binary'])
def test_round_trip_both_versions(tmp_path, version):
    imgs, labels = _images(23)
    written = write_cifar(str(tmp_path), 'train', imgs, labels, version=version)
    assert len([w for w in written if 'data_batch' in w]) == 5
    write_cifar(str(tmp_path), 'test', imgs[:7], labels[:7], version=version)
    got, got_labels, folder = read_cifar(str(tmp_path), 'train')
    assert folder.endswith('-py' if version == 'python' else '-bin')
    np.testing.assert_array_equal(got, imgs)
    assert got_labels == labels
    test_imgs, test_labels, _ = read_cifar(str(tmp_path), 'test')
    np.testing.assert_array_equal(test_imgs, imgs[:7])


def test_reads_a_python2_style_pickle(tmp_path):
    # the real python version was pickled by Python 2: keys and strings as bytes
    imgs, labels = _images(10)
    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()
    flat = imgs.transpose(0, 3, 1, 2).reshape(10, 3072)
    for name in [f'data_batch_{i}' for i in range(1, 6)]:
        entry = {b'batch_label': b'x', b'labels': labels[:2], b'data': flat[:2]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    got, got_labels, _ = read_cifar(str(tmp_path), 'train')
    assert got.shape == (10, 32, 32, 3) and got_labels == labels[:2] * 5


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_planted_malicious_pickle_is_refused_without_running(tmp_path):
    imgs, labels = _images(10)
    write_cifar(str(tmp_path), 'train', imgs, labels)
    marker = tmp_path / 'PWNED'
    evil = {'data': _Evil(str(marker)), 'labels': labels}
    path = tmp_path / 'cifar-10-batches-py' / 'data_batch_3'
    path.write_bytes(pickle.dumps(evil, protocol=2))
    # the same file does run under plain pickle (the test plants a real exploit) ...
    with pytest.raises(DataValidationError, match=r"data_batch_3: refused to unpickle: "
                       r"it names the global (posix|os)\.system"):
        read_cifar(str(tmp_path), 'train')
    assert not marker.exists()
    pickle.loads(path.read_bytes())
    assert marker.exists()  # ... so the refusal above is what kept it from running


def test_bad_files_named(tmp_path):
    with pytest.raises(DataValidationError, match='no CIFAR-10 here.*cifar-10-batches-py'):
        read_cifar(str(tmp_path), 'train')
    imgs, labels = _images(10)
    write_cifar(str(tmp_path), 'train', imgs, labels, version='binary')
    path = tmp_path / 'cifar-10-batches-bin' / 'data_batch_2.bin'
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataValidationError, match='data_batch_2.bin: .* not a whole number'):
        read_cifar(str(tmp_path), 'train')
    os.remove(path)
    with pytest.raises(DataValidationError, match='data_batch_2.bin'):
        read_cifar(str(tmp_path), 'train')
    labels[4] = 12
    write_cifar(str(tmp_path / 'b'), 'train', imgs, labels)
    with pytest.raises(DataValidationError, match='label 12 is outside 0..9'):
        read_cifar(str(tmp_path / 'b'), 'train')
    (tmp_path / 'b' / 'cifar-10-batches-py' / 'data_batch_1').write_bytes(b'not a pickle')
    with pytest.raises(DataValidationError, match='data_batch_1: not a readable CIFAR pickle'):
        read_cifar(str(tmp_path / 'b'), 'train')


def test_dataset_through_mmpretrain_registry_and_pipeline(tmp_path):
    pytest.importorskip('mmpretrain')
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS
    from mmpretrain.utils import register_all_modules

    import acon_mm  # noqa: F401
    register_all_modules(init_default_scope=False)
    imgs, labels = _images(20)
    write_cifar(str(tmp_path), 'test', imgs, labels)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        ds = DATASETS.build(dict(type='ValidatedCIFAR10', data_root=str(tmp_path),
                                 split='test', pipeline=[dict(type='PackInputs')]))
        item = ds[3]
    assert isinstance(ds, ValidatedCIFAR10) and len(ds) == 20
    assert ds.metainfo['classes'][0] == 'airplane'
    assert tuple(item['inputs'].shape) == (3, 32, 32)
    assert int(item['data_samples'].gt_label) == labels[3]
    np.testing.assert_array_equal(item['inputs'].permute(1, 2, 0).numpy(), imgs[3])
    assert osp.isdir(tmp_path / 'cifar-10-batches-py')
