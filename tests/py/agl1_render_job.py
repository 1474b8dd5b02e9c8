"""Renders a Job template as AGL v1's Kubernetes runner does (its own
build_job_spec), for a rollout whose input prompt is argv[2]; prints the Job
as JSON. Runs in target/venv-agl1 (agentlightning 1.0.2)."""

import json
import sys

from omegaconf import OmegaConf

from agentlightning.controller.k8s_reconciler import build_job_spec
from agentlightning.schemas import Rollout

with open(sys.argv[1], encoding="utf-8") as f:
    template = f.read()
rollout = Rollout.model_validate(
    {
        "rollout_id": "r-1",
        "input": {"prompt": sys.argv[2]},
        "is_train": True,
        "config": {"timeout_seconds": 60, "k8s": {"job_template": template}},
        "status": {"state": "queuing", "created_at": 0.0, "updated_at": 0.0},
    }
)
config = OmegaConf.create(
    {
        "agl_server": {"url": "http://agl:8080", "agent_url": None, "key": "agl-key"},
        "k8s_runner": {"namespace": "agl", "ttl_after_finished": 60},
    }
)
print(json.dumps(build_job_spec(rollout, config)))
