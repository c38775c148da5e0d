"""deploy/: every kustomization renders and validates (strict) against Kubernetes
1.37; each overlay's objects keep the operational invariants (probes, drain timing,
disruption budget, restricted security, resources, secrets, network policy); and the
configuration each pod would start with passes `skein --check-config`."""

import copy
import re
import tomllib
from urllib.parse import urlparse

import kubernetes_validate
import pytest

from render import (EXTRAS, K8S_VERSION, OVERLAYS, Pod, by_kind, gateway_schema_errors, known_env_vars,
                    one, render, skein_container, workloads)

CRD_GROUPS = ("gateway.networking.k8s.io/",)


def k8s_errors(doc: dict) -> str | None:
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{doc['kind']} {doc['metadata']['name']}: {e.message} at {list(e.path)}"
    return None


def test_the_overlays_are_the_adapters():
    assert {"single", "redis", "redis-streams", "nats", "mesh"} <= set(OVERLAYS), OVERLAYS


@pytest.mark.parametrize("rel", [f"overlays/{o}" for o in OVERLAYS] + EXTRAS)
def test_renders_and_validates_strictly(rel):
    docs = render(rel)
    assert docs, rel
    builtin = [d for d in docs if not d["apiVersion"].startswith(CRD_GROUPS)]
    crds = [d for d in docs if d["apiVersion"].startswith(CRD_GROUPS)]
    errors = [e for e in map(k8s_errors, builtin) if e]
    assert not errors, "\n".join(errors)
    if crds:
        errors = gateway_schema_errors(crds)
        assert not errors, "\n".join(errors)


def test_the_validators_do_reject():
    """The checks above are not vacuous: a misspelt field and a bad type fail."""
    dep = copy.deepcopy(one(render("overlays/redis-streams"), "Deployment", "skein"))
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    assert k8s_errors(dep) and "httpGett" in k8s_errors(dep)
    route = copy.deepcopy(one(render("ingress/gateway-api"), "HTTPRoute", "skein"))
    route["spec"]["rules"][0]["backendRefs"][0]["port"] = "http"
    assert gateway_schema_errors([route])


def test_httproute_fields():
    """What the Gateway API schema check cannot see (it ignores unknown fields): the
    route sends /socket.io/ to the skein Service's port, without request timeouts, with
    cookie persistence."""
    route = one(render("ingress/gateway-api"), "HTTPRoute", "skein")
    assert set(route["spec"]) == {"parentRefs", "hostnames", "rules"}
    (rule,) = route["spec"]["rules"]
    assert set(rule) == {"matches", "backendRefs", "timeouts", "sessionPersistence"}
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/socket.io/"}}]
    assert rule["backendRefs"] == [{"name": "skein", "port": 3000}]
    assert rule["timeouts"] == {"request": "0s", "backendRequest": "0s"}
    assert rule["sessionPersistence"]["type"] == "Cookie"


def test_ingress_nginx_timeouts_and_affinity():
    ing = one(render("ingress/ingress-nginx"), "Ingress", "skein")
    a = ing["metadata"]["annotations"]
    # Above ping_interval + ping_timeout (45 s): idle WebSockets and long-polls survive.
    assert int(a["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > 45
    assert int(a["nginx.ingress.kubernetes.io/proxy-send-timeout"]) > 45
    assert a["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "skein", "port": {"name": "http"}}


class Overlay:
    """One rendered overlay, with the effective configuration of its pods."""

    cache: dict[str, "Overlay"] = {}

    def __init__(self, name: str):
        self.name = name
        self.docs = render(f"overlays/{name}")
        # The nodes: a Deployment, or a StatefulSet on the mesh (stable names, volumes).
        (self.dep,) = [w for w in workloads(self.docs) if w["metadata"]["name"] == "skein"]
        self.pod_spec = self.dep["spec"]["template"]["spec"]
        self.c = skein_container(self.dep)
        pod = Pod(self.docs, self.dep)
        try:
            self.check = pod.check_config()
            self.pod = pod
        finally:
            pod.close()
        assert self.check.returncode == 0, f"{name}: skein --check-config:\n{self.check.stderr}"
        self.effective = tomllib.loads(self.check.stdout)

    @classmethod
    def get(cls, name: str) -> "Overlay":
        if name not in cls.cache:
            cls.cache[name] = Overlay(name)
        return cls.cache[name]

    def port(self, ref) -> int:
        if isinstance(ref, int):
            return ref
        return next(p["containerPort"] for p in self.c["ports"] if p["name"] == ref)


@pytest.fixture(params=OVERLAYS)
def ov(request) -> Overlay:
    return Overlay.get(request.param)


def test_each_pod_configuration_passes_check_config(ov):
    e = ov.effective
    assert e["adapter"] == ov.pod.env["SKEIN_ADAPTER"]
    assert e["node_id"] == "skein-7d9f8-abcde", "the pod name is the node id"
    assert e["grpc_tokens"] == ["<redacted>"], "the token of the Secret file is read, and never printed"
    assert Pod.FAKE_TOKENS.strip() not in ov.check.stdout
    assert e["log_format"] == "json"


def test_service_links_are_off(ov):
    """Docker-link variables of Services skein and skein-grpc (SKEIN_PORT=tcp://...)
    would be read as skein options; Pod emulates them, so with links on, the
    --check-config of every overlay fails, and this says why."""
    assert ov.pod_spec.get("enableServiceLinks") is False
    links = Pod(ov.docs, {**ov.dep, "spec": {**ov.dep["spec"], "template": {
        **ov.dep["spec"]["template"], "spec": {**ov.pod_spec, "enableServiceLinks": True}}}})
    try:
        bad = links.check_config()
    finally:
        links.close()
    assert bad.returncode == 2 and "(from SKEIN_PORT)" in bad.stderr, bad.stderr


def test_no_unknown_option_or_variable(ov):
    known = known_env_vars()
    names = [e["name"] for e in ov.c.get("env", [])] + list(ov.pod.env)
    unknown = sorted({n for n in names if n.startswith("SKEIN_")} - known)
    assert not unknown, f"variables skein does not read: {unknown}"
    # Flags are checked by --check-config itself (an unknown flag is an error, exit 2).


def test_a_bad_rendered_config_fails_the_check(ov):
    """The check sees the overlay's values: a wrong adapter in its ConfigMap fails."""
    pod = Pod(ov.docs, ov.dep)
    try:
        bad = pod.check_config({"SKEIN_ADAPTER": "carrier-pigeon"})
    finally:
        pod.close()
    assert bad.returncode == 2
    assert 'unknown adapter "carrier-pigeon"' in bad.stderr and "SKEIN_ADAPTER" in bad.stderr


def test_probes(ov):
    c, e = ov.c, ov.effective
    ready, live, start = c["readinessProbe"], c["livenessProbe"], c["startupProbe"]
    assert ready["httpGet"]["path"] == "/health/ready" and ov.port(ready["httpGet"]["port"]) == e["port"]
    assert live["httpGet"]["path"] == "/health/live" and ov.port(live["httpGet"]["port"]) == e["port"]
    assert start["grpc"]["port"] == e["grpc_port"], "grpc.health.v1 on the gRPC port"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    mesh = {"mesh": e["mesh_port"]} if e["adapter"] == "mesh" else {}
    assert ports == {"http": e["port"], "grpc": e["grpc_port"], **mesh}


def test_drain_fits_in_the_grace_period(ov):
    e, spec = ov.effective, ov.pod_spec
    pre = ov.c.get("lifecycle", {}).get("preStop")
    pre_s = 0
    if pre:
        # The image has no shell: only Kubernetes' own sleep action can run.
        assert set(pre) == {"sleep"}, pre
        pre_s = pre["sleep"]["seconds"]
    # SIGTERM: drain_period, then at most shutdown_grace for the sockets and again for
    # the HTTP server (node/src/main.rs); 5 s margin at least.
    needed = pre_s + (e["drain_period"] + 2 * e["shutdown_grace"]) / 1000 + 5
    assert spec["terminationGracePeriodSeconds"] >= needed, (spec["terminationGracePeriodSeconds"], needed)
    if ov.dep["kind"] == "StatefulSet":
        # One pod at a time, each back (same name and volume) before the next goes.
        assert ov.dep["spec"]["updateStrategy"]["type"] == "RollingUpdate"
        assert "maxUnavailable" not in ov.dep["spec"]["updateStrategy"].get("rollingUpdate", {})
        return
    strategy = ov.dep["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0 and strategy["maxSurge"] >= 1


def test_disruption_budget_and_scaling(ov):
    labels = ov.dep["spec"]["template"]["metadata"]["labels"]
    pdb = one(ov.docs, "PodDisruptionBudget", "skein")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpas = by_kind(ov.docs, "HorizontalPodAutoscaler")
    if ov.effective["adapter"] == "memory":
        assert not hpas, "one in-memory node cannot scale out"
        assert ov.dep["spec"]["replicas"] == 1
        return
    (hpa,) = hpas
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": ov.dep["kind"], "name": "skein"}
    assert hpa["spec"]["minReplicas"] >= 3
    assert "replicas" not in ov.dep["spec"], "the autoscaler owns the replica count"
    assert any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"])


def test_restricted_security_and_resources(ov):
    for w in workloads(ov.docs):
        spec = w["spec"]["template"]["spec"]
        where = f"{w['kind']} {w['metadata']['name']}"
        psc = spec.get("securityContext", {})
        assert psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, where
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
        assert not any("hostPath" in v for v in spec.get("volumes", [])), where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, (where, c["name"])
            assert sc.get("readOnlyRootFilesystem") is True, (where, c["name"])
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], (where, c["name"])
            assert not sc.get("capabilities", {}).get("add"), (where, c["name"])
            assert sc.get("privileged") is not True, (where, c["name"])
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c.get("resources", {}).get(part, {})), (where, c["name"], part)


def test_tokens_come_from_the_secret_only(ov):
    volumes = {v["name"]: v for v in ov.pod_spec["volumes"]}
    secret_mounts = [m for m in ov.c["volumeMounts"] if "secret" in volumes.get(m["name"], {})]
    # The mesh's cluster secret is the one other Secret a node mounts.
    mesh = ["skein-mesh-secret"] if ov.effective["adapter"] == "mesh" else []
    names = [volumes[m["name"]]["secret"]["secretName"] for m in secret_mounts]
    assert sorted(names) == sorted(["skein-grpc-tokens", *mesh])
    secret_mounts = [m for m, n in zip(secret_mounts, names) if n == "skein-grpc-tokens"]
    (mount,) = secret_mounts
    item = volumes[mount["name"]]["secret"]["items"][0]
    toml_text = one(ov.docs, "ConfigMap", volumes["config"]["configMap"]["name"])["data"]["skein.toml"]
    file = tomllib.loads(toml_text)["grpc_tokens_file"]
    assert file == f"{mount['mountPath']}/{item['path']}", "the node reads the mounted Secret"
    for cm in by_kind(ov.docs, "ConfigMap"):
        for key, text in cm.get("data", {}).items():
            assert "grpc_tokens =" not in text and not key.startswith("SKEIN_GRPC_TOKENS"), (cm["metadata"]["name"], key)
    assert not any(e["name"] == "SKEIN_GRPC_TOKENS" for e in ov.c.get("env", []))


def test_services_network_policy_and_spread(ov):
    labels = ov.dep["spec"]["template"]["metadata"]["labels"]
    http = one(ov.docs, "Service", "skein")
    grpc = one(ov.docs, "Service", "skein-grpc")
    for svc, port, target in ((http, 3000, "http"), (grpc, 50051, "grpc")):
        assert svc["spec"]["selector"].items() <= labels.items()
        assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(port, target)]
    pol = one(ov.docs, "NetworkPolicy", "skein")
    assert pol["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    rules = pol["spec"]["ingress"]
    grpc_rules = [r for r in rules if any(p["port"] == "grpc" for p in r.get("ports", []))]
    assert grpc_rules and all(
        r.get("from") == [{"podSelector": {"matchLabels": {"skein-api-client": "true"}}}] for r in grpc_rules
    ), "the gRPC port only from labelled app-server pods"
    keys = {t["topologyKey"] for t in ov.pod_spec["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_the_adapter_backend_is_rendered(ov):
    """A Redis URL points at a Service of the render, on its port."""
    e = ov.effective
    if e["adapter"] == "mesh":
        return mesh_is_rendered(ov)
    if e["adapter"] == "nats":
        # Every server URL names a pod of the NATS StatefulSet through its headless
        # Service, on the client port; JetStream is replicated on all of them.
        (sts,) = by_kind(ov.docs, "StatefulSet")
        svc = one(ov.docs, "Service", sts["spec"]["serviceName"])
        assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"]
        urls = [urlparse(u) for u in ov.pod.env["SKEIN_NATS_URL"].split(",")]
        pods = {f"{sts['metadata']['name']}-{i}.{svc['metadata']['name']}" for i in range(sts["spec"]["replicas"])}
        assert {u.hostname for u in urls} == pods, urls
        assert all(u.port in [p["port"] for p in svc["spec"]["ports"]] for u in urls)
        assert e["nats_replicas"] == sts["spec"]["replicas"] == 3 and e["recovery"] is True
        assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
        pol = one(ov.docs, "NetworkPolicy", svc["metadata"]["name"])
        assert pol["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"].items() <= \
            ov.dep["spec"]["template"]["metadata"]["labels"].items(), "only the nodes reach NATS"
        assert one(ov.docs, "PodDisruptionBudget", sts["metadata"]["name"])["spec"]["maxUnavailable"] == 1
        return
    if not e["adapter"].startswith("redis"):
        assert not by_kind(ov.docs, "StatefulSet")
        return
    url = urlparse(ov.pod.env["SKEIN_REDIS_URL"])
    svc = one(ov.docs, "Service", url.hostname)
    assert url.port in [p["port"] for p in svc["spec"]["ports"]]
    (sts,) = by_kind(ov.docs, "StatefulSet")
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    pol = one(ov.docs, "NetworkPolicy", url.hostname)
    assert pol["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"].items() <= \
        ov.dep["spec"]["template"]["metadata"]["labels"].items(), "only the nodes reach Redis"


def test_external_redis_example_takes_the_url_from_a_secret():
    docs = render("examples/external-redis")
    assert not by_kind(docs, "StatefulSet")
    dep = one(docs, "Deployment", "skein")
    env = {e["name"]: e for e in skein_container(dep)["env"]}
    assert env["SKEIN_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "skein-redis-url", "key": "url"}
    pod = Pod(docs, dep, secret_env={"SKEIN_REDIS_URL": "redis://:hunter2@redis.example.internal:6379/0"})
    try:
        check = pod.check_config()
    finally:
        pod.close()
    assert check.returncode == 0, check.stderr
    assert "hunter2" not in check.stdout
    assert re.search(r'^redis_url = "redis://:<redacted>@redis.example.internal:6379/0"', check.stdout, re.M)


def mesh_is_rendered(ov):
    """The mesh: seeds through a headless Service that publishes pods before they are
    ready, the pods start together, each has its volume for the Raft data, the secret
    comes from a Secret file, the address advertised is the pod's, the mesh port is open
    to the nodes only, and sessions are recovered across pods."""
    e, sts = ov.effective, ov.dep
    assert sts["kind"] == "StatefulSet" and sts["spec"]["podManagementPolicy"] == "Parallel"
    host, port = e["mesh_seeds"][0].rsplit(":", 1)
    svc = one(ov.docs, "Service", host)
    assert sts["spec"]["serviceName"] == host
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert [p["port"] for p in svc["spec"]["ports"]] == [int(port)] == [e["mesh_port"]]
    assert svc["spec"]["selector"].items() <= sts["spec"]["template"]["metadata"]["labels"].items()
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    mount = next(m for m in ov.c["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    assert e["mesh_data"].startswith(ov.pod.local(mount["mountPath"]) + "/"), "the Raft data is on the pod's volume"
    assert e["mesh_voters"] == 3 and e["mesh_secret_file"].startswith(ov.pod.local("/var/run/secrets/skein-mesh/"))
    assert e["recovery"] is True, "sessions survive their pod"
    env = {x["name"]: x for x in ov.c["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert list(env).index("POD_IP") < list(env).index("SKEIN_MESH_ADVERTISE"), "$(POD_IP) is defined before use"
    assert e["mesh_advertise"] == f"{Pod.POD_IP}:{e['mesh_port']}"
    pol = one(ov.docs, "NetworkPolicy", "skein")
    (rule,) = [r for r in pol["spec"]["ingress"] if any(p["port"] == "mesh" for p in r.get("ports", []))]
    assert [f["podSelector"]["matchLabels"] for f in rule["from"]] == [sts["spec"]["selector"]["matchLabels"]]
