"""Evaluation: the registered protocols, features, kNN, linear probes, few-shot, transfer, baselines."""
