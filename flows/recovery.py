"""Noticing a lost machine, with Prefect's own mechanism: its flow runs emit heartbeats
(PREFECT_FLOWS_HEARTBEAT_FREQUENCY, set on the `build-shard` deployment), and an automation on the
server marks a `build-shard` run whose heartbeats stopped as Crashed ("detect zombie flows" in
Prefect's documentation). A run whose machine vanished cannot report anything itself; the
automation is what turns its silence into a state the parent build waits for (flows/shards.py).
"""

from __future__ import annotations

from datetime import timedelta

AUTOMATION_NAME = "longform: crash build-shard runs whose heartbeats stopped"


def heartbeat_env(heartbeat_s: int) -> dict[str, str]:
    """The environment a shard run needs to emit heartbeats every `heartbeat_s` seconds."""
    return {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_s)}


def _automation(flow_name: str, silent_s: int):
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return Automation(
        name=AUTOMATION_NAME,
        description=f"A {flow_name} flow run with no event for {silent_s} s after a heartbeat (or its start) lost"
                    " its machine:"
                    " mark it Crashed so the build that submitted it runs its shard again (set up by"
                    " `longform deploy`).",
        trigger=EventTrigger(
            # Armed by the Running state too, which the server records itself: a run killed before
            # its first heartbeat left the process (they are sent in batches) is caught as well.
            after={"prefect.flow-run.heartbeat", "prefect.flow-run.Running"},
            # Any flow-run event (the next heartbeat, a state change) shows the run is alive.
            expect={"prefect.flow-run.*"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=ResourceSpecification({"prefect.resource.role": "flow",
                                                 "prefect.resource.name": flow_name}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=silent_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {silent_s} s: its machine or process was lost")],
    )


def ensure_crash_automation(flow_name: str, silent_s: int) -> str:
    """Create the automation on the configured Prefect server, or bring the existing one (found by
    name) to these settings: deploying twice leaves one. Returns what was done."""
    from prefect.automations import Automation

    wanted = _automation(flow_name, silent_s)
    try:
        found = Automation.read(name=AUTOMATION_NAME)
    except ValueError:  # none by that name yet
        wanted.create()
        return "created"
    same = (found.trigger.model_dump(exclude={"id"}) == wanted.trigger.model_dump(exclude={"id"})
            and [a.model_dump() for a in found.actions] == [a.model_dump() for a in wanted.actions])
    if same and found.enabled:
        return "kept"
    wanted.id = found.id
    wanted.update()
    return "updated"
