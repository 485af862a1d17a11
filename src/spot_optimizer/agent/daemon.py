"""The agent daemon: start-up, registration/reconnect, heartbeat loop, commands, notices, shutdown.

One thread polls the metadata service for notices; the main thread does everything else in order
(heartbeat, commands, notices, outbox), so a command is never interrupted by another one. Price and
inventory collections only read, and an inventory of a big region takes a while: they run one at a time
on a worker thread, so a notice that arrives meanwhile is posted and acted on at once.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from spot_optimizer import __version__
from spot_optimizer.agent.autonomous import act_alone
from spot_optimizer.agent.client import ServerClient, ServerRejected, ServerUnavailable
from spot_optimizer.agent.config import AgentConfig, ConfigStore, LastKnownPolicy
from spot_optimizer.agent.executor import CommandExecutor
from spot_optimizer.agent.journal import CommandJournal
from spot_optimizer.agent.logsetup import redact
from spot_optimizer.agent.outbox import Outbox
from spot_optimizer.agent.watchers import (
    InterruptionWatcher,
    NoticeMonitor,
    RebalanceWatcher,
    ScheduledEventsWatcher,
    SeenNotices,
)
from spot_optimizer.aws.ec2 import Ec2Operations, tags_of
from spot_optimizer.aws.imds import ImdsClient
from spot_optimizer.aws.pricing import PriceCollector
from spot_optimizer.aws.session import AwsSettings, ec2_client, pricing_client
from spot_optimizer.core.commands import Command, CommandType
from spot_optimizer.core.errors import MetadataError, SpotOptimizerError
from spot_optimizer.core.models import (
    ROLE_TAG,
    WORKLOAD_TAG,
    AgentState,
    InstanceMetadata,
    Notice,
    NoticeKind,
    Pool,
    Role,
)
from spot_optimizer.core.protocol import AgentPolicy, HeartbeatRequest, ReconnectRequest, RegisterRequest

logger = logging.getLogger(__name__)

READ_ONLY_COMMANDS = (CommandType.COLLECT_PRICES, CommandType.COLLECT_INVENTORY)


@dataclass
class AgentSettings:
    server_url: str
    enrollment_token: str | None
    config_path: Path = Path("./spot_optimizer_config.json")
    imds_endpoint: str | None = None
    region: str | None = None
    workload: str | None = None
    aws_endpoint_url: str | None = None
    notice_poll_s: float = 2.0
    heartbeat_s: float = 5.0  # until the server says otherwise
    max_backoff_s: float = 30.0
    role_refresh_s: float = 15.0
    # After a notice, commands matter within seconds: heartbeat this often until the window closes.
    urgent_heartbeat_s: float = 0.25
    urgent_window_s: float = 60.0
    # How long the server must stay unreachable during an interruption notice before the agent acts alone.
    autonomy_grace_s: float = 20.0
    # How long start-up waits for a metadata service that does not answer yet before the agent gives up.
    startup_wait_s: float = 60.0
    dry_run: bool = False
    crash_at: str | None = None
    ca_bundle: str | None = None
    state_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir or self.config_path.parent / f"{self.config_path.stem}.state"


class Agent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.state = AgentState.REGISTER_PENDING
        self.store = ConfigStore(settings.config_path)
        self.config: AgentConfig = self.store.load()
        state_dir = settings.resolved_state_dir
        self.journal = CommandJournal(state_dir / "journal.jsonl")
        self.outbox = Outbox(state_dir / "outbox")
        self.notices: queue.Queue[Notice] = queue.Queue()
        self.seen = SeenNotices(state_dir / "notices_seen.json")
        self.stop_event = threading.Event()
        self._wake = threading.Event()  # set by the notice monitor: the main loop reacts at once, not at its tick
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="collect")
        self._reading: set[str] = set()  # collections queued or running on the reader thread
        self._reads_done = threading.Event()  # a collection finished: its result waits in the outbox
        self.client = ServerClient(settings.server_url, ca_bundle=settings.ca_bundle)
        self.server_reachable = False
        self.role: Role | None = None
        self.metadata: InstanceMetadata | None = None
        self.heartbeat_s = settings.heartbeat_s
        self._failures = 0
        self._next_heartbeat = 0.0
        self._next_role_refresh = 0.0
        self._pending_interruption: Notice | None = None
        self._urgent_until = 0.0
        self._unreachable_since: float | None = time.monotonic()  # not yet connected counts as unreachable
        redact(settings.enrollment_token)
        redact(self.config.agent_secret)

    # --- start-up --------------------------------------------------------------------------------
    def set_state(self, state: AgentState) -> None:
        if state != self.state:
            logger.info("STATE TRANSITION: %s -> %s", self.state.value, state.value)
            self.state = state

    def bootstrap(self) -> None:
        logger.info("=" * 80)
        logger.info("Spot Optimizer agent %s starting (config %s, server %s, dry_run=%s)", __version__,
                    self.settings.config_path, self.settings.server_url, self.settings.dry_run)
        self.imds = ImdsClient(self.settings.imds_endpoint)
        logger.info("Reading instance metadata (IMDSv2) from %s", self.imds.endpoint)
        self.metadata = meta = self._read_metadata()
        region = self.settings.region or meta.region
        aws = AwsSettings(region=region, endpoint_url=self.settings.aws_endpoint_url)
        logger.info("Initialising AWS clients for %s", region)
        ec2 = ec2_client(aws)
        self.ec2 = Ec2Operations(ec2, region)
        state_dir = self.settings.resolved_state_dir
        self.prices = PriceCollector(ec2, pricing_client(aws), region, cache_path=state_dir / "prices_cache.json")
        logger.info("AWS connectivity test: describing own instance %s", meta.instance_id)
        launch_config = self.ec2.discover_launch_config(meta.instance_id)
        self.config.set_launch_config(launch_config, meta.instance_id)
        self.config.workload = self.settings.workload or launch_config.tags.get(WORKLOAD_TAG) or \
            self.config.workload or meta.instance_id
        if not self.config.policy.instance_types:
            self.config.policy.instance_types = [meta.instance_type]
        if not self.config.policy.availability_zones:
            self.config.policy.availability_zones = [meta.availability_zone]
        self.config.server_url = self.settings.server_url
        self._set_role(launch_config.tags.get(ROLE_TAG))
        self.store.save(self.config)
        self.executor = CommandExecutor(self.ec2, self.prices, self.journal, lambda: self.config, self._emit,
                                        dry_run=self.settings.dry_run, crash_at=self.settings.crash_at)
        watchers = [InterruptionWatcher(self.imds, meta.instance_id), RebalanceWatcher(self.imds, meta.instance_id),
                    ScheduledEventsWatcher(self.imds, meta.instance_id)]
        self.monitor = NoticeMonitor(watchers, self.notices, interval_s=self.settings.notice_poll_s, seen=self.seen,
                                     on_notice=self._wake.set)

    def _read_metadata(self) -> InstanceMetadata:
        """The instance's metadata, waiting out a metadata service that is slow or not up yet (early in boot,
        or a busy host) for up to `startup_wait_s` before giving up."""
        deadline = time.monotonic() + self.settings.startup_wait_s
        delay = 0.5
        while True:
            try:
                return self.imds.instance_metadata()
            except MetadataError as exc:
                if time.monotonic() + delay > deadline or self.stop_event.is_set():
                    raise
                logger.warning("Instance metadata not readable yet (%s); retrying in %.1fs", exc, delay)
                self.stop_event.wait(delay)
                delay = min(delay * 2, 8.0)

    def _set_role(self, value: str | None) -> None:
        try:
            role = Role(value) if value else None
        except ValueError:
            role = None
        if role != self.role:
            logger.info("ROLE: %s -> %s", self.role.value if self.role else None, role.value if role else None)
            self.role = role

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        self.outbox.put(kind, payload)

    # --- server conversation ---------------------------------------------------------------------
    def connect(self) -> bool:
        """Register (first start) or reconnect (known agent id). True when the server accepted us."""
        assert self.metadata is not None
        cfg = self.config
        try:
            if cfg.agent_id and cfg.agent_secret:
                self.client.authenticate(cfg.agent_id, cfg.agent_secret)
                try:
                    resp = self.client.reconnect(ReconnectRequest(
                        metadata=self.metadata, launch_config=cfg.launch_config(), version=__version__))
                    logger.info("RECONNECTED as agent %s (workload %s)", resp.agent_id, resp.workload)
                    self._apply_server_view(resp.toggles.model_dump(), resp.heartbeat_interval_s, resp.workload)
                    return self._connected()
                except ServerRejected as exc:
                    if exc.status not in (401, 403, 404):
                        raise
                    logger.warning("Server does not know agent %s any more (%s): registering anew",
                                   cfg.agent_id, exc)
            if not self.settings.enrollment_token:
                raise SpotOptimizerError("no enrollment token: cannot register this agent")
            reg = self.client.register(RegisterRequest(
                enrollment_token=self.settings.enrollment_token, metadata=self.metadata,
                launch_config=cfg.launch_config(), workload=cfg.workload, role=self.role, version=__version__,
                toggles=cfg.toggles))
            redact(reg.agent_secret)
            cfg.agent_id, cfg.agent_secret = reg.agent_id, reg.agent_secret
            logger.info("REGISTERED as agent %s (workload %s)", reg.agent_id, reg.workload)
            self._apply_server_view(reg.toggles.model_dump(), reg.heartbeat_interval_s, reg.workload)
            self.store.save(cfg)
            return self._connected()
        except ServerUnavailable as exc:
            self._server_down(exc)
            return False

    def _connected(self) -> bool:
        self.server_reachable = True
        self._unreachable_since = None
        self._failures = 0
        if self.state == AgentState.REGISTER_PENDING:
            self.set_state(AgentState.ONLINE_READY)
        return True

    def _server_down(self, exc: Exception) -> None:
        self.server_reachable = False
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
        self._failures += 1
        delay = min(self.settings.max_backoff_s, self.heartbeat_s * 2 ** min(self._failures - 1, 6))
        delay *= random.uniform(0.8, 1.2)
        self._next_heartbeat = time.monotonic() + delay
        logger.warning("Server unreachable (%s); attempt %d, retrying in %.1fs", exc, self._failures, delay)

    def _apply_server_view(self, toggles: dict[str, bool], interval: float, workload: str | None) -> None:
        self.heartbeat_s = interval or self.heartbeat_s
        changed = self.config.set_toggles(type(self.config.toggles)(**toggles))
        if workload and workload != self.config.workload:
            self.config.workload = workload
            changed = True
        if changed:
            logger.info("CONFIG UPDATE from server: toggles=%s workload=%s", toggles, workload)
            self.store.save(self.config)

    def _apply_policy(self, policy: AgentPolicy) -> None:
        """Keep the workload's allowed pools: what the agent uses if it must act alone on a notice."""
        known = LastKnownPolicy(instance_types=policy.instance_types, availability_zones=policy.availability_zones,
                                allow_on_demand=policy.allow_on_demand)
        if known != self.config.policy:
            logger.info("CONFIG UPDATE from server: last known policy %s", known.model_dump())
            self.config.policy = known
            self.store.save(self.config)

    def heartbeat(self) -> None:
        assert self.metadata is not None
        pool = Pool(region=self.ec2.region, instance_type=self.metadata.instance_type,
                    az=self.metadata.availability_zone, market=self.metadata.lifecycle).pool_id
        request = HeartbeatRequest(state=self.state, role=self.role, instance_id=self.metadata.instance_id,
                                   pool=pool, version=__version__, sent_at=datetime.now(UTC))
        try:
            response = self.client.heartbeat(request)
        except ServerUnavailable as exc:
            self._server_down(exc)
            return
        except ServerRejected as exc:
            logger.error("Heartbeat rejected: %s; reconnecting", exc)
            self.connect()
            return
        self._connected()
        logger.debug("HEARTBEAT sent: state=%s role=%s pool=%s -> %d command(s), toggles=%s", self.state.value,
                     self.role.value if self.role else None, pool, len(response.commands),
                     response.toggles.model_dump())
        interval = self.heartbeat_s
        if time.monotonic() < self._urgent_until:
            interval = min(interval, self.settings.urgent_heartbeat_s)
        self._next_heartbeat = time.monotonic() + interval * random.uniform(0.9, 1.1)
        self._apply_server_view(response.toggles.model_dump(), response.heartbeat_interval_s, None)
        if response.policy is not None:
            self._apply_policy(response.policy)
        for command in response.commands:
            logger.info("COMMAND RECEIVED: %s %s params=%s", command.type.value, command.command_id, command.params)
            if command.type in READ_ONLY_COMMANDS:
                self._read_aside(command)
                continue
            previous = self.state
            self.set_state(AgentState.EXECUTING)
            self.executor.execute(command)
            self.set_state(previous if previous != AgentState.EXECUTING else AgentState.ONLINE_READY)
            if command.type.value == "promote":
                self._next_role_refresh = 0.0
            self.flush_outbox()

    def _read_aside(self, command: Command) -> None:
        """Run a collection on the reader thread; a redelivery of one still running is ignored."""
        if command.command_id in self._reading:
            logger.info("Command %s is still running on the reader thread: delivery ignored", command.command_id)
            return
        self._reading.add(command.command_id)

        def run() -> None:
            try:
                self.executor.execute(command)
            except Exception:  # noqa: BLE001 - the thread must survive; the server redelivers after the lease
                logger.exception("Collection %s crashed on the reader thread", command.command_id)
            finally:
                self._reading.discard(command.command_id)
                self._reads_done.set()
                self._wake.set()

        self._reader.submit(run)

    def flush_outbox(self) -> None:
        if not self.client.agent_id:
            return
        if self.settings.crash_at == "before_result_sent" and any(m.kind == "result" for m in self.outbox.pending()):
            self.executor.maybe_crash("before_result_sent")  # test hook: the result is journalled, not yet sent
        try:
            self.outbox.flush(self.client.send)
        except ServerUnavailable as exc:
            self._server_down(exc)
        except ServerRejected as exc:
            # The server refuses this message for good (e.g. a result for a command it expired): keep going.
            logger.error("Outbox message rejected by the server: %s; dropping it", exc)
            pending = self.outbox.pending()
            if pending:
                pending[0].path.unlink(missing_ok=True)

    # --- notices ---------------------------------------------------------------------------------
    def handle_notices(self) -> None:
        while True:
            try:
                notice = self.notices.get_nowait()
            except queue.Empty:
                break
            if notice.kind == NoticeKind.INTERRUPTION:
                self.set_state(AgentState.NOTICE_RECEIVED)
                self._pending_interruption = notice
            self._emit("notice", notice.model_dump(mode="json"))
            self.flush_outbox()
            if self.server_reachable:
                # The server decides on a notice at once; fetch its commands now, not at the next heartbeat.
                self._urgent_until = time.monotonic() + self.settings.urgent_window_s
                self._next_heartbeat = 0.0
        notice = self._pending_interruption
        if notice is None:
            return
        self.set_state(AgentState.DRAINING)
        if self.role != Role.PRIMARY:
            # Not (or no longer) the primary: a replica is simply replaced, and a primary that the server
            # already demoted has its successor. Nothing for this agent to do alone.
            self._pending_interruption = None
            return
        if self.server_reachable or not self._autonomy_due(notice):
            return  # the server decides; the notice is kept in case the server goes away before acting
        self._pending_interruption = None
        new_id = act_alone(notice, self.config, self.executor)
        if new_id:
            self._set_role(Role.ZOMBIE.value)

    def _autonomy_due(self, notice: Notice) -> bool:
        """Act alone only once the server has been unreachable for a while: a slow answer under load is
        not an outage, and a server that got the notice is already acting (acting too would launch twice).
        The wait is cut to a third of the time left before the instance goes."""
        since = self._unreachable_since if self._unreachable_since is not None else time.monotonic()
        remaining = 120.0
        if notice.action_time is not None:
            remaining = (notice.action_time - datetime.now(UTC)).total_seconds()
        grace = min(self.settings.autonomy_grace_s, max(0.0, remaining / 3))
        return time.monotonic() - since >= grace

    def refresh_role(self) -> None:
        if time.monotonic() < self._next_role_refresh or self.metadata is None:
            return
        self._next_role_refresh = time.monotonic() + self.settings.role_refresh_s
        try:
            instance = self.ec2.describe_instance(self.metadata.instance_id)
        except SpotOptimizerError as exc:
            logger.warning("Could not refresh own role from tags: %s", exc)
            return
        if instance is not None:
            self._set_role(tags_of(instance).get(ROLE_TAG))

    # --- main loop -------------------------------------------------------------------------------
    def run(self) -> int:
        self.bootstrap()
        self.monitor.start()
        try:
            for command in self.journal.unfinished():
                logger.warning("Command %s was interrupted by a restart: running it again (idempotent)",
                               command.command_id)
                self.executor.execute(command, autonomous=command.command_id.startswith("auto-"))
            connected = False
            while not self.stop_event.is_set():
                self.handle_notices()
                if time.monotonic() >= self._next_heartbeat:
                    if not connected:
                        connected = self.connect()
                        if connected:
                            self.flush_outbox()
                            self.heartbeat()
                    else:
                        self.heartbeat()
                        if self.server_reachable:
                            self.flush_outbox()
                self.refresh_role()
                if self._reads_done.is_set() and self.server_reachable:
                    self._reads_done.clear()
                    self.flush_outbox()  # what a collection found goes out now, not at the next heartbeat
                if self._wake.wait(0.1):
                    self._wake.clear()
        finally:
            self.shutdown()
        return 0

    def shutdown(self) -> None:
        logger.info("Shutdown sequence: stopping the notice monitor, flushing the outbox, saving the config")
        if hasattr(self, "monitor"):
            self.monitor.stop()
        self._reader.shutdown(wait=True, cancel_futures=True)  # a running collection finishes into the outbox
        self.handle_notices_to_outbox()
        self.flush_outbox()
        try:
            self.store.save(self.config)
        except SpotOptimizerError as exc:
            logger.error("Config not saved at shutdown: %s", exc)
        logger.info("Agent stopped (%d message(s) left in the outbox for the next start)", len(self.outbox))
        self.client.close()

    def handle_notices_to_outbox(self) -> None:
        while True:
            try:
                notice = self.notices.get_nowait()
            except queue.Empty:
                return
            self._emit("notice", notice.model_dump(mode="json"))
