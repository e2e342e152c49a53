"""Transforms that reproduce the official ACON evaluation preprocessing."""
from typing import Dict

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.registry import TRANSFORMS

__all__ = ['OfficialResizeShortSide']


@TRANSFORMS.register_module()
class OfficialResizeShortSide(BaseTransform):
    """Resize the short side to ``size`` exactly as the official ``OpencvResize``.

    The official evaluation resizes the BGR array with OpenCV ``INTER_LINEAR``
    so that the short side is ``size`` and the long side
    ``int(size / short * long + 0.5)`` (other rounding rules differ by a pixel
    on some images, which moves the centre crop).

    Required keys: ``img``. Modified: ``img``, ``img_shape``. Added:
    ``scale_factor`` (w, h).

    Args:
        size (int): target of the short side. Default: 256.
    """

    def __init__(self, size: int = 256) -> None:
        if not isinstance(size, int) or size <= 0:
            raise ValueError(f'OfficialResizeShortSide: size must be a '
                             f'positive int, got {size!r}')
        self.size = size

    @staticmethod
    def target_hw(h: int, w: int, size: int):
        """``(new_h, new_w)`` of an ``h`` x ``w`` image, the official rounding."""
        if h <= w:
            return size, int(size / h * w + 0.5)
        return int(size / w * h + 0.5), size

    def transform(self, results: Dict) -> Dict:
        import cv2
        img: np.ndarray = results['img']
        h, w = img.shape[:2]
        nh, nw = self.target_hw(h, w, self.size)
        if (nh, nw) != (h, w):
            img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        results['img'] = img
        results['img_shape'] = img.shape[:2]
        results['scale_factor'] = (nw / w, nh / h)
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(size={self.size})'
