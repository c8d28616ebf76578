"""The Serve config file is one `serve deploy` accepts, and its builder wires the app."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from deployments.builder import build_app

CONFIG = Path(__file__).parents[2] / "deployments" / "serve_config.yaml"


def test_config_validates_and_builds(tmp_path: Path) -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    app = config.applications[0]
    assert app.import_path == "deployments.builder:build_app"
    built = build_app({**app.args, "data_dir": str(tmp_path)})
    assert isinstance(built, Application)


def test_builder_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="6379"):
        build_app({"ray_gcs_port": 6379})
