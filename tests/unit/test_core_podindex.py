"""PodIndex answers what the straightforward scans answer: the pods a selector picks, and an
audit built on shared NamespaceIndexes equals one that builds its own (so the operator may
keep the indexes per namespace across audits)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from k8sobjs import container, pod, port, service
from test_core_env_scale import env_pods
from test_core_env_scale import services as env_services_strategy

from svcaudit.core.audit import AuditInputs, NamespaceIndexes, audit_service
from svcaudit.core.endpoints import selects
from svcaudit.core.envvars import ServiceEnvIndex, service_variables
from svcaudit.core.findings import env_container_findings, with_service
from svcaudit.core.model import Pod, Service
from svcaudit.core.podindex import PodIndex

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NOW = datetime(2025, 1, 2, tzinfo=UTC)
GRACE = timedelta(seconds=5)
LABELS = st.dictionaries(
    st.sampled_from(["app", "tier", "env"]), st.sampled_from(["a", "b", ""]), max_size=3
)


@st.composite
def labelled_pods(draw: st.DrawFn) -> list[Pod]:
    return [
        Pod.from_api(pod(f"p{i}", draw(st.sampled_from(["default", "other"])), labels=draw(LABELS)))
        for i in range(draw(st.integers(0, 10)))
    ]


@SETTINGS
@given(labelled_pods(), LABELS, st.sampled_from(["default", "other"]))
def test_selected_equals_the_selector_scan(
    ps: list[Pod], selector: dict[str, str], ns: str
) -> None:
    svc = Service.from_api(service("web", ns, selector=selector or None))
    assert PodIndex(ps).selected(svc) == [p for p in ps if selects(svc, p)]


@SETTINGS
@given(env_services_strategy(), st.data())
def test_env_findings_through_a_shared_pod_index_equal_a_private_one(
    svcs: list[Service], data: st.DataObject
) -> None:
    ps = data.draw(env_pods(svcs))
    index = PodIndex(ps)
    for svc in svcs:
        others = [s for s in svcs if s is not svc]
        mine = env_container_findings(svc, ps, others, GRACE)
        assert env_container_findings(svc, ps, others, GRACE, pod_index=index) == mine


def test_candidates_skip_current_containers_and_keep_the_rest() -> None:
    """Started a minute after the service: current, not visited; started before it, or
    setting one of its variables explicitly: visited."""
    svc = Service.from_api(service("web", ports=[port(80)]))  # created 2025-01-01T10:00:00Z
    late = Pod.from_api(pod("late", started="2025-01-01T10:01:00Z"))
    early = Pod.from_api(pod("early", started="2025-01-01T09:00:00Z"))
    shadow = Pod.from_api(
        pod(
            "shadow",
            containers=[container(env=[{"name": "WEB_SERVICE_HOST", "value": "x"}])],
            started="2025-01-01T10:01:00Z",
        )
    )
    index = PodIndex([late, early, shadow])
    names = [n for n, _ in service_variables(svc)]
    visited = index.env_candidates(names, svc.creation_timestamp, GRACE, svc.env_spec_touched_at)
    assert [s.pod.name for s in visited] == ["early", "shadow"]


@SETTINGS
@given(env_services_strategy(), st.data())
def test_audit_with_shared_namespace_indexes_equals_a_private_audit(
    svcs: list[Service], data: st.DataObject
) -> None:
    ps = [p for p in data.draw(env_pods(svcs)) if p.namespace == "default"]
    mine = [s for s in svcs if s.namespace == "default"]
    assume(mine)
    svc = data.draw(st.sampled_from(mine))
    env_services = with_service(svcs, svc)
    shared = NamespaceIndexes(PodIndex(ps), ServiceEnvIndex(env_services))
    alone = audit_service(AuditInputs(svc, ps, None, None, env_services), None, NOW)
    together = audit_service(
        AuditInputs(svc, ps, None, None, env_services, indexes=shared), None, NOW
    )
    assert together == alone
