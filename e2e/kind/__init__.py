"""kind on this machine, offline: our own node image (node_image.py), a cluster on it (local.py)."""
