"""Adapters, one module per external system: Delta, Kafka, S3/MinIO, MLflow."""
