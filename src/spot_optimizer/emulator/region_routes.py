"""The region's part of the shim's control API (instances, scripted notices, agents)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spot_optimizer.emulator.region import EmulatedRegion


def install_routes(region: EmulatedRegion) -> None:
    shim = region.shim

    def region_info(_body: Any, _q: dict[str, str]) -> tuple[int, Any]:
        return 200, region.describe()

    def instances(_body: Any, _q: dict[str, str]) -> tuple[int, Any]:
        out = []
        for inst in region.instances().values():
            item = inst.to_dict()
            proc = region.runtime.get(inst.instance_id) if region.runtime else None
            item["agent"] = (
                None
                if proc is None
                else {"pid": proc.pid, "running": proc.running, "log": str(proc.log_path), "argv": proc.argv}
            )
            out.append(item)
        return 200, {"instances": out}

    def events(_body: Any, _q: dict[str, str]) -> tuple[int, Any]:
        return 200, {
            "pending": [e.to_dict() for e in region.schedule.pending()],
            "fired": [e.to_dict() for e in region.schedule.fired()],
        }

    def interrupt(body: Any, _q: dict[str, str]) -> tuple[int, Any]:
        body = body or {}
        event = region.interrupt(
            body["instance_id"], float(body.get("in_s", 0)), body.get("notice_s"), body.get("action", "terminate")
        )
        return 201, event.to_dict()

    def rebalance(body: Any, _q: dict[str, str]) -> tuple[int, Any]:
        body = body or {}
        return 201, region.rebalance(body["instance_id"], float(body.get("in_s", 0))).to_dict()

    def scheduled(body: Any, _q: dict[str, str]) -> tuple[int, Any]:
        body = body or {}
        event = region.scheduled_event(
            body["instance_id"],
            float(body.get("in_s", 0)),
            body.get("code", "system-reboot"),
            float(body.get("lead_s", 3600)),
        )
        return 201, event.to_dict()

    def restart_agent(body: Any, _q: dict[str, str]) -> tuple[int, Any]:
        body = body or {}
        try:
            region.restart_agent(body["instance_id"])
        except RuntimeError as exc:
            return 409, {"error": str(exc)}
        return 200, {"restarted": body["instance_id"]}

    def kill_agent(body: Any, _q: dict[str, str]) -> tuple[int, Any]:
        body = body or {}
        try:
            killed = region.kill_agent(body["instance_id"], int(body.get("signal", 9)))
        except RuntimeError as exc:
            return 409, {"error": str(exc)}
        return 200, {"killed": killed}

    shim.add_route("POST", "/_emulator/agents/kill", kill_agent)
    shim.add_route("GET", "/_emulator/region", region_info)
    shim.add_route("GET", "/_emulator/instances", instances)
    shim.add_route("GET", "/_emulator/events", events)
    shim.add_route("POST", "/_emulator/interrupt", interrupt)
    shim.add_route("POST", "/_emulator/rebalance", rebalance)
    shim.add_route("POST", "/_emulator/scheduled-event", scheduled)
    shim.add_route("POST", "/_emulator/agents/restart", restart_agent)
