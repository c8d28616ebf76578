"""The deployment configs: the Serve config `serve deploy` accepts, the builder it names,
and cluster.yaml as `feira cluster-config` renders it for `ray up`. No cluster is started:
Ray's and Serve's own validators are the judges."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from deployments import builder
from deployments.builder import build_app
from feira import cluster

ROOT = Path(__file__).parents[2]
CONFIG = ROOT / "deployments" / "serve_config.yaml"


def serve_config() -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))


def test_config_validates_and_builds(tmp_path: Path) -> None:
    app = serve_config().applications[0]
    assert app.import_path == "deployments.builder:build_app"
    built = build_app({**app.args, "data_dir": str(tmp_path)})
    assert isinstance(built, Application)


def test_builder_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="6379"):
        build_app({"ray_gcs_port": 6379})


def test_builder_drains_and_health_checks_replicas(tmp_path: Path) -> None:
    config = build_app({"data_dir": str(tmp_path)})._bound_deployment._deployment_config
    assert config.graceful_shutdown_timeout_s == builder.GRACEFUL_SHUTDOWN_TIMEOUT_S >= 30
    assert config.graceful_shutdown_wait_loop_s == builder.GRACEFUL_SHUTDOWN_WAIT_LOOP_S
    assert config.health_check_period_s == builder.HEALTH_CHECK_PERIOD_S
    assert config.health_check_timeout_s == builder.HEALTH_CHECK_TIMEOUT_S
    # feira up keeps a fixed count; serve_config.yaml adds the autoscaling.
    assert config.num_replicas == 1
    assert config.autoscaling_config is None


def deployments() -> dict[str, Any]:
    return {d.name: d for app in serve_config().applications for d in app.deployments}


def test_the_http_ingress_never_scales_to_zero_and_grpc_may() -> None:
    found = deployments()
    assert set(found) == {"bff", "grpc"}
    bff = found["bff"].autoscaling_config
    grpc = found["grpc"].autoscaling_config
    # Two at least: a node failure leaves one serving while Serve replaces the other.
    assert bff["min_replicas"] >= 2
    assert bff["max_replicas"] > bff["min_replicas"]
    assert grpc["min_replicas"] == 0
    assert grpc["downscale_to_zero_delay_s"] >= 600
    for d in found.values():
        # Below max_ongoing_requests (2,000), or the autoscaler never acts.
        assert 0 < d.autoscaling_config["target_ongoing_requests"] < 2000
        assert d.graceful_shutdown_timeout_s == builder.GRACEFUL_SHUTDOWN_TIMEOUT_S
        assert d.graceful_shutdown_wait_loop_s == builder.GRACEFUL_SHUTDOWN_WAIT_LOOP_S
        assert d.health_check_timeout_s == builder.HEALTH_CHECK_TIMEOUT_S


def test_both_apps_roll_together_when_the_signing_keys_change() -> None:
    apps = serve_config().applications
    revisions = {a.name: a.runtime_env["env_vars"]["FEIRA_SIGNING_KEYS_REVISION"] for a in apps}
    assert set(revisions) == {"feira", "feira-grpc"}
    assert len(set(revisions.values())) == 1
    text = CONFIG.read_text()
    assert "no authentication" not in text
    assert "authorization: Bearer" in text


def cluster_env(**extra: str) -> dict[str, str]:
    return {
        "FEIRA_HEAD_IP": "10.0.0.1",
        "FEIRA_WORKER_IPS": "10.0.0.2, 10.0.0.3",
        "FEIRA_POSTGRES_URL": "postgresql://feira:it's-secret@db:5432/feira",
        "FEIRA_REDIS_URL": "redis://cache:6379/0",
        "FEIRA_MONGO_URL": "mongodb://catalog:27017",
        "FEIRA_ELASTICSEARCH_URL": "http://search:9200",
        "FEIRA_PAYMENT_WEBHOOK_SECRET": "w" * 40,
        "FEIRA_DATA_DIR": "/home/me/feira-var",
        **extra,
    }


def test_cluster_config_renders_into_one_ray_up_accepts(tmp_path: Path) -> None:
    config = cluster.render_cluster_config(cluster_env(), tmp_path / "secrets")
    validate_config(config)
    prepared = prepare_config(config)  # the local provider's own checks
    assert prepared["provider"]["worker_ips"] == ["10.0.0.2", "10.0.0.3"]
    assert prepared["provider"]["head_ip"] == "10.0.0.1"
    assert "${" not in yaml.safe_dump(config)
    # The secrets reach the head by file_mounts and every worker from there.
    assert config["file_mounts"]["~/feira-secrets"] == str((tmp_path / "secrets").resolve())
    assert config["cluster_synced_files"] == ["~/feira-secrets"]
    assert config["file_mounts_sync_continuously"] is True
    head = " ".join(config["head_start_ray_commands"])
    worker = " ".join(config["worker_start_ray_commands"])
    for start in (head, worker):
        assert ". ~/feira-secrets/feira.env" in start
        assert "6379" not in start
        assert ":6390" in start or "--port=6390" in start
    # Shards go to workers only: the head advertises no shard resource.
    assert '"feira_shard"' in worker
    assert "feira_shard" not in head


def test_cluster_config_says_what_is_missing(tmp_path: Path) -> None:
    env = cluster_env()
    del env["FEIRA_WORKER_IPS"]
    with pytest.raises(ValueError, match="FEIRA_WORKER_IPS"):
        cluster.render_cluster_config(env, tmp_path)
    env = cluster_env()
    del env["FEIRA_PAYMENT_WEBHOOK_SECRET"]
    with pytest.raises(ValueError, match="FEIRA_PAYMENT_WEBHOOK_SECRET"):
        cluster.write_secrets(env, b"keys", tmp_path / "secrets")


def test_secrets_are_private_and_every_node_reads_the_same_settings(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    advice = cluster.write_secrets(cluster_env(), b"-----PEM-----\n", secrets)
    assert advice == []
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    for name in ("feira.env", "jwt-keys.pem", "ray-auth-token"):
        assert stat.S_IMODE((secrets / name).stat().st_mode) == 0o600
    assert (secrets / "jwt-keys.pem").read_bytes() == b"-----PEM-----\n"
    token = (secrets / "ray-auth-token").read_text()
    cluster.write_secrets(cluster_env(), b"-----PEM-----\n", secrets)
    assert (secrets / "ray-auth-token").read_text() == token  # a re-render keeps it
    # What a node's start command sees, with its own $HOME.
    node_home = tmp_path / "node"
    (node_home / "feira-secrets").mkdir(parents=True)
    (node_home / "feira-secrets" / "feira.env").write_bytes((secrets / "feira.env").read_bytes())
    shown = subprocess.run(
        ["sh", "-c", "set -a && . ~/feira-secrets/feira.env && set +a && env"],
        env={"HOME": str(node_home), "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    seen = dict(line.split("=", 1) for line in shown if "=" in line)
    assert seen["FEIRA_POSTGRES_URL"] == "postgresql://feira:it's-secret@db:5432/feira"
    assert seen["FEIRA_JWT_KEYS_FILE"] == f"{node_home}/feira-secrets/jwt-keys.pem"
    assert seen["RAY_AUTH_MODE"] == "token"
    assert seen["RAY_AUTH_TOKEN_PATH"] == f"{node_home}/feira-secrets/ray-auth-token"
    # The operator's own paths stay on the operator's machine.
    assert "FEIRA_DATA_DIR" not in seen
    assert "FEIRA_HEAD_IP" not in seen
