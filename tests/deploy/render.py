"""Renders the kustomizations of deploy/ and runs `skein --check-config` on what a
pod of a rendered Deployment would start with (its args, env and mounted files)."""

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# Every overlay, including those that later issues add (nats, mesh): each must pass.
OVERLAYS = sorted(p.name for p in (DEPLOY / "overlays").iterdir() if (p / "kustomization.yaml").exists())
# Kustomizations that are not a whole deployment but must render and validate too.
EXTRAS = sorted(
    str(p.parent.relative_to(DEPLOY))
    for sub in ("ingress", "examples")
    for p in (DEPLOY / sub).glob("*/kustomization.yaml")
)
# The Kubernetes version the manifests are validated against (kubernetes-validate's
# schemas; pinned in requirements.txt).
K8S_VERSION = "1.37.0"


def skein_bin() -> str:
    if os.environ.get("SKEIN_BIN"):
        return os.environ["SKEIN_BIN"]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "debug" / "skein")


def render(rel: str) -> list[dict]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / rel)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, f"kubectl kustomize {rel}:\n{out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job")]


def skein_container(dep: dict) -> dict:
    return next(c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "skein")


def known_env_vars() -> set[str]:
    """SKEIN_* variables skein reads, from its --help ([env: SKEIN_X=])."""
    out = subprocess.run([skein_bin(), "--help"], capture_output=True, text=True, timeout=30, check=True)
    return set(re.findall(r"\[env: (SKEIN_[A-Z_]+)[=\]]", out.stdout))


class Pod:
    """A pod of `dep` as files and variables on this machine: the volumes it mounts
    (ConfigMaps from the render, Secrets with stand-in values) under a temporary
    root, its env resolved, and its args with the mount paths moved under that root."""

    FAKE_TOKENS = "token-for-the-test\n"
    POD_IP = "10.1.2.3"

    def __init__(self, docs: list[dict], dep: dict, secret_env: dict[str, str] | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="skein-pod-"))
        self.docs = docs
        spec = self.spec = dep["spec"]["template"]["spec"]
        self.container = skein_container(dep)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        self.mounts = {}
        for m in self.container.get("volumeMounts", []):
            # A volume claim template's volume (a StatefulSet) is an empty directory.
            v = volumes.get(m["name"], {})
            target = self.root / m["mountPath"].lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            if "configMap" in v:
                cm = one(docs, "ConfigMap", v["configMap"]["name"])
                for key, text in cm.get("data", {}).items():
                    (target / key).write_text(text)
            elif "secret" in v:
                for item in v["secret"].get("items", []):
                    (target / item["path"]).write_text(self.FAKE_TOKENS)
            self.mounts[m["mountPath"]] = target
        # Paths in the mounted config files (grpc_tokens_file, TLS files) point into
        # other mounts: moved under the root like the args.
        for mount, target in self.mounts.items():
            if "configMap" in volumes.get(next(m["name"] for m in self.container["volumeMounts"] if m["mountPath"] == mount), {}):
                for f in target.iterdir():
                    f.write_text(re.sub(r'"(/[^"]*)"', lambda m: f'"{self.local(m.group(1))}"', f.read_text()))
        self.env = self._env(secret_env or {})
        self.args = [self.local(a) for a in self.container.get("args", [])]

    def local(self, value: str) -> str:
        for mount, target in self.mounts.items():
            if value == mount or value.startswith(mount.rstrip("/") + "/"):
                return str(target) + value[len(mount.rstrip("/")):]
        return value

    def _service_links(self) -> dict[str, str]:
        """The Docker-link variables the kubelet gives a pod for every Service of its
        namespace unless `enableServiceLinks: false`: Service `skein-grpc` yields
        SKEIN_GRPC_PORT=tcp://10.0.0.10:50051, which skein would read as --grpc-port."""
        env = {}
        for i, svc in enumerate(by_kind(self.docs, "Service")):
            name = svc["metadata"]["name"].upper().replace("-", "_")
            ip = f"10.0.0.{10 + i}"
            ports = svc["spec"]["ports"]
            env[f"{name}_SERVICE_HOST"] = ip
            env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
            env[f"{name}_PORT"] = f"tcp://{ip}:{ports[0]['port']}"
            for p in ports:
                proto = p.get("protocol", "TCP")
                base = f"{name}_PORT_{p['port']}_{proto}"
                env.update({base: f"{proto.lower()}://{ip}:{p['port']}", f"{base}_PROTO": proto.lower(),
                            f"{base}_PORT": str(p["port"]), f"{base}_ADDR": ip})
        return env

    def _env(self, secret_env: dict[str, str]) -> dict[str, str]:
        env = {}
        if self.spec.get("enableServiceLinks", True):
            env.update(self._service_links())
        for src in self.container.get("envFrom", []):
            if "configMapRef" in src:
                env.update(one(self.docs, "ConfigMap", src["configMapRef"]["name"]).get("data", {}))
        for e in self.container.get("env", []):
            if "value" in e:
                # Kubernetes expands $(VAR) of the variables defined before this one.
                env[e["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                                        lambda m: env.get(m.group(1), m.group(0)), e["value"])
                continue
            ref = e["valueFrom"]
            if "fieldRef" in ref:
                env[e["name"]] = {"metadata.name": "skein-7d9f8-abcde", "metadata.namespace": "default",
                                   "status.podIP": self.POD_IP}[ref["fieldRef"]["fieldPath"]]
            elif "configMapKeyRef" in ref:
                cm = one(self.docs, "ConfigMap", ref["configMapKeyRef"]["name"])
                env[e["name"]] = cm["data"][ref["configMapKeyRef"]["key"]]
            elif "secretKeyRef" in ref:
                env[e["name"]] = secret_env[e["name"]]
        return {k: self.local(v) for k, v in env.items()}

    def check_config(self, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        # Only the pod's variables: nothing SKEIN_* from this shell leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SKEIN_")}
        env.update(self.env)
        env.update(extra_env or {})
        return subprocess.run(
            [skein_bin(), "--check-config", *self.args],
            env=env, capture_output=True, text=True, timeout=30, check=False,
        )

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


def gateway_schema_errors(docs: list[dict]) -> list[str]:
    """Gateway API objects checked against the schemas of @kubernetes-models/gateway-api
    (tests/js/gateway-schema.mjs); one message per invalid object."""
    out = subprocess.run(
        ["node", str(REPO / "tests/js/gateway-schema.mjs")],
        input=json.dumps(docs), capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode in (0, 1), out.stderr
    return [l for l in out.stdout.splitlines() if l.strip()]
