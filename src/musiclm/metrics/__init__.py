"""Evaluation metrics as torchmetrics.Metric subclasses."""
