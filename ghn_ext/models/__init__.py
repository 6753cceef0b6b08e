"""The models that emit weights: the graph hypernetwork and the one-shot baseline."""
