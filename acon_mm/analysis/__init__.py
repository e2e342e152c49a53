"""What ACON learned and what it costs: the logic behind
``tools/analysis_tools/{plot_acon_curves,analyze_acon,get_flops,benchmark_acon}.py``.

* :mod:`.curves`: the family as curves (``acon_curve``, ``plot_acon_curves``);
* :mod:`.parameters`: learned ``p1, p2, beta`` per layer, meta-ACON's
  generated beta over images (``BetaRecorder``);
* :mod:`.model_loading`: a model from a config and checkpoint, images through
  the config's test pipeline;
* :mod:`.report`: the per-layer analysis, its CSV/JSON/plots;
* :mod:`.complexity`: parameters and FLOPs, ACON's elementwise ops included;
* :mod:`.benchmark`: speed and saved memory of the fused layers against
  nn.SiLU, nn.ReLU and the naive formula, on CPU and CUDA (``run_benchmark``);
* :mod:`.study` (with :mod:`.study_logs`, :mod:`.study_report`,
  :mod:`.study_plots`): activation studies, trained and tested with the
  project's tools and reported (``tools/analysis_tools/study.py``).
"""
from .benchmark import BenchmarkOptions, fused_pass_bytes, peak_bandwidth_gbs, run_benchmark
from .complexity import (
    ELEMENTWISE_OPS,
    complexity,
    config_complexity,
    input_shape_from_cfg,
    naive_acon_ops,
    padded_input_shape,
    swap_acon_for_relu,
)
from .curves import DEFAULT_OUT_ROOT, acon_curve, acon_curve_grad, plot_acon_curves
from .model_loading import (
    build_model_from_cfg,
    display_image,
    image_batches,
    load_model,
    test_pipeline_cfg,
)
from .parameters import BetaRecorder, layer_parameters
from .report import analyze_model, summary_text, write_analysis
from .study import (
    StudyError,
    check_family,
    config_differences,
    find_family,
    load_members,
    run_study,
    shorten_schedule,
)
from .study_logs import read_scalars, read_test_result, training_cost
from .study_report import build_report, collect_run, write_report

__all__ = [
    'ELEMENTWISE_OPS', 'complexity', 'config_complexity', 'input_shape_from_cfg',
    'padded_input_shape', 'naive_acon_ops', 'swap_acon_for_relu',
    'DEFAULT_OUT_ROOT', 'acon_curve', 'acon_curve_grad', 'plot_acon_curves',
    'build_model_from_cfg', 'display_image', 'image_batches', 'load_model',
    'test_pipeline_cfg', 'BetaRecorder', 'layer_parameters', 'analyze_model',
    'summary_text', 'write_analysis', 'StudyError', 'check_family',
    'config_differences', 'find_family', 'load_members', 'run_study',
    'shorten_schedule', 'read_scalars', 'read_test_result', 'training_cost',
    'build_report', 'collect_run', 'write_report', 'BenchmarkOptions',
    'run_benchmark', 'fused_pass_bytes', 'peak_bandwidth_gbs'
]
