"""Flow hooks (Prefect ``on_failure``): what an operator needs when a flow run fails, as an
artifact on the run — the error, the fix it names, and where to look — instead of only a
traceback in the logs."""

from __future__ import annotations


def failure_markdown(flow_name: str, run_name: str, message: str) -> str:
    """The failure artifact: the error's first line, its ``fix:`` line when cvloop raised it."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    error = lines[0] if lines else "the run failed (no message)"
    fix = next((x.removeprefix("fix:").strip() for x in lines if x.startswith("fix:")), None)
    md = [f"# {flow_name} failed: {run_name}", "", f"**Error:** {error}", ""]
    if fix:
        md += [f"**Fix:** {fix}", ""]
    md += ["Runbook: runbooks/incidents.md; the run's logs in the Prefect UI have the rest."]
    return "\n".join(md) + "\n"


def publish_failure(flow, flow_run, state) -> None:
    """``on_failure`` hook of every cvloop flow: artifact ``<flow>-failure`` on the run."""
    from prefect.artifacts import create_markdown_artifact

    try:
        message = state.message or ""
        try:
            state.result(raise_on_failure=True)
        except BaseException as exc:  # the exception the run failed with
            message = str(exc) or message
        key = f"{flow.name}-failure".replace("_", "-").lower()
        create_markdown_artifact(
            markdown=failure_markdown(flow.name, flow_run.name, message),
            key=key,
            description=(message.splitlines() or ["failed"])[0][:200],
        )
    except Exception as exc:  # a hook never hides the run's own failure
        print(f"could not publish the failure artifact: {type(exc).__name__}: {exc}")
