"""The figures the notebooks show. Plain matplotlib; each function returns its Figure so a notebook can
``save_figure`` it. Nothing here computes a result: the numbers come from the model and metrics.

One module per part of the suite (every name is importable from ``asif_nb.plots``)."""
from .base import show_images, show_pixels
from .representation import plot_relative_representation, asif_diagram
from .similarity import similarity_heatmap
from .explain import plot_explanation
from .curves import plot_figure4
from .unknown import plot_threshold_curve, plot_risk_coverage, plot_unknown_rates
from .memory import plot_usage_histogram, plot_pruning
from .compare import plot_method_curves, plot_training_cost

__all__ = ["asif_diagram", "plot_explanation", "plot_figure4", "plot_method_curves", "plot_pruning", "plot_relative_representation", "plot_risk_coverage", "plot_threshold_curve", "plot_training_cost", "plot_unknown_rates", "plot_usage_histogram", "show_images", "show_pixels", "similarity_heatmap"]
