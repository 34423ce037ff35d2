"""The checks of deploy/check-k8s.py, one module per concern."""
