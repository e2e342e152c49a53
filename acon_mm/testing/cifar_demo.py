"""The generated CIFAR-format set of the activation search (listed as
``'cifar'`` in :mod:`acon_mm.testing.demo_data`).

32x32 RGB images of 10 classes in CIFAR-10's python-version layout (read by
:class:`~acon_mm.datasets.ValidatedCIFAR10`), each class a grating orientation
(0°, 18°, ..., 162°) of random frequency, phase and two random colours at least
``contrast`` apart in every channel, under Gaussian noise and a random occluding
patch. The orientations are only 18° apart (±6° jitter): a small network learns
it, yet stays far from perfect, so that the search's rewards separate. Measured
(5000/1000 images, the defaults): the ResNet-20 child with ReLU reaches 37.9 %
top-1 after 200 iterations of batch 64 (chance 10 %); with colours drawn
independently, noise 0.35 (this module's first version), it stayed at chance
(10.1 % after 150 iterations).
"""
from typing import Dict

import numpy as np

__all__ = ['make_cifar_demo']


def _grating_images(rng: np.random.Generator, labels: np.ndarray,
                    noise: float, contrast: float) -> np.ndarray:
    n = len(labels)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float64) - 15.5
    theta = np.deg2rad(labels * 18.0 + rng.uniform(-6, 6, n))
    freq = rng.uniform(0.3, 0.9, n)
    phase = rng.uniform(0, 2 * np.pi, n)
    proj = (np.cos(theta)[:, None, None] * xx + np.sin(theta)[:, None, None] * yy)
    wave = np.sin(freq[:, None, None] * proj + phase[:, None, None])  # (n, 32, 32)
    c0 = rng.uniform(0, 255, (n, 1, 1, 3))
    # the second colour at least `contrast` away, towards the far end of the range
    d = rng.uniform(contrast, 255, (n, 1, 1, 3)) * np.where(c0 > 127, -1, 1)
    c1 = np.clip(c0 + d, 0, 255)
    img = c0 + (c1 - c0) * (wave[..., None] + 1) / 2
    img += rng.normal(0, noise * 255, img.shape)
    for i in range(n):  # an occluding patch of random colour
        s = int(rng.integers(6, 14))
        y, x = rng.integers(0, 32 - s, 2)
        img[i, y:y + s, x:x + s] = rng.uniform(0, 255, 3)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def make_cifar_demo(root: str,
                    num_train: int = 5000,
                    num_test: int = 1000,
                    noise: float = 0.25,
                    contrast: float = 100.0,
                    seed: int = 0) -> Dict[str, object]:
    """Write a generated 10-class set in CIFAR-10's python-version layout.

    Args:
        root (str): plays ``data/cifar10``.
        num_train (int): training images (split into the 5 batches).
        num_test (int): test images.
        noise (float): standard deviation of the pixel noise, in units of
            the 0-255 range.
        contrast (float): the least difference of a grating's two colours in
            every channel (0-255 units).
        seed (int): everything written is a function of it.

    Returns:
        dict: ``data_root``, ``classes``, ``files``.
    """
    from ..datasets.cifar import CIFAR10_CLASSES, write_cifar
    if not 0 <= contrast <= 255:
        raise ValueError(f'contrast must be in [0, 255], got {contrast}')
    if num_train < 5 or num_test < 1:
        raise ValueError(f'num_train must be >= 5 (five batches) and num_test >= 1, '
                         f'got {num_train}, {num_test}')
    files = []
    for split, num, sub_seed in (('train', num_train, 4), ('test', num_test, 5)):
        rng = np.random.default_rng([seed, sub_seed])
        labels = np.arange(num) % 10
        rng.shuffle(labels)
        files += write_cifar(root, split, _grating_images(rng, labels, noise, contrast),
                             labels.tolist())
    return dict(data_root=root, classes=CIFAR10_CLASSES, files=files)
