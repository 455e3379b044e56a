"""clickrec: clickstream -> Delta -> ALS -> MLflow -> serving table, batch and streaming."""

__version__ = "0.1.0"
