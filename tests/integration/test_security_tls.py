"""Optional TLS: a real server process started with `--tls-cert/--tls-key` (a certificate for 127.0.0.1 and
localhost signed by a CA made here) and real agent processes (moto in server mode and the test metadata
service stand in for AWS). With `--ca-bundle` the agent registers and works over https; without it, or with
another CA's bundle, it fails certificate verification and never registers; plain http is refused."""

from __future__ import annotations

import ipaddress
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from moto.server import ThreadedMotoServer

from helpers.aws_world import build_world
from helpers.procs import ADMIN, Proc, agent_proc, free_port, server_proc, wait_for
from spot_optimizer.emulator.imds import MetadataServer, MetadataState

VERIFY_FAILED = "CERTIFICATE_VERIFY_FAILED"


# --- certificates ------------------------------------------------------------------------------------------
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
                     ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(_name("spot-optimizer server")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_pem(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        key_path = path.with_suffix(".key")
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        key_path.chmod(0o600)
    return path


# --- the stack -----------------------------------------------------------------------------------------------
@dataclass
class TlsStack:
    tmp: Path
    port: int
    ca: Path
    other_ca: Path
    server: Proc
    moto_url: str
    imds_url: str
    own_instance_id: str

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def operator(self) -> httpx.Client:
        return httpx.Client(base_url=self.https + "/api/v1", headers={"Authorization": f"Bearer {ADMIN}"},
                            verify=ssl.create_default_context(cafile=str(self.ca)), timeout=10, trust_env=False)

    def healthz(self, verify: ssl.SSLContext | bool) -> httpx.Response:
        return httpx.get(self.https + "/healthz", verify=verify, timeout=5, trust_env=False)

    def agent(self, name: str, *extra: str) -> Proc:
        return agent_proc(self.https, self.imds_url, self.moto_url, self.tmp / name / "config.json",
                          self.tmp / f"{name}.log", "--heartbeat-interval", "0.3", "--notice-poll-interval", "0.3",
                          *extra).start()


def agent_text(proc: Proc) -> str:
    file_log = proc.log.with_suffix(".file.log")
    return proc.text() + (file_log.read_text(errors="replace") if file_log.exists() else "")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsStack]:
    tmp = tmp_path_factory.mktemp("tls")
    ca_key, ca = make_ca("spot-optimizer test CA")
    server_key, server_cert = make_server_cert(ca_key, ca)
    _, other = make_ca("some other CA")
    cert_path = write_pem(tmp / "server.pem", server_cert, server_key)
    moto_port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    moto_url = f"http://127.0.0.1:{moto_port}"
    httpx.post(moto_url + "/moto-api/reset")  # moto's backends are process-global: start from nothing
    world = build_world(moto_url)
    own = world.ec2.describe_instances(InstanceIds=[world.own_instance_id])["Reservations"][0]["Instances"][0]
    imds = MetadataServer(MetadataState(
        instance_id=own["InstanceId"], instance_type=own["InstanceType"],
        availability_zone=own["Placement"]["AvailabilityZone"], region="eu-west-1", ami_id=own["ImageId"],
        private_ip=own.get("PrivateIpAddress"), lifecycle="spot")).start()
    port = free_port()
    server = server_proc(f"sqlite:///{tmp / 'server.db'}", port, tmp / "server.log", "--heartbeat-interval", "0.3",
                         "--tls-cert", str(cert_path), "--tls-key", str(cert_path.with_suffix(".key"))).start()
    stack = TlsStack(tmp, port, write_pem(tmp / "ca.pem", ca), write_pem(tmp / "other-ca.pem", other), server,
                     moto_url, imds.url, world.own_instance_id)
    trusted = ssl.create_default_context(cafile=str(stack.ca))
    try:
        wait_for("the server to answer /healthz over https", lambda: stack.healthz(trusted).status_code == 200,
                 timeout_s=60)
        yield stack
    finally:
        server.stop()
        imds.stop()
        moto.stop()


@pytest.mark.reliability(fault="plain http, or https without trusting the server's CA, to a server started with "
                               "--tls-cert/--tls-key",
                         outcome="plain http gets no HTTP answer; https fails certificate verification unless the "
                                 "client trusts the CA; with the CA /healthz answers 200")
def test_server_speaks_only_tls(tls: TlsStack) -> None:
    assert tls.healthz(ssl.create_default_context(cafile=str(tls.ca))).status_code == 200
    with pytest.raises(httpx.HTTPError):  # the TLS listener drops a plain-text request
        httpx.get(f"http://127.0.0.1:{tls.port}/healthz", timeout=5, trust_env=False)
    with pytest.raises(httpx.ConnectError, match=VERIFY_FAILED):
        tls.healthz(True)  # the system's trust store does not know our CA
    with pytest.raises(httpx.ConnectError, match=VERIFY_FAILED):
        tls.healthz(ssl.create_default_context(cafile=str(tls.other_ca)))


@pytest.mark.reliability(fault="an agent connecting to a TLS server without a CA bundle, or with another CA's "
                               "bundle (a server it must not trust)",
                         outcome="certificate verification error in the agent's log, no registration at the server; "
                                 "with --ca-bundle the agent registers and runs a command over https")
def test_agent_verifies_the_server_certificate(tls: TlsStack) -> None:
    untrusting = [tls.agent("no-bundle"), tls.agent("other-ca", "--ca-bundle", str(tls.other_ca))]
    good = tls.agent("with-ca", "--ca-bundle", str(tls.ca))
    operator = tls.operator()
    try:
        row = wait_for("the agent with the CA bundle registered and online", lambda: next(
            (a for a in operator.get("/agents").json() if a["state"] == "ONLINE_READY"), None), timeout_s=60)
        assert row["instance_id"] == tls.own_instance_id
        assert "REGISTERED as agent " + row["agent_id"] in agent_text(good)
        issued = operator.post("/commands", json={"agent_id": row["agent_id"], "type": "collect_inventory",
                                                  "params": {}})
        assert issued.status_code == 201, issued.text
        command_id = issued.json()["command_id"]
        done = wait_for("the command run over https", lambda: (c := operator.get(f"/commands/{command_id}").json())
                        ["status"] in ("succeeded", "failed") and c, timeout_s=60)
        assert done["status"] == "succeeded", done
        for proc in untrusting:
            # at least two failed attempts each: the agent keeps refusing, it does not fall back to no checks
            wait_for(f"{proc.log.name}: certificate verification errors",
                     lambda p=proc: agent_text(p).count(VERIFY_FAILED) >= 2, timeout_s=60)
            assert proc.alive()
            assert "REGISTERED as agent" not in agent_text(proc)
            config = proc.log.parent / proc.log.stem / "config.json"
            assert not config.exists() or not json.loads(config.read_text()).get("agent_id")  # no id saved
        agents = operator.get("/agents").json()
        assert [a["agent_id"] for a in agents] == [row["agent_id"]]  # only the agent that trusts the CA
    finally:
        operator.close()
        for proc in (*untrusting, good):
            proc.stop()
