"""The project's local Kubernetes cluster, as a package (standard library only).

- `e2e.cluster.cluster`: the control plane of local processes (etcd, kube-apiserver, ...,
  kwok, CoreDNS), its state folder and its commands;
- `e2e.cluster.node`: the optional real node (kubelet + containerd) and its images;
- `build.sh`, `install-deps.sh`, `versions.env`: the pinned binaries and system packages.

Command line, from the repository's root: `python -m e2e.cluster up|down|status|env|stop|start`
(e2e/cluster/__main__.py), or `make cluster-up` / `cluster-down` / `cluster-status`.
"""
