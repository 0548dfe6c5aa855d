"""The pure core of svcaudit: Kubernetes API dicts in, expectations and discrepancies out.

No I/O, no clock reads, no Kubernetes client: every function here is deterministic so the
same rules serve the operator, the offline `svcaudit expect` command and the tests.
"""
