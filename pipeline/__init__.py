"""The self-supervised learning pipeline: data, models, methods, training, evaluation, report (stages/ runs them)."""
