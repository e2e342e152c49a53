"""Check COCO and Cityscapes data before (or when) training reaches it.

A bad annotation found at hour 30 of a run, reported as a ``KeyError`` deep
inside a transform, costs the run. These checks name the culprit instead: the
file, the annotation id, the image, the value.

* :func:`check_coco` parses a COCO ``instances_*.json`` and checks its
  structure, its categories, its boxes and (optionally) that every image file
  exists. Fatal problems (the file does not parse, a required key is missing,
  an annotation names a category or an image that is not in the file, an
  image file is missing) raise :class:`DataValidationError`; box problems
  (non-positive size, outside the image) are collected per annotation and
  raised or logged as the caller chooses.
* :func:`check_seg_map` checks one label map (values in ``0..C-1`` plus the
  ignore index, and the size of its image).
"""
import json
import os.path as osp
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    'DataValidationError', 'DataSampleError', 'check_coco', 'check_seg_map',
    'format_problems'
]


class DataValidationError(ValueError):
    """The data set's files are malformed or inconsistent (names the file)."""


class DataSampleError(RuntimeError):
    """A sample failed in the data pipeline (names the files and transform)."""


def format_problems(title: str, problems: Sequence[str], limit: int = 20) -> str:
    """``title`` and the first ``limit`` problems, one a line, with a count."""
    lines = [f'{title} ({len(problems)} problem'
             f'{"s" if len(problems) != 1 else ""}):']
    lines += [f'  - {p}' for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f'  ... and {len(problems) - limit} more')
    return '\n'.join(lines)


def _load_json(ann_file: str, content: Optional[bytes]) -> Dict[str, Any]:
    if content is None:
        if not osp.isfile(ann_file):
            raise DataValidationError(
                f'COCO annotation file not found: {ann_file} (absolute: '
                f'{osp.abspath(ann_file)}); check data_root and ann_file')
        with open(ann_file, 'rb') as f:
            content = f.read()
    try:
        data = json.loads(content)
    except UnicodeDecodeError as err:
        raise DataValidationError(
            f'malformed COCO JSON {ann_file}: not UTF-8 text ({err})') from None
    except json.JSONDecodeError as err:
        raise DataValidationError(
            f'malformed COCO JSON {ann_file}: {err.msg} at line {err.lineno} '
            f'column {err.colno} (character {err.pos})') from None
    if not isinstance(data, dict):
        raise DataValidationError(
            f'malformed COCO JSON {ann_file}: the top level is a '
            f'{type(data).__name__}, expected an object with "images", '
            '"annotations" and "categories"')
    missing = [k for k in ('images', 'annotations', 'categories')
               if not isinstance(data.get(k), list)]
    if missing:
        raise DataValidationError(
            f'malformed COCO JSON {ann_file}: missing or not a list: '
            f'{", ".join(repr(k) for k in missing)} (found keys: '
            f'{sorted(data)})')
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and \
        np.isfinite(v)


def check_coco(ann_file: str,
               img_prefix: Optional[str] = None,
               check_files: bool = True,
               box_tolerance: float = 1.0,
               content: Optional[bytes] = None
               ) -> Tuple[Dict[str, Any], List[str]]:
    """Parse and check a COCO detection annotation file.

    Args:
        ann_file (str): path of the JSON file (named in every message).
        img_prefix (str, optional): directory the images' ``file_name`` are
            relative to; needed for ``check_files``.
        check_files (bool): check that every image file exists.
        box_tolerance (float): how many pixels a box may extend beyond its
            image before it is reported as outside.
        content (bytes, optional): the file's bytes, if already read.

    Returns:
        tuple: the parsed dict (ready for ``pycocotools``) and the list of
        box problems, each naming the annotation id, the image id and file.

    Raises:
        DataValidationError: the file is malformed or inconsistent, or image
            files are missing; the message names the file and every culprit
            (the first 20, with a count).
    """
    data = _load_json(ann_file, content)
    fatal: List[str] = []
    boxes: List[str] = []

    cat_ids = set()
    for i, cat in enumerate(data['categories']):
        if not isinstance(cat, dict) or 'id' not in cat or 'name' not in cat:
            fatal.append(f'categories[{i}] needs "id" and "name": {cat!r}')
            continue
        cat_ids.add(cat['id'])

    images: Dict[Any, Dict[str, Any]] = {}
    missing_files: List[str] = []
    for i, img in enumerate(data['images']):
        if not isinstance(img, dict):
            fatal.append(f'images[{i}] is not an object: {img!r}')
            continue
        lack = [k for k in ('id', 'file_name', 'height', 'width')
                if k not in img]
        if lack:
            fatal.append(f'images[{i}] (id {img.get("id")}) lacks '
                         f'{", ".join(lack)}')
            continue
        if img['id'] in images:
            fatal.append(f'image id {img["id"]} appears twice '
                         f'({images[img["id"]]["file_name"]}, '
                         f'{img["file_name"]})')
        if not (_is_number(img['height']) and _is_number(img['width'])
                and img['height'] > 0 and img['width'] > 0):
            fatal.append(f'image id {img["id"]} ({img["file_name"]}): size '
                         f'{img["width"]}x{img["height"]} is not positive')
        images[img['id']] = img
        if check_files and img_prefix is not None and \
                '://' not in str(img_prefix):
            path = osp.join(img_prefix, img['file_name'])
            if not osp.isfile(path):
                missing_files.append(f'image id {img["id"]}: {path}')

    ann_ids = set()
    for i, ann in enumerate(data['annotations']):
        if not isinstance(ann, dict):
            fatal.append(f'annotations[{i}] is not an object: {ann!r}')
            continue
        aid = ann.get('id', f'<none, annotations[{i}]>')
        lack = [k for k in ('id', 'image_id', 'category_id', 'bbox')
                if k not in ann]
        if lack:
            fatal.append(f'annotation id {aid} lacks {", ".join(lack)}')
            continue
        if aid in ann_ids:
            fatal.append(f'annotation id {aid} appears twice')
        ann_ids.add(aid)
        img = images.get(ann['image_id'])
        where = (f'annotation id {aid} (image id {ann["image_id"]}'
                 + (f', {img["file_name"]})' if img else ')'))
        if img is None:
            fatal.append(f'{where}: image_id {ann["image_id"]} is not in '
                         '"images"')
            continue
        if ann['category_id'] not in cat_ids:
            fatal.append(f'{where}: category_id {ann["category_id"]} is not '
                         f'in "categories" (ids {sorted(cat_ids)})')
        bbox = ann['bbox']
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
                and all(_is_number(v) for v in bbox)):
            fatal.append(f'{where}: bbox {bbox!r} is not 4 finite numbers '
                         '[x, y, w, h]')
            continue
        if ann.get('ignore', False) or ann.get('iscrowd', 0):
            continue
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            boxes.append(f'{where}: bbox [x, y, w, h] = {bbox} has '
                         'non-positive size')
            continue
        W, H = img['width'], img['height']
        t = box_tolerance
        if x < -t or y < -t or x + w > W + t or y + h > H + t:
            boxes.append(f'{where}: bbox [x, y, w, h] = {bbox} lies outside '
                         f'the {W}x{H} image')
    if fatal:
        raise DataValidationError(
            format_problems(f'bad COCO annotation file {ann_file}', fatal))
    if missing_files:
        raise DataValidationError(format_problems(
            f'image files listed in {ann_file} are missing under '
            f'{img_prefix}', missing_files))
    return data, boxes


def check_seg_map(seg_map: np.ndarray,
                  seg_map_path: str,
                  num_classes: int,
                  ignore_index: int = 255,
                  img_shape: Optional[Tuple[int, int]] = None,
                  img_path: Optional[str] = None) -> None:
    """Check a semantic label map's values and size.

    Raises:
        DataValidationError: a value is outside ``0..num_classes-1`` and
            ``ignore_index``, or the map's size is not the image's; the
            message names the label file (and the image), the bad values and
            how many pixels hold them.
    """
    if img_shape is not None and tuple(seg_map.shape[:2]) != \
            tuple(img_shape[:2]):
        raise DataValidationError(
            f'label map {seg_map_path} is {seg_map.shape[1]}x'
            f'{seg_map.shape[0]} (WxH) but its image {img_path} is '
            f'{img_shape[1]}x{img_shape[0]}; they must be the same size')
    seg_map = np.asarray(seg_map)
    if seg_map.dtype == np.uint8:  # fast path: a lookup table over 0..255
        ok = np.zeros(256, dtype=bool)
        ok[:max(0, min(num_classes, 256))] = True
        if 0 <= ignore_index < 256:
            ok[ignore_index] = True
        outside = ~ok[seg_map]
        if not outside.any():
            return
        seg_map = seg_map[outside]
    values, counts = np.unique(seg_map, return_counts=True)
    bad = [(int(v), int(c)) for v, c in zip(values, counts)
           if not (0 <= v < num_classes or v == ignore_index)]
    if bad:
        shown = ', '.join(f'{v} ({c} px)' for v, c in bad[:10])
        more = f' and {len(bad) - 10} more values' if len(bad) > 10 else ''
        raise DataValidationError(
            f'label map {seg_map_path} holds values outside 0-'
            f'{num_classes - 1} and {ignore_index} (ignore): {shown}{more}. '
            'Cityscapes labels must be train ids (*_gtFine_labelTrainIds.png '
            'written by cityscapesscripts/preparation/'
            'createTrainIdLabelImgs.py), not label ids or colours')


def iter_missing(paths: Iterable[Tuple[str, str]]) -> List[str]:
    """``'what: path'`` for each ``(what, path)`` whose local file is missing."""
    return [f'{what}: {p}' for what, p in paths
            if '://' not in p and not osp.isfile(p)]
