"""What ACON learned and what it costs: the logic behind
``tools/analysis_tools/{plot_acon_curves,analyze_acon,get_flops}.py``.

* :mod:`.curves`: the family as curves (``acon_curve``, ``plot_acon_curves``);
* :mod:`.parameters`: learned ``p1, p2, beta`` per layer, meta-ACON's
  generated beta over images (``BetaRecorder``);
* :mod:`.model_loading`: a model from a config and checkpoint, images through
  the config's test pipeline;
* :mod:`.report`: the per-layer analysis, its CSV/JSON/plots;
* :mod:`.complexity`: parameters and FLOPs, ACON's elementwise ops included.
"""
from .complexity import (ELEMENTWISE_OPS, complexity, naive_acon_ops,
                         swap_acon_for_relu)
from .curves import (DEFAULT_OUT_ROOT, acon_curve, acon_curve_grad,
                     plot_acon_curves)
from .model_loading import (build_model_from_cfg, display_image, image_batches,
                            load_model, test_pipeline_cfg)
from .parameters import BetaRecorder, layer_parameters
from .report import analyze_model, summary_text, write_analysis

__all__ = [
    'ELEMENTWISE_OPS', 'complexity', 'naive_acon_ops', 'swap_acon_for_relu',
    'DEFAULT_OUT_ROOT', 'acon_curve', 'acon_curve_grad', 'plot_acon_curves',
    'build_model_from_cfg', 'display_image', 'image_batches', 'load_model',
    'test_pipeline_cfg', 'BetaRecorder', 'layer_parameters', 'analyze_model',
    'summary_text', 'write_analysis'
]
