"""Small, deterministic datasets in the real COCO and Cityscapes layouts.

They let the demo, the tests and a machine without the real data run the
project's configs unchanged: only ``data_root`` differs.

COCO layout written by :func:`make_coco_demo` (``root`` plays ``data/coco``)::

    root/annotations/instances_train2017.json
    root/annotations/instances_val2017.json
    root/train2017/000000000001.jpg ...
    root/val2017/000000100001.jpg ...

Each image holds 1-``max_objects`` non-overlapping filled shapes of the classes
``('circle', 'square', 'triangle')`` on a textured background; every shape is
an annotation with its tight box ``[x, y, w, h]``, its polygon, its area and
``iscrowd=0`` (what ``pycocotools`` and mmdet's ``CocoDataset`` read).

Cityscapes layout written by :func:`make_cityscapes_demo` (``root`` plays
``data/cityscapes``)::

    root/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    root/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelTrainIds.png
    root/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png

ImageNet layout written by :func:`make_imagenet_demo` (``root`` plays
``data/imagenet``; mmpretrain's ``CustomDataset`` folder layout and ImageNet's
``meta/*.txt`` lists both)::

    root/train/<class>/<class>_00000.JPEG ...
    root/val/<class>/<class>_00000.JPEG ...
    root/meta/train.txt, root/meta/val.txt    ("<class>/<file> <label>" lines)

CIFAR-10 layout written by :func:`make_cifar_demo`
(:mod:`acon_mm.testing.cifar_demo`; ``root`` plays ``data/cifar10``)::

    root/cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta

One shape of the class (the COCO demo's ``circle``/``square``/``triangle``)
per image, so a backbone pretrained on it has seen what the demo detector
looks for.

Label maps hold the 19 train ids 0-18 and 255 (ignore, the ego-vehicle strip
at the bottom), as ``cityscapesscripts/preparation/createTrainIdLabelImgs.py``
writes them; ``_labelIds`` hold the matching full Cityscapes ids. A scene is a
street-like layout (sky, buildings, vegetation, sidewalk, road) with objects
of the other classes drawn in their Cityscapes colours plus noise.

Everything is a pure function of ``seed`` (numpy ``default_rng``); PNG output
is byte-identical for the same seed, JPEG output is as deterministic as the
installed libjpeg.
"""
import inspect
import json
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cifar_demo import make_cifar_demo

__all__ = [
    'COCO_DEMO_CLASSES', 'CITYSCAPES_CLASSES', 'make_coco_demo',
    'make_cityscapes_demo', 'make_imagenet_demo', 'make_cifar_demo', 'make_demo_data',
    'DEMO_DATASETS'
]

COCO_DEMO_CLASSES: Tuple[str, ...] = ('circle', 'square', 'triangle')

#: The 19 Cityscapes training classes (train ids 0-18), mmseg's order.
CITYSCAPES_CLASSES: Tuple[str, ...] = (
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
    'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
    'truck', 'bus', 'train', 'motorcycle', 'bicycle')

#: Cityscapes colours of the 19 train ids (RGB), from cityscapesscripts.
CITYSCAPES_PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
    (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
    (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100),
    (0, 0, 230), (119, 11, 32))

#: Full Cityscapes label ids of the train ids 0-18 (cityscapesscripts labels).
CITYSCAPES_TRAINID_TO_ID: Tuple[int, ...] = (7, 8, 11, 12, 13, 17, 19, 20, 21,
                                             22, 23, 24, 25, 26, 27, 28, 31,
                                             32, 33)

# Base hue of each demo shape class (OpenCV hue, 0-179); colours are jittered
# around it, so colour helps but the shape decides near the hue borders.
_SHAPE_HUES = (10, 70, 130)


def _cv2():
    try:
        import cv2
    except ImportError as err:  # pragma: no cover - opencv comes with mmcv
        raise ImportError('the demo data generator needs OpenCV '
                          '(`pip install opencv-python`, installed with mmcv)'
                          ) from err
    return cv2


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour gradient with mild noise, uint8 HxWx3 (BGR)."""
    c0 = rng.uniform(40, 215, size=3)
    c1 = rng.uniform(40, 215, size=3)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    t = (np.cos(angle) * xx / max(w - 1, 1) + np.sin(angle) * yy / max(h - 1, 1))
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape_polygon(cls_id: int, cx: float, cy: float, size: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Vertices (N, 2) float of shape ``cls_id`` centred at (cx, cy)."""
    r = size / 2.0
    if cls_id == 0:  # circle (polygon with many vertices)
        n = 32
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)
    if cls_id == 1:  # square, slightly rotated
        rot = rng.uniform(-0.3, 0.3)
        a = rot + np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        rr = r * np.sqrt(2) * 0.8
        return np.stack([cx + rr * np.cos(a), cy + rr * np.sin(a)], axis=1)
    # triangle, random orientation
    rot = rng.uniform(0, 2 * np.pi)
    a = rot + np.array([0.0, 2.0 / 3.0, 4.0 / 3.0]) * np.pi
    return np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], axis=1)


def _shape_colour(cls_id: int, rng: np.random.Generator) -> Tuple[int, int, int]:
    cv2 = _cv2()
    hue = (_SHAPE_HUES[cls_id] + rng.integers(-25, 26)) % 180
    hsv = np.array([[[hue, rng.integers(150, 256), rng.integers(150, 256)]]],
                   dtype=np.uint8)
    bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def _coco_image(rng: np.random.Generator, h: int, w: int, max_objects: int,
                min_size: int, max_size: int) -> Tuple[np.ndarray, List[dict]]:
    """One image (BGR) and its annotations (without ids)."""
    cv2 = _cv2()
    img = _background(rng, h, w)
    n_obj = int(rng.integers(1, max_objects + 1))
    placed: List[Tuple[float, float, float, float]] = []
    anns = []
    for _ in range(n_obj):
        for _attempt in range(20):
            cls_id = int(rng.integers(0, len(COCO_DEMO_CLASSES)))
            size = float(rng.uniform(min_size, max_size))
            cx = float(rng.uniform(size / 2 + 1, w - size / 2 - 1))
            cy = float(rng.uniform(size / 2 + 1, h - size / 2 - 1))
            poly = _shape_polygon(cls_id, cx, cy, size, rng)
            x0, y0 = poly.min(axis=0)
            x1, y1 = poly.max(axis=0)
            box = (x0 - 2, y0 - 2, x1 + 2, y1 + 2)
            if all(box[2] < p[0] or box[0] > p[2] or box[3] < p[1]
                   or box[1] > p[3] for p in placed):
                break
        else:
            continue
        placed.append(box)
        mask = np.zeros((h, w), np.uint8)
        pts = np.round(poly * 16).astype(np.int32)  # 4 fractional bits
        cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=4)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            continue
        colour = np.array(_shape_colour(cls_id, rng), np.float32)
        shade = colour[None] + rng.normal(0, 8, size=(len(xs), 3))
        img[ys, xs] = np.clip(shade, 0, 255).astype(np.uint8)
        bx0, by0 = int(xs.min()), int(ys.min())
        bw, bh = int(xs.max()) - bx0 + 1, int(ys.max()) - by0 + 1
        anns.append(
            dict(
                category_id=cls_id + 1,
                bbox=[float(bx0), float(by0), float(bw), float(bh)],
                area=float(len(xs)),
                segmentation=[[round(float(v), 2) for v in poly.reshape(-1)]],
                iscrowd=0))
    return img, anns


def make_coco_demo(root: str,
                   num_train: int = 400,
                   num_val: int = 50,
                   img_size: Tuple[int, int] = (128, 128),
                   max_objects: int = 3,
                   min_size: int = 18,
                   max_size: int = 56,
                   seed: int = 0) -> Dict[str, str]:
    """Write a COCO-format detection set of shapes under ``root``.

    Args:
        root (str): plays ``data/coco``.
        num_train (int): images in ``train2017``.
        num_val (int): images in ``val2017``.
        img_size (tuple[int, int]): ``(height, width)`` of every image.
        max_objects (int): at most this many shapes per image (at least 1).
        min_size, max_size (int): shape diameter range in pixels.
        seed (int): everything written is a function of it.

    Returns:
        dict: ``data_root``, ``train_ann``, ``val_ann`` paths.
    """
    cv2 = _cv2()
    h, w = int(img_size[0]), int(img_size[1])
    if max_size >= min(h, w) - 2:
        raise ValueError(f'max_size={max_size} does not fit images of size '
                         f'{h}x{w}')
    if min(num_train, num_val) < 1:
        raise ValueError('num_train and num_val must be >= 1, got '
                         f'{num_train}, {num_val}')
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    categories = [
        dict(id=i + 1, name=n, supercategory='shape')
        for i, n in enumerate(COCO_DEMO_CLASSES)
    ]
    out = dict(data_root=root)
    ann_id = 1
    for split, num, id0, sub_seed in (('train', num_train, 1, 0),
                                      ('val', num_val, 100001, 1)):
        rng = np.random.default_rng([seed, sub_seed])
        img_dir = osp.join(root, f'{split}2017')
        os.makedirs(img_dir, exist_ok=True)
        images, annotations = [], []
        for k in range(num):
            img_id = id0 + k
            file_name = f'{img_id:012d}.jpg'
            img, anns = _coco_image(rng, h, w, max_objects, min_size, max_size)
            cv2.imwrite(osp.join(img_dir, file_name), img,
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            images.append(
                dict(id=img_id, file_name=file_name, height=h, width=w))
            for a in anns:
                a.update(id=ann_id, image_id=img_id)
                annotations.append(a)
                ann_id += 1
        ann_file = osp.join(root, 'annotations', f'instances_{split}2017.json')
        with open(ann_file, 'w') as f:
            json.dump(
                dict(
                    info=dict(description='acon-mm demo shapes', version='1.0',
                              year=2021),
                    licenses=[],
                    images=images,
                    annotations=annotations,
                    categories=categories), f)
        out[f'{split}_ann'] = ann_file
    return out


def make_imagenet_demo(root: str,
                       num_train: int = 60,
                       num_val: int = 20,
                       img_size: Tuple[int, int] = (64, 64),
                       seed: int = 0) -> Dict[str, object]:
    """Write a small classification set in ImageNet's layout under ``root``.

    Args:
        root (str): plays ``data/imagenet``.
        num_train (int): training images per class.
        num_val (int): validation images per class.
        img_size (tuple[int, int]): ``(height, width)`` of every image.
        seed (int): everything written is a function of it.

    Returns:
        dict: ``data_root``, ``classes``, ``train_dir``, ``val_dir``,
        ``train_ann``, ``val_ann``.
    """
    cv2 = _cv2()
    h, w = int(img_size[0]), int(img_size[1])
    if min(num_train, num_val) < 1:
        raise ValueError('num_train and num_val must be >= 1, got '
                         f'{num_train}, {num_val}')
    if min(h, w) < 16:
        raise ValueError(f'img_size {h}x{w} is too small (16 pixels at least)')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    out: Dict[str, object] = dict(data_root=root,
                                  classes=tuple(COCO_DEMO_CLASSES))
    for split, num, sub_seed in (('train', num_train, 2), ('val', num_val, 3)):
        rng = np.random.default_rng([seed, sub_seed])
        lines = []
        for label, cls in enumerate(COCO_DEMO_CLASSES):
            os.makedirs(osp.join(root, split, cls), exist_ok=True)
            for k in range(num):
                img = _background(rng, h, w)
                size = float(rng.uniform(0.35, 0.8) * min(h, w))
                cx = float(rng.uniform(size / 2 + 1, w - size / 2 - 1))
                cy = float(rng.uniform(size / 2 + 1, h - size / 2 - 1))
                poly = _shape_polygon(label, cx, cy, size, rng)
                pts = np.round(poly * 16).astype(np.int32)
                cv2.fillPoly(img, [pts], _shape_colour(label, rng),
                             lineType=cv2.LINE_8, shift=4)
                name = f'{cls}/{cls}_{k:05d}.JPEG'
                cv2.imwrite(osp.join(root, split, name), img,
                            [cv2.IMWRITE_JPEG_QUALITY, 95])
                lines.append(f'{name} {label}')
        ann = osp.join(root, 'meta', f'{split}.txt')
        with open(ann, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        out[f'{split}_dir'] = osp.join(root, split)
        out[f'{split}_ann'] = ann
    return out


def _cityscapes_scene(rng: np.random.Generator, h: int,
                      w: int) -> Tuple[np.ndarray, np.ndarray]:
    """One street-like scene: image (BGR uint8) and train-id map (uint8)."""
    cv2 = _cv2()
    lab = np.full((h, w), 10, np.uint8)  # sky
    horizon = int(h * rng.uniform(0.35, 0.5))
    # buildings / walls / vegetation skyline above the horizon
    x = 0
    while x < w:
        bw = int(rng.integers(w // 10, w // 4))
        top = int(rng.uniform(0.05, 0.3) * h)
        cls = int(rng.choice([2, 2, 2, 3, 8, 8]))
        lab[top:horizon, x:x + bw] = cls
        x += bw
    # ground: sidewalk band, road, terrain patches
    side = horizon + int(rng.uniform(0.05, 0.12) * h)
    lab[horizon:side] = 1
    lab[side:] = 0
    if rng.random() < 0.7:
        tx = int(rng.integers(0, w // 2))
        lab[horizon:side, tx:tx + w // 5] = 9
    # fence along the sidewalk
    if rng.random() < 0.5:
        fx = int(rng.integers(0, w // 2))
        fh = max(2, int(0.06 * h))
        lab[horizon - fh:horizon, fx:fx + w // 3] = 4
    # poles with lights / signs
    for _ in range(int(rng.integers(1, 4))):
        px = int(rng.integers(2, w - 4))
        ptop = int(rng.uniform(0.1, 0.3) * h)
        lab[ptop:side, px:px + max(2, w // 80)] = 5
        box = max(3, h // 24)
        lab[ptop:ptop + box * 2, px - box // 2:px + box] = int(rng.choice([6, 7]))
    # vehicles and people on the road / sidewalk
    objs = [13, 13, 14, 15, 16, 17, 18, 11, 11, 12]
    for _ in range(int(rng.integers(2, 6))):
        cls = int(rng.choice(objs))
        if cls in (11, 12):
            ow, oh = int(w * rng.uniform(0.02, 0.04)), int(h * rng.uniform(0.12, 0.22))
        elif cls in (17, 18):
            ow, oh = int(w * rng.uniform(0.04, 0.07)), int(h * rng.uniform(0.08, 0.14))
        else:
            ow, oh = int(w * rng.uniform(0.08, 0.2)), int(h * rng.uniform(0.08, 0.2))
        ox = int(rng.integers(0, max(1, w - ow)))
        oy = int(rng.integers(horizon, max(horizon + 1, h - oh)))
        if cls in (13, 14, 15, 16):  # vehicles: rounded box
            cv2.rectangle(lab, (ox, oy), (ox + ow, oy + oh), cls, -1)
        else:
            cv2.ellipse(lab, (ox + ow // 2, oy + oh // 2),
                        (max(1, ow // 2), max(1, oh // 2)), 0, 0, 360, cls, -1)
    # ego-vehicle strip: ignored
    lab[h - max(2, h // 16):] = 255
    # image: class colours with per-class shade and per-pixel noise
    pal = np.array(CITYSCAPES_PALETTE + ((0, 0, 0), ), np.float32)
    idx = np.where(lab == 255, 19, lab)
    shade = rng.uniform(0.8, 1.2, size=(20, 1)).astype(np.float32)
    rgb = pal[idx] * shade[idx]
    rgb += rng.normal(0, 10, size=rgb.shape)
    img = np.clip(rgb, 0, 255).astype(np.uint8)[..., ::-1]  # RGB -> BGR
    return np.ascontiguousarray(img), lab


def make_cityscapes_demo(root: str,
                         num_train: int = 40,
                         num_val: int = 10,
                         img_size: Tuple[int, int] = (128, 256),
                         seed: int = 0) -> Dict[str, str]:
    """Write a Cityscapes-layout segmentation set under ``root``.

    Args:
        root (str): plays ``data/cityscapes``.
        num_train (int): train images (split over the cities ``aachen``
            and ``bochum``).
        num_val (int): val images (city ``frankfurt``).
        img_size (tuple[int, int]): ``(height, width)``; Cityscapes is
            1024x2048, the demo default is 128x256.
        seed (int): everything written is a function of it.

    Returns:
        dict: ``data_root``, ``train_img_dir``, ``val_img_dir`` paths.
    """
    cv2 = _cv2()
    h, w = int(img_size[0]), int(img_size[1])
    if h < 32 or w < 32:
        raise ValueError(f'img_size must be at least 32x32, got {h}x{w}')
    if min(num_train, num_val) < 1:
        raise ValueError('num_train and num_val must be >= 1, got '
                         f'{num_train}, {num_val}')
    lut = np.full(256, 0, np.uint8)  # train id -> label id; 255 -> 0 (unlabeled)
    for tid, lid in enumerate(CITYSCAPES_TRAINID_TO_ID):
        lut[tid] = lid
    out = dict(data_root=root)
    for split, num, cities, sub_seed in (('train', num_train,
                                          ('aachen', 'bochum'), 0),
                                         ('val', num_val, ('frankfurt', ), 1)):
        rng = np.random.default_rng([seed, 100 + sub_seed])
        for k in range(num):
            city = cities[k % len(cities)]
            stem = f'{city}_{k // len(cities):06d}_{19:06d}'
            img_dir = osp.join(root, 'leftImg8bit', split, city)
            gt_dir = osp.join(root, 'gtFine', split, city)
            os.makedirs(img_dir, exist_ok=True)
            os.makedirs(gt_dir, exist_ok=True)
            img, lab = _cityscapes_scene(rng, h, w)
            cv2.imwrite(osp.join(img_dir, f'{stem}_leftImg8bit.png'), img)
            cv2.imwrite(
                osp.join(gt_dir, f'{stem}_gtFine_labelTrainIds.png'), lab)
            cv2.imwrite(osp.join(gt_dir, f'{stem}_gtFine_labelIds.png'),
                        lut[lab])
        out[f'{split}_img_dir'] = osp.join(root, 'leftImg8bit', split)
    return out


#: the dataset names of :func:`make_demo_data`, each with its writer and
#: the directory it writes under ``out_dir``
DEMO_DATASETS = {'coco': make_coco_demo, 'cityscapes': make_cityscapes_demo,
                 'imagenet': make_imagenet_demo, 'cifar': make_cifar_demo}
STAMP_FILE = '.acon_mm_demo.json'


def make_demo_data(out_dir: str,
                   seed: int = 0,
                   which: Sequence[str] = ('coco', 'cityscapes'),
                   coco_kwargs: Optional[dict] = None,
                   cityscapes_kwargs: Optional[dict] = None,
                   imagenet_kwargs: Optional[dict] = None,
                   cifar_kwargs: Optional[dict] = None,
                   force: bool = False,
                   log: Optional[Callable[[str], None]] = print) -> Dict[str, bool]:
    """Write ``out_dir/coco``, ``out_dir/cityscapes``, ``out_dir/imagenet`` and/or ``out_dir/cifar``
    (as listed in ``which``), each only if it is not there already.

    Each dataset directory gets a stamp (``.acon_mm_demo.json``: the seed and
    the writer's arguments, defaults filled in); a directory whose stamp
    matches is up to date and left as it is, so the demo and
    ``tools/misc/make_demo_data.py`` can be run again at no cost.

    Args:
        out_dir (str): the parent directory.
        seed (int): the seed of every dataset.
        which (Sequence[str]): names from :data:`DEMO_DATASETS`.
        coco_kwargs, cityscapes_kwargs, imagenet_kwargs, cifar_kwargs (dict, optional):
            more arguments of :func:`make_coco_demo`,
            :func:`make_cityscapes_demo`, :func:`make_imagenet_demo`,
            :func:`make_cifar_demo`.
        force (bool): write even an up-to-date dataset.
        log (callable, optional): gets one line per dataset (``None``: quiet).

    Returns:
        dict[str, bool]: per dataset name, whether it was written (``False``:
        up to date).

    Raises:
        ValueError: a name of ``which`` is not in :data:`DEMO_DATASETS`.
    """
    kwargs = {'coco': coco_kwargs, 'cityscapes': cityscapes_kwargs,
              'imagenet': imagenet_kwargs, 'cifar': cifar_kwargs}
    for name in which:
        if name not in DEMO_DATASETS:
            raise ValueError(f'unknown demo dataset {name!r}; choose from '
                             + ', '.join(map(repr, DEMO_DATASETS)))
    written = {}
    for name in which:
        fn, root = DEMO_DATASETS[name], osp.join(out_dir, name)
        params = {k: p.default for k, p in inspect.signature(fn).parameters.items()
                  if p.default is not inspect.Parameter.empty}
        params.update(kwargs[name] or {}, seed=seed)
        params = json.loads(json.dumps(params))  # tuples as the stamp holds them
        stamp = osp.join(root, STAMP_FILE)
        if not force and osp.isfile(stamp):
            with open(stamp) as f:
                if json.load(f) == params:
                    written[name] = False
                    if log:
                        log(f'{name} demo: {root} is up to date (seed {seed})')
                    continue
        fn(root, **params)
        with open(stamp, 'w') as f:
            json.dump(params, f)
        written[name] = True
        if log:
            log(f'{name} demo: wrote {root} (seed {seed})')
    return written
