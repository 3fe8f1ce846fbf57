"""A training killed mid-run (OOM, a lost node: SIGKILL) never ends its MLflow run; the
attempt that starts the same training again ends it KILLED, saying why, so no run stays
RUNNING forever. The kill is real: a process that holds a real run on the session's
MLflow is SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid

from tests.conftest import REPO, context

_ATTEMPT = textwrap.dedent(
    """
    import os, signal, sys
    from cvloop.context import Context
    from cvloop.stages.model import start_training_run
    ctx = Context.from_env()
    run = start_training_run(ctx, sys.argv[1], sys.argv[2], {"epochs": 50},
                             {"mlflow.parentRunId": sys.argv[3]})
    print(run, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # killed while training
    """
)


def test_a_killed_trainings_run_is_ended_by_the_next_attempt(stack_client_env):
    from cvloop.stages.model import start_training_run
    from registry.names import ENDED_BECAUSE

    ctx = context()
    t = ctx.tracker
    exp = f"abandoned-{uuid.uuid4().hex[:8]}"
    parent = t.start_run(exp, "retrain-x")
    other_parent = t.start_run(exp, "retrain-y")
    name = "finetune-dataset-v7-from-v6"
    proc = subprocess.run([sys.executable, "-c", _ATTEMPT, exp, name, parent], cwd=REPO,
                          env=dict(os.environ), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    killed = proc.stdout.split()[0]
    assert t.get_run(killed).status == "RUNNING"  # what a kill leaves behind
    # another retrain's training of the same name is not this attempt's to end
    elsewhere = t.start_run(exp, name, None, {"mlflow.parentRunId": other_parent})

    again = start_training_run(ctx, exp, name, {"epochs": 50}, {"mlflow.parentRunId": parent})
    old = t.get_run(killed)
    assert old.status == "KILLED"
    assert "process died" in old.tags[ENDED_BECAUSE] and name in old.tags[ENDED_BECAUSE]
    assert t.get_run(again).status == "RUNNING" and again != killed
    assert t.get_run(elsewhere).status == "RUNNING"
    running = [r.run_id for r in t.find_runs(exp, name=name) if r.status == "RUNNING"]
    assert sorted(running) == sorted([again, elsewhere])
