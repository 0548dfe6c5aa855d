"""svcaudit: audits Kubernetes service discovery (EndpointSlices, env vars, DNS)."""

__version__ = "0.1.0"
