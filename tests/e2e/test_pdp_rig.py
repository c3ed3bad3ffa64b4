"""The test rig's policy decision point: Cerbos answering OpenID AuthZEN 1.0 evaluation requests,
and the forwarder that makes it slow (issue 16).

These talk to Cerbos directly (no Envoy, no Tollgate): they pin down the contract the AuthZEN
enforcement point relies on — how an evaluation request maps to Cerbos' principal, resource and
action, what allow and deny look like on the wire, that a policy edit is picked up without a
restart, that Cerbos comes back on the same port — and that tests/rig/pdp_delay.py forwards
unchanged, delays and counts. tests/rig/README.md "Cerbos (AuthZEN PDP)" describes all of it.
Every process is started by a fixture or test here and stopped by it, by PID.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

import procs
import servers

EVAL = "/access/v1/evaluation"


def request(subject_id, resource_id, action, **kw) -> dict:
    return servers.authzen_request(subject_id, resource_id, action, **kw)


def doc(owner: str, **props) -> dict:
    return {"owner": owner, **props}


@pytest.fixture(scope="module")
def cerbos(tmp_path_factory):
    """One Cerbos for the tests that only ask it questions (its policies are never edited)."""
    work = tmp_path_factory.mktemp("cerbos")
    proc = servers.start_cerbos(procs.free_port(), work / "policies", work)
    yield proc
    proc.stop()


@pytest.fixture
def own_cerbos(tmp_path):
    """A private Cerbos whose policies (a copy in tmp_path) the test may edit, or which it may
    stop and start."""
    proc = servers.start_cerbos(procs.free_port(), tmp_path / "policies", tmp_path)
    yield proc
    proc.stop()


@pytest.fixture
def client():
    with httpx.Client(timeout=5.0) as c:
        yield c


def decide(client: httpx.Client, url: str, body: dict) -> bool:
    r = client.post(url, json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert isinstance(answer.get("decision"), bool), answer
    return answer["decision"]


def test_owner_allowed_non_owner_denied(cerbos, client):
    url = cerbos.evaluation_url
    for action in ("read", "write", "delete"):
        r = client.post(url, json=request("alice", "doc-1", action, resource_properties=doc("alice")))
        assert (r.status_code, r.json()) == (200, {"decision": True}), action
        assert r.headers["content-type"] == "application/json"
        r = client.post(url, json=request("bob", "doc-1", action, resource_properties=doc("alice")))
        # A deny carries no reason unless the caller asks for Cerbos' metadata (below).
        assert (r.status_code, r.json()) == (200, {"decision": False}), action
    # An action no rule names, and a resource without an owner property: denied.
    assert not decide(client, url, request("alice", "doc-1", "share", resource_properties=doc("alice")))
    assert not decide(client, url, request("alice", "doc-1", "read"))
    # The owner comparison is on subject.id: an `owner`-looking subject property does not count.
    assert not decide(client, url, request("bob", "doc-1", "read", subject_properties={"owner": "alice"},
                                           resource_properties=doc("alice")))


def test_admin_role(cerbos, client):
    url = cerbos.evaluation_url
    for action in ("read", "write", "delete"):
        # A token's roles claim passed as the subject property `roles`: the claimed_admin derived role.
        assert decide(client, url, request("bob", "doc-1", action, subject_properties={"roles": ["admin"]},
                                           resource_properties=doc("alice")))
        # The same list in `cerbos.roles`: Cerbos' own principal roles, rule `admin-role`.
        assert decide(client, url, request("bob", "doc-1", action, subject_properties={"cerbos.roles": ["admin"]},
                                           resource_properties=doc("alice")))
        # No cerbos.roles: the principal's one role is subject.type.
        assert decide(client, url, request("bob", "doc-1", action, subject_type="admin",
                                           resource_properties=doc("alice")))
        # Other roles, or roles that are not a list of strings: nothing.
        for props in ({"roles": ["viewer", "user"]}, {"roles": "admin"}, {"cerbos.roles": ["viewer"]},
                      {"roles": []}):
            assert not decide(client, url, request("bob", "doc-1", action, subject_properties=props,
                                                   resource_properties=doc("alice"))), props
    # cerbos.roles replaces subject.type as the role list, and the owner rule does not need any role.
    assert decide(client, url, request("alice", "doc-1", "delete", subject_type="admin",
                                       subject_properties={"cerbos.roles": ["viewer"]},
                                       resource_properties=doc("alice")))
    assert not decide(client, url, request("bob", "doc-1", "delete", subject_type="admin",
                                           subject_properties={"cerbos.roles": ["viewer"]},
                                           resource_properties=doc("alice")))


def test_derived_roles_and_metadata(cerbos, client):
    url = cerbos.evaluation_url
    meta = {"cerbos.includeMeta": True, "cerbos.requestId": "rig-42"}
    # department_reader: subject property == resource property; read only.
    same = dict(subject_properties={"department": "sales"}, resource_properties=doc("alice", department="sales"))
    assert decide(client, url, request("bob", "doc-1", "read", **same))
    assert not decide(client, url, request("bob", "doc-1", "write", **same))
    assert not decide(client, url, request("bob", "doc-1", "read", subject_properties={"department": "hr"},
                                           resource_properties=doc("alice", department="sales")))

    r = client.post(url, json=request("bob", "doc-1", "read", context=meta, **same))
    assert r.json() == {"decision": True, "context": {"cerbos.response": {
        "requestId": "rig-42",
        "results": [{"actions": {"read": "EFFECT_ALLOW"},
                     "meta": {"actions": {"read": {"matchedPolicy": "resource.document.vdefault"}},
                              "effectiveDerivedRoles": ["department_reader"]},
                     "resource": {"id": "doc-1", "kind": "document"}}]}}}
    r = client.post(url, json=request("alice", "doc-1", "write", resource_properties=doc("alice"), context=meta))
    assert r.json()["context"]["cerbos.response"]["results"][0]["meta"]["effectiveDerivedRoles"] == ["owner"]
    # The deny "reason" is all Cerbos has: which policy matched (or NO_MATCH), no prose.
    r = client.post(url, json=request("bob", "doc-1", "write", resource_properties=doc("alice"), context=meta))
    assert r.json() == {"decision": False, "context": {"cerbos.response": {
        "requestId": "rig-42",
        "results": [{"actions": {"write": "EFFECT_DENY"},
                     "meta": {"actions": {"write": {"matchedPolicy": "resource.document.vdefault"}}},
                     "resource": {"id": "doc-1", "kind": "document"}}]}}}
    r = client.post(url, json=request("alice", "inv-1", "read", resource_type="invoice",
                                      resource_properties=doc("alice"), context=meta))
    result = r.json()["context"]["cerbos.response"]["results"][0]
    assert r.json()["decision"] is False and result["meta"]["actions"]["read"]["matchedPolicy"] == "NO_MATCH"
    assert result["resource"] == {"id": "inv-1", "kind": "invoice"}  # resource.type is the kind


def test_context_is_not_seen_by_policies(cerbos, client):
    """Only cerbos.* context keys mean anything; a PEP's issuer/scopes/acr/client_id context is
    accepted and ignored (policies see subject and resource properties only)."""
    url = cerbos.evaluation_url
    ctx = {"issuer": "as1", "scopes": ["read"], "acr": "urn:x:high", "client_id": "demo-client",
           "department": "sales", "roles": ["admin"], "owner": "bob"}
    assert not decide(client, url, request("bob", "doc-1", "read", resource_properties=doc("alice"), context=ctx))
    assert decide(client, url, request("alice", "doc-1", "read", resource_properties=doc("alice"), context=ctx))


def test_wire_details(cerbos, client):
    url = cerbos.evaluation_url
    body = json.dumps(request("alice", "doc-1", "read", resource_properties=doc("alice")))
    # Content-Type is not checked; the answer is always application/json.
    for ct in (None, "text/plain", "application/json; charset=utf-8"):
        headers = {"content-type": ct} if ct else {}
        r = client.post(url, content=body, headers=headers)
        assert (r.status_code, r.json()) == (200, {"decision": True}), ct
    # X-Request-ID is not echoed (the audit log records it: test_audit_log_witnesses_decisions).
    r = client.post(url, content=body, headers={"content-type": "application/json", "x-request-id": "rid-1"})
    assert "x-request-id" not in r.headers
    assert r.headers["grpc-metadata-cerbos-version"] == "0.55.0"
    # Malformed requests: 400 with a gRPC status body, never a decision.
    bad = {
        "missing subject.id": {"subject": {"type": "user"}, "resource": {"type": "document", "id": "d"},
                               "action": {"name": "read"}},
        "empty resource.id": {"subject": {"type": "user", "id": "a"}, "resource": {"type": "document", "id": ""},
                              "action": {"name": "read"}},
        "unknown field": {**request("a", "d", "read"), "extra": 1},
        "nothing": {},
    }
    for name, b in bad.items():
        r = client.post(url, json=b)
        assert r.status_code == 400, name
        assert r.json()["code"] == 3 and "decision" not in r.json(), name
    r = client.post(url, content=b'{"subject":', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == 3
    r = client.get(url)
    assert r.status_code == 501  # grpc-gateway's answer to a wrong method


def test_discovery_document(cerbos, client):
    r = client.get(f"{cerbos.url}/.well-known/authzen-configuration")
    assert r.status_code == 200
    assert r.json() == {
        "policy_decision_point": cerbos.url,
        "access_evaluation_endpoint": cerbos.evaluation_url,
        "access_evaluations_endpoint": f"{cerbos.url}/access/v1/evaluations",
    }


def test_audit_log_witnesses_decisions(own_cerbos, client):
    before = len(own_cerbos.decisions())
    for i in range(5):
        client.post(own_cerbos.evaluation_url, headers={"x-request-id": f"rid-{i}"},
                    json=request("alice", f"doc-{i}", "read", resource_properties=doc("alice")))
    client.post(own_cerbos.evaluation_url, json={})  # 400: no decision made, none logged
    deadline = time.monotonic() + 5
    while len(own_cerbos.decisions()) < before + 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    entries = own_cerbos.decisions()[before:]
    assert len(entries) == 5
    assert [e["metadata"]["x-request-id"]["values"] for e in entries] == [[f"rid-{i}"] for i in range(5)]
    first = entries[0]["checkResources"]
    assert first["inputs"][0]["principal"] == {"id": "alice", "roles": ["user"]}
    assert first["inputs"][0]["resource"] == {"kind": "document", "id": "doc-0", "attr": {"owner": "alice"}}
    assert first["outputs"][0]["actions"]["read"]["effect"] == "EFFECT_ALLOW"


POLICY_PROBE = request("bob", "doc-1", "read", resource_properties=doc("alice"))


def test_policy_edit_picked_up_without_restart(own_cerbos, client):
    """Editing a policy file in the watched directory changes decisions, with no restart."""
    assert not decide(client, own_cerbos.evaluation_url, POLICY_PROBE)
    original = (own_cerbos.policy_dir / "document.yaml").read_text()
    everyone_reads = original + (
        "    # added by test_pdp_rig: any user may read\n"
        "    - name: everyone-reads\n"
        "      actions: [\"read\"]\n"
        "      effect: EFFECT_ALLOW\n"
        "      roles: [\"user\"]\n"
    )
    pid = own_cerbos.pid
    # Cerbos' own directory watch: 2 to 4 s.
    took = servers.set_policy(own_cerbos, "document.yaml", everyone_reads, POLICY_PROBE, True)
    print(f"\ncerbos' directory watch picked up the policy edit in {took:.2f} s")
    assert 1.9 < took < 8
    assert not decide(client, own_cerbos.evaluation_url,
                      request("bob", "doc-1", "write", resource_properties=doc("alice")))
    # The admin API's reload: at once.
    took_back = servers.set_policy(own_cerbos, "document.yaml", original, POLICY_PROBE, False, reload=True)
    print(f"the revert, with an admin API reload, in {took_back:.2f} s")
    assert took_back < 3
    assert own_cerbos.pid == pid and own_cerbos.popen.poll() is None
    # The repository's copy is untouched.
    assert (servers.PDP_POLICIES / "document.yaml").read_text() == original


def test_broken_policy_edit_keeps_the_last_valid_rules(own_cerbos, client):
    url = own_cerbos.evaluation_url
    owner = request("alice", "doc-1", "read", resource_properties=doc("alice"))
    broken = (own_cerbos.policy_dir / "document.yaml").read_text().replace(
        'derivedRoles: ["owner"]', 'derivedRoles: ["no_such_role"]')
    (own_cerbos.policy_dir / "document.yaml").write_text(broken)
    servers.reload_policies(own_cerbos)  # answers 200 all the same
    assert decide(client, url, owner)
    assert not decide(client, url, POLICY_PROBE)
    assert "maintaining last valid state" in own_cerbos.log_text()


def test_stop_and_start_on_the_same_port(own_cerbos, client):
    url = own_cerbos.evaluation_url
    owner = request("alice", "doc-1", "read", resource_properties=doc("alice"))
    assert decide(client, url, owner)
    t0 = time.monotonic()
    own_cerbos.stop()
    stopped = time.monotonic() - t0
    with pytest.raises(httpx.ConnectError):
        client.post(url, json=owner)
    t0 = time.monotonic()
    own_cerbos.start()
    started = time.monotonic() - t0
    assert decide(client, url, owner)
    print(f"\ncerbos stopped in {stopped:.2f} s, listening again on the same port {started:.2f} s later")
    assert stopped < 5 and started < 10


@pytest.fixture
def slow(cerbos, tmp_path):
    proc = servers.start_pdp_delay(procs.free_port(), cerbos.port, tmp_path)
    yield proc
    proc.stop()


def test_forwarder_is_transparent_and_counts(cerbos, slow, client):
    via = f"http://127.0.0.1:{slow.port}{EVAL}"
    # Byte for byte: odd whitespace and key order arrive as sent, the answer is Cerbos' own.
    raw = (b'{ "action":{"name":"read"},\n "subject" : {"id":"alice","type":"user"},'
           b'"resource":{"type":"document","id":"d\xc3\xa9j\xc3\xa0","properties":{"owner":"alice"}}}')
    direct = client.post(cerbos.evaluation_url, content=raw, headers={"content-type": "application/json"})
    forwarded = client.post(via, content=raw, headers={"content-type": "application/json", "x-request-id": "r-1"})
    assert forwarded.status_code == direct.status_code == 200
    assert forwarded.content == direct.content == b'{"decision":true}'
    assert {k: v for k, v in forwarded.headers.items() if k != "date"} == \
        {k: v for k, v in direct.headers.items() if k != "date"}
    seen = servers.pdp_control(slow.port, "GET", "/__rig/requests")[-1]
    assert seen["body"].encode() == raw
    assert ["x-request-id", "r-1"] in [[k.lower(), v] for k, v in seen["headers"]]
    # Chunked request bodies go through with their framing.
    chunks = (raw[:20], raw[20:])
    r = client.post(via, content=iter(chunks), headers={"content-type": "application/json"})
    assert r.json() == {"decision": True}
    # Errors and other paths are forwarded too; only evaluations are counted as such.
    assert client.post(via, json={}).status_code == 400
    assert client.get(f"http://127.0.0.1:{slow.port}/.well-known/authzen-configuration").status_code == 200
    stats = servers.pdp_control(slow.port, "GET", "/__rig/stats")
    assert stats["evaluations"] == 3 and stats["forwarded"] == {EVAL: 3, "/.well-known/authzen-configuration": 1}
    servers.pdp_control(slow.port, "POST", "/__rig/reset-stats")
    assert servers.pdp_control(slow.port, "GET", "/__rig/stats")["evaluations"] == 0


def test_forwarder_delays_in_parallel(cerbos, slow):
    via = f"http://127.0.0.1:{slow.port}{EVAL}"
    owner = request("alice", "doc-1", "read", resource_properties=doc("alice"))
    assert servers.pdp_control(slow.port, "POST", "/__rig/delay?ms=600") == {"delay_ms": 600}
    t0 = time.monotonic()
    results: list = []

    def one():
        with httpx.Client(timeout=5.0) as c:
            results.append(c.post(via, json=owner).json())

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    assert results == [{"decision": True}] * 10
    assert 0.6 <= elapsed < 4.0, elapsed  # held 600 ms each, all at once (one after another: 6 s)
    stats = servers.pdp_control(slow.port, "GET", "/__rig/stats")
    assert stats["evaluations"] == 10 and stats["max_in_flight"] == 10 and stats["in_flight"] == 0

    # A client that gives up first (a PEP timing out) gets nothing; the request still reaches
    # Cerbos once the delay is over, as with a slow PDP.
    with httpx.Client(timeout=0.15) as c, pytest.raises(httpx.ReadTimeout):
        c.post(via, json=owner)
    deadline = time.monotonic() + 3
    while servers.pdp_control(slow.port, "GET", "/__rig/stats")["evaluations"] < 11 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert servers.pdp_control(slow.port, "GET", "/__rig/stats")["evaluations"] == 11

    servers.pdp_control(slow.port, "POST", "/__rig/delay?ms=0")
    t0 = time.monotonic()
    with httpx.Client(timeout=5.0) as c:
        assert c.post(via, json=owner).json() == {"decision": True}
    assert time.monotonic() - t0 < 0.6


def test_forwarder_auth_check_and_keepalive(cerbos, slow):
    via = f"http://127.0.0.1:{slow.port}{EVAL}"
    owner = request("alice", "doc-1", "read", resource_properties=doc("alice"))
    servers.pdp_control(slow.port, "POST", "/__rig/require-auth", b"Bearer pdp-secret")
    with httpx.Client(timeout=5.0) as c:
        assert c.post(via, json=owner).status_code == 401
        assert c.post(via, json=owner, headers={"authorization": "Bearer other"}).status_code == 401
        # Several requests on one kept-alive connection.
        for _ in range(3):
            r = c.post(via, json=owner, headers={"authorization": "Bearer pdp-secret"})
            assert r.json() == {"decision": True}
    stats = servers.pdp_control(slow.port, "GET", "/__rig/stats")
    assert stats["refused_auth"] == 2 and stats["evaluations"] == 3
    servers.pdp_control(slow.port, "POST", "/__rig/require-auth", b"")
    with httpx.Client(timeout=5.0) as c:
        assert c.post(via, json=owner).json() == {"decision": True}


def test_forwarder_with_the_pdp_down(own_cerbos, tmp_path):
    """Cerbos stopped behind the forwarder: the client's connection closes without an answer;
    Cerbos back on its port: answers again, through the same forwarder."""
    slow = servers.start_pdp_delay(procs.free_port(), own_cerbos.port, tmp_path)
    try:
        owner = json.dumps(request("alice", "doc-1", "read", resource_properties=doc("alice"))).encode()
        raw = (f"POST {EVAL} HTTP/1.1\r\nHost: pdp\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(owner)}\r\n\r\n").encode() + owner
        own_cerbos.stop()
        with socket.create_connection(("127.0.0.1", slow.port), timeout=5) as s:
            s.sendall(raw)
            assert s.recv(4096) == b""  # closed, nothing answered
        own_cerbos.start()
        with httpx.Client(timeout=5.0) as c:
            assert c.post(f"http://127.0.0.1:{slow.port}{EVAL}", content=owner).json() == {"decision": True}
        assert servers.pdp_control(slow.port, "GET", "/__rig/stats")["evaluations"] == 1
    finally:
        slow.stop()


def test_forwarder_survives_a_pdp_restart_on_a_kept_alive_connection(own_cerbos, tmp_path):
    """A PEP keeps its connection to the forwarder while Cerbos restarts: the next request on it
    is answered (the forwarder replaces its dead connection to Cerbos once)."""
    slow = servers.start_pdp_delay(procs.free_port(), own_cerbos.port, tmp_path)
    try:
        owner = request("alice", "doc-1", "read", resource_properties=doc("alice"))
        with httpx.Client(timeout=5.0) as c:
            via = f"http://127.0.0.1:{slow.port}{EVAL}"
            assert c.post(via, json=owner).json() == {"decision": True}
            own_cerbos.stop()
            own_cerbos.start()
            for _ in range(3):
                assert c.post(via, json=owner).json() == {"decision": True}
        assert servers.pdp_control(slow.port, "GET", "/__rig/stats")["evaluations"] == 4
    finally:
        slow.stop()
