"""Model code: split, top-k recommendation, ranking evaluation, the tunable estimator, promotion.

Pure DataFrame functions and estimators live here; MLflow calls live in clickrec.tracking and
Delta reads in clickrec.io.delta, so each part can be tested alone.
"""
