"""What ships in deploy/: a least-privilege IAM policy for the agent and hardened systemd units.

The policy's action list is checked against the AWS calls of a real run in tests/e2e/test_security_run.py;
here its shape: every write is conditioned, PassRole names one role, nothing is `*` that need not be.
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = ("spot-optimizer-agent.service", "spot-optimizer-server.service")
MANAGED = {"aws:ResourceTag/ManagedBy": "SpotOptimizer"}


def policy() -> dict[str, Any]:
    return dict(json.loads((DEPLOY / "iam-policy.json").read_text()))


def statements_for(action: str) -> list[dict[str, Any]]:
    out = []
    for st in policy()["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        if action in actions:
            out.append(st)
    return out


def as_list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


@pytest.mark.reliability(fault="IAM policy shape: wildcards, unconditioned writes, PassRole on any role",
                         outcome="only Allow; no action wildcard; writes conditioned; PassRole on one role")
def test_iam_policy_is_least_privilege() -> None:
    doc = policy()
    assert doc["Version"] == "2012-10-17"
    for st in doc["Statement"]:
        assert st["Effect"] == "Allow"
        assert "NotAction" not in st and "NotResource" not in st
        for action in as_list(st["Action"]):
            assert "*" not in action, action
    # terminate and re-tag only what carries ManagedBy=SpotOptimizer
    for st in statements_for("ec2:TerminateInstances"):
        assert st["Condition"]["StringEquals"] == MANAGED
        assert as_list(st["Resource"]) == ["arn:aws:ec2:*:*:instance/*"]
    tags = statements_for("ec2:CreateTags")
    assert tags and all(
        st["Condition"]["StringEquals"] in (MANAGED, {"ec2:CreateAction": "RunInstances"}) for st in tags
    )
    assert {"ec2:CreateAction": "RunInstances"} in [st["Condition"]["StringEquals"] for st in tags]
    # a launch creates only instances tagged ManagedBy=SpotOptimizer
    created = [st for st in statements_for("ec2:RunInstances")
               if "arn:aws:ec2:*:*:instance/*" in as_list(st["Resource"])]
    assert created and all(st["Condition"]["StringEquals"] == {"aws:RequestTag/ManagedBy": "SpotOptimizer"}
                           for st in created)
    # PassRole: one named role, and only to EC2
    (passrole,) = statements_for("iam:PassRole")
    (role,) = as_list(passrole["Resource"])
    assert role.startswith("arn:aws:iam::") and ":role/" in role and not role.endswith("*")
    assert passrole["Condition"]["StringEquals"] == {"iam:PassedToService": "ec2.amazonaws.com"}
    # the only Resource "*" are the read-only calls that cannot be scoped
    for st in doc["Statement"]:
        if st["Resource"] == "*":
            assert all(a.split(":")[1].startswith(("Describe", "Get")) for a in as_list(st["Action"])), st


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / name).read_text())
    return parser


HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "CapabilityBoundingSet": "",
    "UMask": "0077",
}


@pytest.mark.reliability(fault="systemd units without hardening",
                         outcome="both units: no privileges, read-only system, private tmp, only their state dirs "
                                 "writable (0700)")
@pytest.mark.parametrize("name", UNITS)
def test_systemd_unit_is_hardened(name: str) -> None:
    service = unit(name)["Service"]
    for key, value in HARDENING.items():
        assert service.get(key) == value, (name, key, service.get(key))
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    writable = service["ReadWritePaths"].split()
    assert writable and all(p.startswith("/var/lib/spot-optimizer") or p.startswith("/var/log/spot-optimizer")
                            for p in writable), writable
    assert service["StateDirectoryMode"] == "0700"
    assert "RestrictAddressFamilies" in service and "SystemCallFilter" in service
    # no secret on the command line or in the unit: tokens come in as credentials
    text = (DEPLOY / name).read_text()
    assert "--enrollment-token " not in text and "--admin-token" not in text
    assert "LoadCredential" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("name", UNITS)
def test_systemd_analyze_verify_accepts_the_unit(name: str, tmp_path: Path) -> None:
    # The binary is not installed here: point ExecStart at one that exists; every other key is checked as is.
    text = (DEPLOY / name).read_text().replace("/opt/spot-optimizer/bin/spot-optimizer", "/bin/true")
    (tmp_path / name).write_text(text)
    done = subprocess.run(["systemd-analyze", "verify", "--man=no", f"./{name}"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"SYSTEMD_LOG_LEVEL": "warning", "PATH": "/usr/bin:/bin"})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Unknown key" not in output and "ignoring" not in output, output
