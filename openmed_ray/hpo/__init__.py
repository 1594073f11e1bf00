"""Hyperparameter search (Ray Tune + OptunaSearch) and best-of-breed adapter selection."""
