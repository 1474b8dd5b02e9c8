"""The harness AGL v1's controller starts for each rollout: `oclagl run`.

Enqueue rollouts with
    config.local = {"agent_class": "oclagl_agl.harness:OpenClawHarness",
                    "env_map": {"OCLAGL_RUN_PROMPT": "input.prompt",
                                "OCLAGL_RUN_EXPECTED": "input.expected"}}
and this folder (`python/`) on the controller's PYTHONPATH. `oclagl run`
reads everything from the environment: the task (OCLAGL_RUN_PROMPT), AGL's
AGL_OPENAI_BASE_URL, AGL_EVENT_URL and AGL_KEY, and the controller's own
OCLAGL_* settings (gateway, token, sidecar, --score). It binds the rollout
at the sidecar, runs the task through the gateway, posts the reward, and
exits 0 when the rollout succeeded.
"""

import os
import subprocess


class OpenClawHarness:
    """Runs one rollout with `oclagl run` (OCLAGL_HARNESS_BIN, else `oclagl` on PATH)."""

    def run(self) -> None:
        command = [os.environ.get("OCLAGL_HARNESS_BIN") or "oclagl", "run"]
        code = subprocess.run(command, stdin=subprocess.DEVNULL, check=False).returncode
        if code != 0:
            # AGL's runner marks the rollout failed when run() raises.
            raise RuntimeError(f"oclagl run exited with code {code}")
