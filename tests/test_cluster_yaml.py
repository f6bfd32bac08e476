"""cluster.yaml: valid for the installed Ray's autoscaler schema, and within the project's security rules.

Two layers:
1. Ray's own JSON schema (``ray/autoscaler/ray-schema.json`` of the installed Ray) through ``jsonschema``, plus
   Ray's ``prepare_config``/``validate_config`` (defaults merged, setup commands merged, min/max workers).
2. ``check_cluster_config``: the project's structural rules (no Ray port reachable from the internet, a head that
   takes no training work but hosts the sweeps' trial launchers, GPU workers scale from zero, every node runs the
   project's node image with nothing installed at boot, token auth, S3 storage). The node image itself
   (docker/Dockerfile against pyproject.toml) is checked in tests/test_node_image.py.
   Each rule is shown to fire on a mutated copy of the real file, so the checker cannot pass vacuously.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from macdiff_ray.train.resources import LAUNCHER_RESOURCE

REPO = Path(__file__).resolve().parents[1]
CLUSTER_YAML = REPO / "cluster.yaml"

# GCS, dashboard/job API, Ray Client, object manager, dashboard agent gRPC: never reachable from outside.
RAY_PORTS = (6379, 8265, 10001, 8076, 52365)
SSH_PORT = 22
LOCAL_DASHBOARD_HOSTS = ("127.0.0.1", "localhost", "::1")
IMAGE_REPOSITORY = "macdiff-ray"  # docker/Dockerfile's image, tagged cpu-VERSION / gpu-VERSION


def _project_version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


# ---------------------------------------------------------------------------------------------------------------
# The checker
# ---------------------------------------------------------------------------------------------------------------
def _is_world(cidr: str) -> bool:
    """True for a CIDR that spans the whole IPv4 or IPv6 internet (0.0.0.0/0, ::/0), or anything that is not private
    and has a prefix shorter than /8 (a typo like 0.0.0.0/1 is as open as /0)."""
    net = ipaddress.ip_network(cidr, strict=False)
    return net.prefixlen == 0 or (net.prefixlen < 8 and not net.is_private)


def _port_range(rule: dict[str, Any]) -> tuple[int, int] | None:
    """(from, to) ports a rule opens, or None for all ports (protocol -1 / 'all')."""
    proto = str(rule.get("IpProtocol", "-1")).lower()
    if proto in ("-1", "all"):
        return None
    lo, hi = int(rule.get("FromPort", -1)), int(rule.get("ToPort", -1))
    if lo == -1 and hi == -1:
        return None
    return lo, hi


def _rule_cidrs(rule: dict[str, Any]) -> list[str]:
    """Source CIDRs of one ingress rule, in either the EC2 API form (IpRanges/Ipv6Ranges) or the flat form used by
    cluster.yaml's metadata (CidrIp/CidrIpv6)."""
    cidrs = [r["CidrIp"] for r in rule.get("IpRanges", [])] + [r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])]
    cidrs += [rule[k] for k in ("CidrIp", "CidrIpv6") if k in rule]
    return cidrs


def _ingress_rules(cfg: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, rule) for every ingress rule the file declares."""
    out = []
    provider_rules = cfg.get("provider", {}).get("security_group", {}).get("IpPermissions", [])
    out += [(f"provider.security_group.IpPermissions[{i}]", r) for i, r in enumerate(provider_rules)]
    meta_rules = cfg.get("metadata", {}).get("macdiff", {}).get("security_group_ingress", [])
    out += [(f"metadata.macdiff.security_group_ingress[{i}]", r) for i, r in enumerate(meta_rules)]
    return out


def effective_setup_commands(cfg: dict[str, Any], node_type: str) -> list[str]:
    """Setup commands Ray runs on a node of ``node_type`` (Ray's merge: common + head/worker; a node type's own
    ``worker_setup_commands`` replaces both for workers)."""
    common = list(cfg.get("setup_commands", []))
    if node_type == cfg["head_node_type"]:
        return common + list(cfg.get("head_setup_commands", []))
    own = cfg["available_node_types"][node_type].get("worker_setup_commands")
    if own is not None:
        return list(own)
    return common + list(cfg.get("worker_setup_commands", []))


_INSTALL = re.compile(r"\b(pip3?|apt-get|apt|conda|uv)\b.*\binstall\b")


def node_image(cfg: dict[str, Any], node_type: str) -> str | None:
    """The image Ray runs a node of ``node_type`` in (Ray's precedence: the node type's own ``docker.worker_image``,
    then ``docker.head_image`` / ``docker.worker_image``, then ``docker.image``); None without a docker section."""
    docker = cfg.get("docker") or {}
    if node_type == cfg["head_node_type"]:
        return docker.get("head_image") or docker.get("image")
    own = (cfg["available_node_types"][node_type].get("docker") or {}).get("worker_image")
    return own or docker.get("worker_image") or docker.get("image")


def image_parts(image: str) -> tuple[str, str, str]:
    """(registry, repository, tag) of ``registry/repository:tag`` (registry "" for a Docker Hub name)."""
    name, tag = image.rsplit(":", 1) if ":" in image.rsplit("/", 1)[-1] else (image, "")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest, tag
    return "", name, tag


def _run_options(cfg: dict[str, Any], node_type: str) -> list[str]:
    docker = cfg.get("docker") or {}
    opts = list(docker.get("run_options", []))
    if node_type == cfg["head_node_type"]:
        return opts + list(docker.get("head_run_options", []))
    own = (cfg["available_node_types"][node_type].get("docker") or {}).get("worker_run_options")
    return opts + list(docker.get("worker_run_options", [])) + list(own or [])


def check_cluster_config(cfg: dict[str, Any]) -> list[str]:
    """The project's rules for cluster.yaml; returns one message per violation (empty when the file is fine)."""
    errors: list[str] = []
    node_types: dict[str, Any] = cfg.get("available_node_types", {})
    head = cfg.get("head_node_type")
    if head not in node_types:
        return [f"head_node_type {head!r} is not one of available_node_types {sorted(node_types)}"]

    # --- network: nothing but SSH from a named CIDR; Ray ports only inside the group ---
    for where, rule in _ingress_rules(cfg):
        ports = _port_range(rule)
        for cidr in _rule_cidrs(rule):
            label = f"{where}: {rule.get('IpProtocol')} {ports or 'all ports'} from {cidr}"
            if _is_world(cidr):
                errors.append(f"{label}: ingress from the whole internet")
            if ports is None or any(ports[0] <= p <= ports[1] for p in RAY_PORTS):
                errors.append(f"{label}: opens a Ray port ({', '.join(map(str, RAY_PORTS))}) to a CIDR; "
                              "Ray ports must be reachable only from the cluster's own security group")
            elif ports != (SSH_PORT, SSH_PORT):
                errors.append(f"{label}: only SSH ({SSH_PORT}) may be open to a CIDR")
    for name, nt in node_types.items():
        if not nt.get("node_config", {}).get("SecurityGroupIds"):
            errors.append(f"available_node_types.{name}.node_config.SecurityGroupIds missing: Ray would create its "
                          "default group, which allows SSH from 0.0.0.0/0")

    # --- dashboard/job API bound to localhost, token auth on every node ---
    head_start = " ".join(cfg.get("head_start_ray_commands", []))
    m = re.search(r"--dashboard-host[= ](\S+)", head_start)
    if not m or m.group(1) not in LOCAL_DASHBOARD_HOSTS:
        errors.append(f"head_start_ray_commands: --dashboard-host must be one of {LOCAL_DASHBOARD_HOSTS}, "
                      f"got {m.group(1) if m else 'no flag (check the Ray default)'}")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        joined = " ".join(cfg.get(key, []))
        if "0.0.0.0" in joined or "::/0" in joined:
            errors.append(f"{key}: binds something to all interfaces: {joined!r}")
        if "RAY_AUTH_MODE=token" not in joined:
            errors.append(f"{key}: ray start without RAY_AUTH_MODE=token")

    # --- head: no training work (0 CPU, 0 GPU), but the sweeps' trial launchers; GPU workers scale from 0 ---
    head_res = node_types[head].get("resources", {})
    if head_res.get("GPU", 0) != 0:
        errors.append(f"available_node_types.{head}.resources.GPU = {head_res['GPU']}: the head must not run training")
    if head_res.get("CPU") != 0:
        errors.append(f"available_node_types.{head}.resources.CPU = {head_res.get('CPU')!r}: must be 0, so that no "
                      "Train worker, Ray Data task or CPU trial lands on the head (Ray would count its vCPUs)")
    if not head_res.get(LAUNCHER_RESOURCE, 0) >= 1:
        errors.append(f"available_node_types.{head}.resources.{LAUNCHER_RESOURCE} = "
                      f"{head_res.get(LAUNCHER_RESOURCE)!r}: the head must offer the resource the sweeps' trial "
                      "launchers ask for (macdiff_ray.train.resources.LAUNCHER_RESOURCE), or those trials never start")
    for name, nt in node_types.items():
        if name != head and nt.get("resources", {}).get(LAUNCHER_RESOURCE, 0):
            errors.append(f"available_node_types.{name}.resources.{LAUNCHER_RESOURCE}: only the on-demand head may "
                          "host trial launchers (a launcher on a spot node dies with it)")
    gpu_types = [n for n, nt in node_types.items() if n != head and nt.get("resources", {}).get("GPU", 0) >= 1]
    if not gpu_types:
        errors.append("no worker node type with resources.GPU >= 1")
    for name in gpu_types:
        if node_types[name].get("min_workers", 0) != 0:
            errors.append(f"available_node_types.{name}.min_workers = {node_types[name]['min_workers']}: "
                          "GPU workers must scale from 0")

    # --- every node runs the project's node image; nothing installed at boot ---
    version = _project_version()
    for name in node_types:
        image = node_image(cfg, name)
        if not image:
            errors.append(f"{name}: no docker image (docker.head_image / docker.worker_image): the node would "
                          "install the stack at boot")
            continue
        registry, repo, tag = image_parts(image)
        variant = "gpu" if name in gpu_types else "cpu"
        if repo.rsplit("/", 1)[-1] != IMAGE_REPOSITORY:
            errors.append(f"{name}: image {image!r} is not the project's node image ({IMAGE_REPOSITORY}, "
                          "docker/Dockerfile)")
        if tag != f"{variant}-{version}":
            errors.append(f"{name}: image tag {tag!r}, expected {variant}-{version} (the {variant} variant of "
                          f"docker/Dockerfile for project version {version})")
        if registry.endswith(".amazonaws.com") and not any(
                "docker login" in c and registry in c for c in cfg.get("initialization_commands", [])):
            errors.append(f"{name}: image on ECR ({registry}) but initialization_commands never `docker login` there")
        if name in gpu_types and not any("--gpus" in o for o in _run_options(cfg, name)):
            errors.append(f"{name}: GPU node's container started without --gpus (docker worker_run_options)")
        cmds = effective_setup_commands(cfg, name)
        for c in cmds:
            if _INSTALL.search(c):
                errors.append(f"{name}: setup command installs at boot ({c!r}); bake it into docker/Dockerfile")
        if name in gpu_types and not any("torch.cuda.is_available()" in c for c in cmds):
            errors.append(f"{name}: no setup command checks that torch sees the GPU")
    if any(local in (".", "./") for local in cfg.get("file_mounts", {}).values()):
        errors.append("file_mounts: the working directory is synced to the nodes; the project is in the image "
                      "and jobs ship their code with --working-dir")

    # --- checkpoints and sweep results on S3 ---
    storage = cfg.get("metadata", {}).get("macdiff", {}).get("storage_path", "")
    if not str(storage).startswith("s3://"):
        errors.append(f"metadata.macdiff.storage_path = {storage!r}: must be an s3:// URI")
    for name, nt in node_types.items():
        if "IamInstanceProfile" not in nt.get("node_config", {}):
            errors.append(f"available_node_types.{name}.node_config.IamInstanceProfile missing (S3 access)")
    return errors


# ---------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    with open(CLUSTER_YAML) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def ray_schema() -> dict[str, Any]:
    import ray

    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    if not path.is_file():
        pytest.fail(f"Ray {ray.__version__} ships no autoscaler schema at {path}")
    return json.loads(path.read_text())


def _validator(schema):
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is needed to check cluster.yaml against Ray's schema (pip install -e '.[test]')"
    )
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_cluster_yaml_matches_ray_schema(cfg, ray_schema):
    errors = sorted(_validator(ray_schema).iter_errors(cfg), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"cluster.yaml {'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda c: c.update(max_worker=4), "<root>"),  # misspelled key
        (lambda c: c["available_node_types"]["ray.worker.gpu"]["resources"].update(GPU=0.5), "resources"),
        (lambda c: c["available_node_types"]["ray.head.cpu"].pop("node_config"), "ray.head.cpu"),
    ],
    ids=["unknown-key", "fractional-resource", "missing-node-config"],
)
def test_ray_schema_rejects_broken_copies(cfg, ray_schema, mutate, where):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    errors = list(_validator(ray_schema).iter_errors(bad))
    assert errors, f"schema accepted a broken config ({where})"


def test_ray_prepare_and_validate_config(cfg):
    """Ray's own pipeline for `ray up`, minus the cloud calls: merge AWS defaults, then validate."""
    pytest.importorskip("jsonschema", reason="Ray's validate_config needs jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cfg))
    validate_config(prepared)
    assert prepared["available_node_types"]["ray.worker.gpu"]["min_workers"] == 0
    # After Ray's merge each node runs the common setup plus its own, and the head and worker images stay apart.
    assert prepared["head_setup_commands"][: len(cfg["setup_commands"])] == cfg["setup_commands"]
    assert prepared["worker_setup_commands"][: len(cfg["setup_commands"])] == cfg["setup_commands"]
    assert prepared["docker"]["head_image"] != prepared["docker"]["worker_image"]


def test_cluster_yaml_follows_project_rules(cfg):
    errors = check_cluster_config(cfg)
    assert not errors, "cluster.yaml breaks project rules:\n" + "\n".join(errors)


def _open_dashboard_in_provider(c):
    c["provider"]["security_group"] = {
        "GroupName": "x",
        "IpPermissions": [{"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    }


def _rule(**kw):
    return lambda c: c["metadata"]["macdiff"]["security_group_ingress"].append(kw)


def _set(path, value):
    def f(c):
        d = c
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value

    return f


def _docker(**kw):
    return lambda c: c["docker"].update(kw)


def _drop_ecr_login(c):
    c["initialization_commands"] = [x for x in c["initialization_commands"] if "docker login" not in x]


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (_open_dashboard_in_provider, "opens a Ray port"),
        (_rule(IpProtocol="tcp", FromPort=6379, ToPort=6379, CidrIp="0.0.0.0/0"), "whole internet"),
        (_rule(IpProtocol="tcp", FromPort=10000, ToPort=10002, CidrIp="198.51.100.7/32"), "opens a Ray port"),
        (_rule(IpProtocol="tcp", FromPort=10001, ToPort=10001, CidrIpv6="::/0"), "whole internet"),
        (_rule(IpProtocol="-1", FromPort=-1, ToPort=-1, CidrIp="10.0.0.0/16"), "opens a Ray port"),
        (_rule(IpProtocol="tcp", FromPort=22, ToPort=22, CidrIp="0.0.0.0/0"), "whole internet"),
        (_rule(IpProtocol="tcp", FromPort=443, ToPort=443, CidrIp="198.51.100.7/32"), "only SSH"),
        (lambda c: c["available_node_types"]["ray.worker.gpu"]["node_config"].pop("SecurityGroupIds"), "SecurityGroupIds"),
        (lambda c: c.update(head_start_ray_commands=[x.replace("127.0.0.1", "0.0.0.0") for x in c["head_start_ray_commands"]]),
         "--dashboard-host"),
        (lambda c: c.update(head_start_ray_commands=[x.replace(" --dashboard-host=127.0.0.1", "") for x in c["head_start_ray_commands"]]),
         "--dashboard-host"),
        (lambda c: c.update(worker_start_ray_commands=[x.replace("RAY_AUTH_MODE=token ", "") for x in c["worker_start_ray_commands"]]),
         "RAY_AUTH_MODE=token"),
        (_set(["available_node_types", "ray.head.cpu", "resources", "GPU"], 1), "must not run training"),
        (_set(["available_node_types", "ray.head.cpu", "resources", "CPU"], 4), "must be 0"),
        (lambda c: c["available_node_types"]["ray.head.cpu"]["resources"].pop("CPU"), "must be 0"),
        (lambda c: c["available_node_types"]["ray.head.cpu"]["resources"].pop(LAUNCHER_RESOURCE), "trial launchers"),
        (_set(["available_node_types", "ray.worker.gpu", "resources", LAUNCHER_RESOURCE], 4),
         "only the on-demand head"),
        (_set(["available_node_types", "ray.worker.gpu", "min_workers"], 1), "scale from 0"),
        (lambda c: c.pop("docker"), "no docker image"),
        (_docker(worker_image="rayproject/ray:2.60.0-py311-gpu"), "not the project's node image"),
        (_docker(worker_image=None, image="REPLACE_ACCOUNT_ID.dkr.ecr.us-west-2.amazonaws.com/macdiff-ray:cpu-0.1.0"),
         "expected gpu-"),
        (lambda c: c["docker"].update(head_image=c["docker"]["head_image"].replace("cpu-", "gpu-")), "expected cpu-"),
        (lambda c: c["available_node_types"]["ray.worker.gpu"].update(
            docker={"worker_image": "REPLACE_ACCOUNT_ID.dkr.ecr.us-west-2.amazonaws.com/macdiff-ray:gpu-0.0.9"}),
         "expected gpu-"),
        (_drop_ecr_login, "never `docker login`"),
        (_docker(worker_run_options=[]), "without --gpus"),
        (lambda c: c["setup_commands"].append("python -m pip install -e ~/macdiff-ray"), "installs at boot"),
        (lambda c: c["head_setup_commands"].append("sudo apt-get install -y python3-venv"), "installs at boot"),
        (lambda c: c.update(worker_setup_commands=[]), "torch sees the GPU"),
        (lambda c: c["file_mounts"].update({"~/macdiff-ray": "."}), "working directory is synced"),
        (_set(["metadata", "macdiff", "storage_path"], "/home/ubuntu/runs"), "s3://"),
        (lambda c: c["available_node_types"]["ray.worker.gpu"]["node_config"].pop("IamInstanceProfile"), "IamInstanceProfile"),
    ],
    ids=[
        "8265-world-provider", "6379-world", "10001-in-range-from-host", "10001-ipv6-world", "all-ports-cidr",
        "ssh-world", "https-cidr", "default-security-group", "dashboard-all-interfaces", "dashboard-flag-missing",
        "worker-no-token", "head-gpu", "head-cpu-4", "head-cpu-unset", "head-no-launcher", "launcher-on-spot",
        "gpu-min-workers", "no-docker", "foreign-image", "gpu-node-cpu-image", "head-gpu-image",
        "node-type-image-version", "no-ecr-login", "gpu-no-gpus-flag", "pip-at-boot", "apt-at-boot",
        "no-cuda-check", "repo-synced", "local-storage", "no-instance-profile",
    ],
)
def test_checker_rejects_mutated_config(cfg, mutate, expected):
    bad = copy.deepcopy(cfg)
    mutate(bad)
    errors = check_cluster_config(bad)
    assert any(expected in e for e in errors), f"expected a violation mentioning {expected!r}, got {errors}"


def test_node_type_setup_override_is_honoured(cfg):
    """A node type's own worker_setup_commands replace the global ones in Ray; the checker must follow that."""
    bad = copy.deepcopy(cfg)
    bad["available_node_types"]["ray.worker.gpu"]["worker_setup_commands"] = ["pip install torch"]
    errors = check_cluster_config(bad)
    assert any(e.startswith("ray.worker.gpu: setup command installs at boot") for e in errors), errors
    assert any(e.startswith("ray.worker.gpu: no setup command checks") for e in errors), errors
    assert not any(e.startswith("ray.head.cpu:") for e in errors), errors


def test_image_parts():
    assert image_parts("123.dkr.ecr.us-west-2.amazonaws.com/macdiff-ray:gpu-0.1.0") == (
        "123.dkr.ecr.us-west-2.amazonaws.com", "macdiff-ray", "gpu-0.1.0")
    assert image_parts("localhost:5000/team/macdiff-ray:cpu-0.1.0") == (
        "localhost:5000", "team/macdiff-ray", "cpu-0.1.0")
    assert image_parts("rayproject/ray:2.60.0") == ("", "rayproject/ray", "2.60.0")
    assert image_parts("macdiff-ray") == ("", "macdiff-ray", "")


def test_placeholders_are_marked(cfg):
    """Account-specific values stay placeholders named REPLACE_ so that `ray up` fails before launching anything."""
    text = CLUSTER_YAML.read_text()
    assert not re.search(r"arn:aws:iam::\d{12}:", text), "a real AWS account id is committed in cluster.yaml"
    assert not re.search(r"\bsg-[0-9a-f]{8,17}\b", text), "a real security group id is committed in cluster.yaml"
    for name, nt in cfg["available_node_types"].items():
        nc = nt["node_config"]
        assert "REPLACE_" in nc["IamInstanceProfile"]["Arn"], name
        assert all("REPLACE_" in g for g in nc["SecurityGroupIds"]), name
    assert not re.search(r"\b\d{12}\.dkr\.ecr\.", text), "a real AWS account id is committed in an image name"
    for key in ("head_image", "worker_image"):
        assert image_parts(cfg["docker"][key])[0].startswith("REPLACE_"), key
