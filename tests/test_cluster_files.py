"""The cluster definitions in cluster/ are what a user runs `ray up` / `kubectl apply` on: these tests check them
offline against Ray's own cluster-config schema, the fields KubeRay needs, and the versions pinned in pyproject.toml."""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
LAUNCHER_FILES = ["aws.yaml", "gcp.yaml"]
RAYCLUSTER = CLUSTER / "kuberay" / "raycluster.yaml"
RAYJOB = CLUSTER / "kuberay" / "rayjob-tune.yaml"
DOCKERFILE = CLUSTER / "Dockerfile"
TUNE_DRIVER = "tune_driver"
PROJECT_DIR = "/home/ray/xmw_ray"
#: How every node installs the project: with the extra that brings the s3:// and gs:// filesystems.
PROJECT_INSTALL = f"{PROJECT_DIR}[cloud]"
IMAGE_RE = re.compile(r"rayproject/ray:(?P<ver>\d+\.\d+\.\d+)-(?P<py>py\d+)(?P<gpu>-gpu)?\b")
PROJECT_IMAGE_RE = re.compile(r"xmw-ray:(?P<ver>\d+\.\d+\.\d+)-(?P<py>py\d+)(?P<gpu>-gpu)?\b")


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement(name: str) -> Requirement:
    for dep in _pyproject()["project"]["dependencies"]:
        req = Requirement(dep)
        if req.name == name:
            return req
    raise AssertionError(f"pyproject.toml has no {name} dependency")


def _pinned_ray_version() -> str:
    """The release the `ray>=X.Y,<...` requirement pins: its lower bound, as a full X.Y.Z version."""
    req = _requirement("ray")
    lower = next(s.version for s in req.specifier if s.operator == ">=")
    parts = (lower.split(".") + ["0", "0"])[:3]
    version = ".".join(parts)
    assert req.specifier.contains(version), f"{version} is outside {req.specifier}"
    return version


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _launcher(name: str) -> dict[str, Any]:
    return _load(CLUSTER / name)


def _ray_schema() -> dict[str, Any]:
    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def _node_types(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return cfg["available_node_types"]


def _worker_types(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in _node_types(cfg).items() if k != cfg["head_node_type"]}


def _gpu_type_name(cfg: dict[str, Any]) -> str:
    gpu = [k for k, t in _worker_types(cfg).items() if t["resources"].get("GPU", 0) > 0]
    assert len(gpu) == 1, "expected exactly one GPU worker type"
    return gpu[0]


def _gpu_type(cfg: dict[str, Any]) -> dict[str, Any]:
    return _node_types(cfg)[_gpu_type_name(cfg)]


def _setup_commands(prepared: dict[str, Any], node_type: str) -> list[str]:
    """The setup commands a node of this type runs, resolved the way Ray's autoscaler does (a node type's own
    worker_setup_commands replace the global list; see StandardAutoscaler._get_node_type_specific_fields)."""
    if node_type == prepared["head_node_type"]:
        return prepared["head_setup_commands"]
    return prepared["available_node_types"][node_type].get("worker_setup_commands",
                                                            prepared["worker_setup_commands"])


def _is_spot(provider: str, node_config: dict[str, Any]) -> bool:
    if provider == "aws":
        return node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    scheduling = node_config.get("scheduling", {})
    return scheduling.get("provisioningModel") == "SPOT" or scheduling.get("preemptible") is True


def _torch_installs(commands: list[str]) -> list[list[str]]:
    return [shlex.split(c) for c in commands if re.search(r"pip install .*[\"']?torch", c)]


def _installs_project(command: str) -> bool:
    return command.startswith("pip install") and shlex.split(command)[-1] == PROJECT_INSTALL


def _start_params_resources(value: str) -> dict[str, float]:
    """KubeRay's rayStartParams `resources` value: a quoted, backslash-escaped JSON object."""
    return json.loads(value.strip('"').replace('\\"', '"'))


# ---------------------------------------------------------------- cluster launcher (AWS, GCP)


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_file_validates_against_rays_schema(name):
    cfg = _launcher(name)
    jsonschema.validate(cfg, _ray_schema())
    # What `ray up` checks before it touches the cloud: defaults merged, then the schema and cross-field rules.
    validate_config(prepare_config(copy.deepcopy(cfg)))


def test_schema_check_rejects_a_misspelled_node_type_key():
    cfg = _launcher("aws.yaml")
    gpu = _gpu_type_name(cfg)
    cfg["available_node_types"][gpu]["min_worker"] = cfg["available_node_types"][gpu].pop("min_workers")
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        jsonschema.validate(cfg, _ray_schema())


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_node_types_small_head_gpu_from_zero_and_tune_driver_cpu(name):
    cfg = _launcher(name)
    provider = cfg["provider"]["type"]
    head = _node_types(cfg)[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head should run no training or trials"
    assert not _is_spot(provider, head["node_config"]), "the head must be on-demand"

    gpu = _gpu_type(cfg)
    assert gpu.get("min_workers", 0) == 0 and gpu["max_workers"] > 0
    assert _is_spot(provider, gpu["node_config"])
    if provider == "gcp":
        assert gpu["node_config"]["guestAccelerators"][0]["acceleratorCount"] == gpu["resources"]["GPU"]
        assert gpu["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"

    drivers = [t for t in _worker_types(cfg).values() if t["resources"].get(TUNE_DRIVER, 0) > 0]
    assert len(drivers) == 1
    assert drivers[0]["resources"].get("GPU", 0) == 0
    assert not _is_spot(provider, drivers[0]["node_config"]), "a reclaimed Tune driver would lose the search"
    assert sum(t.get("max_workers", 0) for t in _worker_types(cfg).values()) <= cfg["max_workers"]


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_images_pin_the_project_ray_and_python(name):
    cfg = _launcher(name)
    version = _pinned_ray_version()
    docker = cfg["docker"]
    cpu_images = {docker["image"], docker["head_image"], docker["worker_image"]}
    gpu_image = _gpu_type(cfg)["docker"]["worker_image"]
    py_tags = set()
    for image in cpu_images | {gpu_image}:
        m = IMAGE_RE.fullmatch(image)
        assert m, f"{image} is not a pinned rayproject/ray:X.Y.Z-pyNN[-gpu] tag"
        assert m["ver"] == version
        py_tags.add(m["py"])
        assert bool(m["gpu"]) == (image == gpu_image)
    assert len(py_tags) == 1
    py = py_tags.pop()
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(f"{py[2]}.{py[3:]}")


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_installs_the_project_and_the_right_torch_on_every_node(name):
    cfg = _launcher(name)
    assert cfg["file_mounts"][PROJECT_DIR] == ".", "the working tree must be synced to every node"
    assert ".gitignore" in cfg["rsync_filter"], "the virtualenv and run outputs must not be synced"
    prepared = prepare_config(copy.deepcopy(cfg))
    torch_spec = str(_requirement("torch").specifier)
    gpu_name = _gpu_type_name(cfg)
    for node_type in _node_types(cfg):
        commands = _setup_commands(prepared, node_type)
        assert any(_installs_project(c) for c in commands), node_type
        (torch_cmd,) = _torch_installs(commands)
        assert f"torch{torch_spec}" in torch_cmd, f"{node_type}: torch spec differs from pyproject.toml"
        cpu_wheel = "https://download.pytorch.org/whl/cpu" in torch_cmd
        assert cpu_wheel == (node_type != gpu_name), f"{node_type}: wrong torch build (CUDA only on GPU nodes)"
        assert commands.index(next(c for c in commands if "torch" in c)) < commands.index(
            next(c for c in commands if _installs_project(c))), "torch must be installed before the project"


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_turns_token_auth_on_and_keeps_the_dashboard_private(name):
    cfg = _launcher(name)
    prepared = prepare_config(copy.deepcopy(cfg))
    assert cfg["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    starts = [c for c in cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 2
    for command in starts:
        assert "RAY_AUTH_MODE=token ray start" in " ".join(command.split())
    head_start = next(c for c in starts if "--head" in c)
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    for node_type in _node_types(cfg):
        assert any("export RAY_AUTH_MODE=token" in c for c in _setup_commands(prepared, node_type)), node_type
    assert "IpPermissions" not in cfg["provider"].get("security_group", {}), "no extra inbound ports"


AWS_WORKER_POLICY = CLUSTER / "aws-worker-policy.json"
#: The head's profile (Ray creates it with AmazonEC2FullAccess and AmazonS3FullAccess): never a worker's.
HEAD_PROFILE = "ray-autoscaler-v1"


def test_aws_workers_run_with_a_profile_limited_to_the_run_bucket():
    """A job runs arbitrary code on the workers: their role may reach the run bucket and nothing else."""
    cfg = _launcher("aws.yaml")
    for node_type, spec in _worker_types(cfg).items():
        profile = spec["node_config"].get("IamInstanceProfile", {})
        assert profile.get("Name") == "xmw-ray-worker", f"{node_type}: {profile}"
    policy = json.loads(AWS_WORKER_POLICY.read_text())
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert statement["Effect"] == "Allow"
        assert all(a.startswith("s3:") and "*" not in a for a in actions), actions
        assert all(r.startswith("arn:aws:s3:::YOUR-BUCKET") for r in resources), resources
    docs = (ROOT / "docs" / "cluster.md").read_text()
    assert "cluster/aws-worker-policy.json" in docs and "iam:PassRole" in docs


def test_gcp_workers_get_storage_scope_on_their_own_service_account():
    cfg = _launcher("gcp.yaml")
    for node_type, spec in _worker_types(cfg).items():
        (account,) = spec["node_config"]["serviceAccounts"]
        assert account["email"].startswith("xmw-ray-worker@"), node_type  # not the default (Editor) account
        assert account["scopes"] == ["https://www.googleapis.com/auth/devstorage.read_write"], node_type
    assert "roles/storage.objectUser" in (ROOT / "docs" / "cluster.md").read_text()


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_no_worker_carries_full_access_or_cloud_platform(name):
    text = (CLUSTER / name).read_text()
    workers = yaml.safe_dump(_worker_types(_launcher(name)))
    assert "FullAccess" not in text and "cloud-platform" not in workers and HEAD_PROFILE not in workers


# ---------------------------------------------------------------- KubeRay


def _pod_containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    return group["template"]["spec"]["containers"]


@pytest.mark.parametrize("path", [RAYCLUSTER, RAYJOB], ids=lambda p: p.name)
def test_kuberay_manifest_carries_what_kuberay_requires(path):
    doc = _load(path)
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["kind"] == ("RayCluster" if path == RAYCLUSTER else "RayJob")
    assert doc["metadata"]["name"]
    spec = doc["spec"] if path == RAYCLUSTER else doc["spec"]["rayClusterSpec"]
    version = _pinned_ray_version()
    assert spec["rayVersion"] == version
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"

    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict)
    assert head.get("serviceType", "ClusterIP") == "ClusterIP" and not head.get("enableIngress", False)
    groups = spec["workerGroupSpecs"]
    assert len({g["groupName"] for g in groups}) == len(groups)
    for group in [head, *groups]:
        for container in _pod_containers(group):
            limits = container["resources"]["limits"]
            assert {"cpu", "memory"} <= set(limits), container["name"]
            m = PROJECT_IMAGE_RE.search(container["image"])
            assert m and m["ver"] == version, container["image"]
            assert bool(m["gpu"]) == ("nvidia.com/gpu" in limits), container["image"]
    for group in groups:
        assert isinstance(group["rayStartParams"], dict)
        replicas = group.get("replicas", group["minReplicas"])
        assert 0 <= group["minReplicas"] <= replicas <= group["maxReplicas"], group["groupName"]

    gpu = [g for g in groups if any("nvidia.com/gpu" in c["resources"]["limits"] for c in _pod_containers(g))]
    assert len(gpu) == 1 and gpu[0]["minReplicas"] == 0 and gpu[0]["maxReplicas"] > 0
    provided = {k for g in groups for k in _start_params_resources(g["rayStartParams"].get("resources", '"{}"'))}
    assert TUNE_DRIVER in provided


def test_rayjob_runs_tune_on_the_same_cluster_spec_and_asks_for_a_resource_it_provides():
    job = _load(RAYJOB)["spec"]
    assert job["rayClusterSpec"] == _load(RAYCLUSTER)["spec"], "raycluster.yaml and rayjob-tune.yaml drifted apart"
    argv = shlex.split(job["entrypoint"])
    assert argv[:2] == ["python", "jobs/tune.py"] and "--config" in argv
    assert job["shutdownAfterJobFinishes"] is True
    asked = json.loads(job["entrypointResources"])
    provided = {k: v for g in job["rayClusterSpec"]["workerGroupSpecs"]
                for k, v in _start_params_resources(g["rayStartParams"].get("resources", '"{}"')).items()}
    for resource, amount in asked.items():
        assert provided.get(resource, 0) >= amount, f"no worker group provides {resource}={amount}: the job would hang"
    assert yaml.safe_load(job["runtimeEnvYAML"])["working_dir"] == PROJECT_DIR


def test_rayjob_entrypoint_names_files_that_exist():
    if not (ROOT / "jobs" / "tune.py").exists():
        pytest.skip("jobs/tune.py is not in the tree yet")
    argv = shlex.split(_load(RAYJOB)["spec"]["entrypoint"])
    assert (ROOT / argv[1]).is_file()
    assert (ROOT / argv[argv.index("--config") + 1]).is_file()


# ---------------------------------------------------------------- the project image and versions everywhere


def _extra_packages(extra: str) -> set[str]:
    """Package names an extra of pyproject.toml installs, following extras of the project itself."""
    extras, name = _pyproject()["project"]["optional-dependencies"], _pyproject()["project"]["name"]
    found: set[str] = set()
    for dep in extras[extra]:
        req = Requirement(dep)
        if req.name.replace("-", "_") == name.replace("-", "_"):
            for sub in req.extras:
                found |= _extra_packages(sub)
        else:
            found.add(req.name)
    return found


def test_cloud_extra_installed_on_nodes_brings_both_object_store_filesystems():
    assert {"s3fs", "gcsfs"} <= _extra_packages("cloud")
    assert {"s3fs", "gcsfs"} <= _extra_packages("dev"), "the object-storage tests need both"


def test_dockerfile_builds_on_the_pinned_ray_image_with_the_project_torch():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and IMAGE_RE.fullmatch(base[1]) and IMAGE_RE.fullmatch(base[1])["ver"] == _pinned_ray_version()
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    torch_spec = str(_requirement("torch").specifier)
    assert f'"torch{torch_spec}"' in text
    assert re.search(r'^RUN pip install .*\s"/home/ray/xmw_ray\[cloud\]"$', text, re.M)
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_every_cluster_file_names_one_ray_version_the_pinned_one():
    version = _pinned_ray_version()
    seen: dict[str, set[str]] = {}
    for path in sorted(p for p in CLUSTER.rglob("*") if p.is_file()):
        text = path.read_text()
        found = {m["ver"] for m in IMAGE_RE.finditer(text)} | {m["ver"] for m in PROJECT_IMAGE_RE.finditer(text)}
        found |= set(re.findall(r'rayVersion:\s*"?(\d+\.\d+\.\d+)', text))
        if found:
            seen[path.name] = found
    assert {"aws.yaml", "gcp.yaml", "raycluster.yaml", "rayjob-tune.yaml", "Dockerfile"} <= set(seen)
    assert all(found == {version} for found in seen.values()), seen


def test_docs_name_only_cluster_files_that_exist():
    docs = ROOT / "docs" / "cluster.md"
    named = set(re.findall(r"cluster/[\w./-]+\.(?:yaml|md|json)|cluster/Dockerfile", docs.read_text()))
    assert {"cluster/aws.yaml", "cluster/gcp.yaml", "cluster/kuberay/raycluster.yaml",
            "cluster/kuberay/rayjob-tune.yaml", "cluster/Dockerfile"} <= named
    for rel in named:
        assert (ROOT / rel).is_file(), f"docs/cluster.md names {rel}, which does not exist"


def test_every_documented_job_submission_keeps_the_driver_off_the_head():
    """A job's driver runs on the head unless it asks for a resource the head lacks, and the head carries Ray's
    broad autoscaler role (EC2 and S3 full access): every ``ray job submit … -- python`` the docs and job files
    show asks for ``tune_driver``, which only the ``tune_cpu`` nodes advertise."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "jobs").glob("*.py"))]
    commands = [(f.name, m.group(0)) for f in files
                for m in re.finditer(r"ray job submit(?:[^`\n]|\\\n)*?-- python", f.read_text())]
    assert len(commands) >= 8
    for name, command in commands:
        assert "--entrypoint-resources '{\"tune_driver\": 1}'" in command, (name, command)
