"""Typed machine-learning datasets as first-class Dagster assets."""
