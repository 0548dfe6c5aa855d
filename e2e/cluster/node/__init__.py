"""The real node of the local cluster: containerd + runc + CNI + kubelet + kube-proxy.

`realnode.up(state)` / `realnode.down(state)` are called by e2e.cluster.cluster; `images`
builds the node's container images by hand, without any registry.
"""
