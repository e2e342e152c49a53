"""Run a dataset's pipeline so a failing sample is named, not buried."""
from typing import Any, Callable, Dict, Optional

from .validation import DataSampleError, DataValidationError

__all__ = ['GuardedPipelineMixin']


class GuardedPipelineMixin:
    """Mixin for mmengine ``BaseDataset`` subclasses.

    ``prepare_data`` runs the pipeline's transforms one by one (exactly what
    ``mmengine.dataset.Compose`` does) and

    * calls :meth:`check_sample` after each transform, so a dataset can check
      what a transform has just loaded (image size, label values);
    * turns any exception raised by a transform into :class:`DataSampleError`
      whose message names the sample (index, image and annotation files,
      annotation ids), the transform and the original error (kept as
      ``__cause__``).
    """

    def describe_sample(self, data_info: Dict[str, Any]) -> str:
        """The files (and ids) of a sample, for messages."""
        parts = []
        for key in ('img_path', 'seg_map_path'):
            if data_info.get(key):
                parts.append(f'{key}={data_info[key]}')
        if data_info.get('img_id') is not None:
            parts.append(f'img_id={data_info["img_id"]}')
        if data_info.get('ann_ids'):
            ids = data_info['ann_ids']
            parts.append('ann_ids=' + ','.join(str(i) for i in ids[:10]) +
                         ('...' if len(ids) > 10 else ''))
        ann_file = getattr(self, 'ann_file', None)
        if ann_file:
            parts.append(f'ann_file={ann_file}')
        return ', '.join(parts)

    def check_sample(self, transform: Callable, results: Dict[str, Any],
                     data_info: Dict[str, Any]) -> None:
        """Check ``results`` after ``transform``; raise DataValidationError."""

    def prepare_data(self, idx: int) -> Optional[Any]:
        data_info = self.get_data_info(idx)
        results = data_info
        for t in self.pipeline.transforms:
            try:
                results = t(results)
                if results is not None:
                    self.check_sample(t, results, data_info)
            except DataSampleError:
                raise
            except DataValidationError as err:
                raise DataSampleError(
                    f'bad sample {idx} ({self.describe_sample(data_info)}) '
                    f'after {type(t).__name__}: {err}') from err
            except Exception as err:
                raise DataSampleError(
                    f'{type(err).__name__} in transform {type(t).__name__} '
                    f'for sample {idx} ({self.describe_sample(data_info)}): '
                    f'{err}') from err
            if results is None:
                return None
        return results
