"""``llm-config demo``: a server, an agent and a sample app started on this machine, walked
through a model change, a rollback, a key rotation and a refused config, then stopped.

    runner        ``run_demo`` (what the CLI command calls): run the steps, stop what they started
    walkthrough   the steps
    stack         starting the server, agent and app, and waiting until each is usable
    processes     the children, stopped by PID however the demo ends
    workspace     ./demo-config, the marker that says it is the demo's, the temporary work dir
    scenario      the configuration the demo stores and the changes it makes
    console       plain-text output with step numbers and markers
    sample_app    the app (stdlib only): reloads on SIGHUP, prints its active model
    check         the agent's --check-cmd (stdlib only): validates a staged set
"""

from server.demo.runner import run_demo
from server.demo.workspace import DEMO_DIR_NAME, stop_kept

__all__ = ["DEMO_DIR_NAME", "run_demo", "stop_kept"]
