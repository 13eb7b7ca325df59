#!/usr/bin/env python3
"""An AuthZEN Authorization API 1.0 client that tests purposegate-server from outside.

Written from the specification (OpenID AuthZEN Authorization API 1.0), its
certification scenario (test ids c-2-* to c-6-*) and the obligations
profile draft, against the AuthZEN mapping of purposegate-server: an
evaluation's `action.name` is the purpose, `resource.type` the data
category, `resource.id` the resource attribute `id`.

Usage
-----

    python3 tests/authzen/conformance.py --base-url http://127.0.0.1:PORT [--suite examples]
    python3 tests/authzen/conformance.py --base-url http://127.0.0.1:PORT --suite default \\
        [--default-cases tests/authzen/default-policy-cases.json]

Two suites, each for a server started by the caller:

``--suite examples`` (the default)
    For a server on ``tests/authzen/examples-policy.yaml``. Every example
    request of the specification's sections on evaluation, evaluations,
    action search (with its pagination cycle, adapted to action search),
    metadata and errors, and the certification scenario's cases, with the
    decisions those documents fix and, where they leave a decision to the
    implementer, the decisions of the fixture policy. The cases the mapping
    cannot express, and the APIs the server does not offer, are listed as
    ``skip`` with the reason.

``--suite default``
    For a server on the embedded default policy (``online-services-dpa``).
    Reads the cases of ``--default-cases`` (default:
    ``default-policy-cases.json`` beside this file): ``single`` requests to
    ``/access/v1/evaluation`` and ``batches`` to ``/access/v1/evaluations``,
    each with the expected ``decision``, ``context.decision`` and
    ``context.rule_ids`` (in policy order), then checks that action
    search agrees with every single case. Giving ``--default-cases`` without
    ``--suite`` selects this suite.

Other options: ``--pdp-url`` is the ``policy_decision_point`` the metadata
must name (default: the base URL; give it when the server runs with
``--authzen-base-url``), ``--max-body`` and ``--max-batch`` the server's
``--authzen-max-body`` (default 1 MiB) and ``--max-batch`` (default 1000).

Output: one line per case, ``ok   <case id>``, ``FAIL <case id>: <what
differed>`` or ``skip <case id>: <why>``, then ``N passed, M failed, K
skipped``. Exit status 0 when nothing failed, 1 when a case failed (or the
cases file cannot be read, or the command line is wrong), 2 when the server
cannot be reached.

What every case checks: the HTTP status and Content-Type (200
application/json; errors 400 text/plain with a message), the shape of the
answer (a Decision's ``decision`` and ``context.decision``, ``reason``,
``rule_ids``, ``policy_revision`` (16 hex digits, the same in every answer),
``ttl_seconds`` (60 in examples-policy.yaml), ``obligations`` and ``monitor``
only when there are any; a search's ``page``, ``results`` and ``context``),
and the values the documents or the fixture policy fix. ``rule_ids`` are
compared in policy order. A 400 message must name the field that was wrong by
its dotted path (``subject.type``, ``resource.properties.group_size``), a
duplicate key by its name, a wrong Content-Type by ``Content-Type`` or
``application/json``.

Every request goes to the base URL only (proxy settings of the environment
are not used), each with a timeout of 10 seconds.

Readings coded here where the documents leave room
-------------------------------------------------

- The specification's two all-``can_read`` three-document examples
  (boxcarring.md, subject-search.md, resource-search.md) show no response;
  the response it shows (true, false, false) belongs to the request whose
  third evaluation asks ``can_edit``. Coded: alice@example.com is a viewer,
  so ``can_read`` is true, false, true and ``can_edit`` on
  resource-search.md false; subject-search.md is the "not found" document.
- Its per-item error ``{"status": 404, "message": "Resource not found"}`` is
  not reproduced: purposegate answers an unknown resource with a deny (200,
  ``decision: false``). Per-item errors are ``{"status": 400, "message"}``,
  only for an item that cannot be evaluated (c-3-4-1).
- The short-circuit responses' ``context`` (``code``, ``reason`` in the
  specification's example) is purposegate's own; only the decisions and the
  length of the array are compared.
- Pagination: the second request carries only ``page.token`` (the
  specification's example and c-4-5-2 leave ``limit`` out), and continues
  with the limit the token was made with; the token with the same limit
  continues too; a token with a different limit, with a changed request, or
  garbled, is HTTP 400. ``page.limit: 0`` is only checked to be accepted.
- Action search answers in the policy's purpose tree order; ``page.total``
  is the number of permitted purposes; without ``page.limit`` every result
  comes at once with ``next_token: ""``.
- c-4-5 (a subject search in the scenario) is run on action search; c-4-6-2
  (unknown entity type) is run as an action search on an unknown resource
  type. ``subject.type`` is accepted but not decided on, so an unknown
  subject type does not empty the results.
- ``Content-Type: application/json; charset=utf-8`` and ``Application/JSON``
  are application/json.
- A body of exactly ``--max-body`` bytes is accepted, one byte more is 413;
  exactly ``--max-batch`` evaluations are answered, one more is 400.
- A JSON body that is not an object (``[]``) is HTTP 400.
- Within a batch, an item whose entity is missing (with no default) or
  invalid (``subject: "alice"``, ``action: {}``) is a per-item error; the
  other items are still answered.
- Decisions the scenario leaves to the implementer (c-3-2-1 and c-3-2-6:
  alice read record-2) are checked against the fixture policy: true.
- ``/access/v1/evaluation`` ignores an ``evaluations`` key (an unknown field
  there).
- Metadata: ``policy_decision_point`` is compared with ``--pdp-url``, the
  endpoints with it plus the default paths; the HTTPS requirement of c-6-5
  is skipped for an ``http://`` base URL. HEAD answers 200 with the
  Content-Type of GET and no body.
- Obligations: a request's ``context.supported_obligations`` lists
  purposegate obligation ids (``watermark``), although the profile asks for
  the types the metadata advertises (``custom``).
"""

from __future__ import annotations

import argparse
import json
import re
import select
import socket
import ssl
import sys
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import requests

TIMEOUT_SECONDS = 10.0
HERE = Path(__file__).resolve().parent
DEFAULT_CASES = HERE / "default-policy-cases.json"

EVALUATION = "/access/v1/evaluation"
EVALUATIONS = "/access/v1/evaluations"
SEARCH_ACTION = "/access/v1/search/action"
SEARCH_SUBJECT = "/access/v1/search/subject"
SEARCH_RESOURCE = "/access/v1/search/resource"
WELL_KNOWN = "/.well-known/authzen-configuration"
POST_ENDPOINTS = (EVALUATION, EVALUATIONS, SEARCH_ACTION)

DECISIONS = ("PERMIT", "DENY", "NOT_APPLICABLE", "INDETERMINATE")
REVISION = re.compile(r"[0-9a-f]{16}")
REQUEST_ID = "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"

# What examples-policy.yaml says beyond decisions.
EXAMPLES_TTL_SECONDS = 60
EXAMPLES_PURPOSES = ("can_read", "can_edit", "can_write", "read", "write", "delete")
WATERMARK = {
    "id": "watermark",
    "type": "custom",
    "properties": {"watermark_text": "CONFIDENTIAL - licensed copy"},
}


class Fail(Exception):
    """The server's answer differs from what the documents say."""


class Skip(Exception):
    """The case cannot be run against this server."""


def oneline(text: Any, limit: int = 400) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def show(value: Any) -> str:
    return oneline(json.dumps(value, sort_keys=True, default=str), 200)


# --------------------------------------------------------------------------
# HTTP


class Reply:
    """One HTTP response: status, headers (names lower-cased), body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def media_type(self) -> str:
        value = self.header("content-type") or ""
        return value.split(";", 1)[0].strip().lower()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def summary(self) -> str:
        kind = self.header("content-type") or "no Content-Type"
        return f"HTTP {self.status} ({kind}): {oneline(self.text, 200)!r}"


def encode(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


class Client:
    """Requests to one base URL, each with a 10 s timeout."""

    def __init__(self, base_url: str):
        self.base = base_url.rstrip("/")
        parts = urllib.parse.urlsplit(self.base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--base-url must be an http:// or https:// URL, not {base_url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"--base-url must have no query or fragment: {base_url!r}")
        self.parts = parts
        self.session = requests.Session()
        # Only the base URL: no proxy, no .netrc from the environment.
        self.session.trust_env = False

    def url(self, path: str) -> str:
        return self.base + path

    def metadata_url(self) -> str:
        """The well-known URL: the well-known string between host and path."""
        p = self.parts
        return f"{p.scheme}://{p.netloc}{WELL_KNOWN}{p.path.rstrip('/')}"

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        r = self.session.request(
            method,
            url,
            data=body,
            headers=headers or {},
            timeout=TIMEOUT_SECONDS,
            allow_redirects=False,
        )
        return Reply(r.status_code, dict(r.headers), r.content)

    def post(
        self,
        path: str,
        doc: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Reply:
        body = raw if raw is not None else encode(doc)
        h: dict[str, str] = {}
        if content_type is not None:
            h["Content-Type"] = content_type
        h.update(headers or {})
        return self.request("POST", self.url(path), body, h)

    def send_raw(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        """One request on a socket of its own, reading while it sends.

        For a body the server refuses before reading it all (413): a client
        that only reads once it has sent everything may find the connection
        reset and never see the answer.
        """
        p = self.parts
        https = p.scheme == "https"
        host = p.hostname or ""
        port = p.port or (443 if https else 80)
        target = p.path.rstrip("/") + path
        lines = [
            f"{method} {target} HTTP/1.1",
            f"Host: {p.netloc}",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ] + [f"{k}: {v}" for k, v in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        received = bytearray()
        sock: socket.socket = socket.create_connection((host, port), timeout=TIMEOUT_SECONDS)
        try:
            if https:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            sock.sendall(head)
            try:
                for start in range(0, len(body), 64 * 1024):
                    # Over TLS the socket may be readable for other records
                    # (session tickets); only plain HTTP stops on an early answer.
                    if not https and select.select([sock], [], [], 0)[0]:
                        break
                    sock.sendall(body[start : start + 64 * 1024])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server stopped reading; its answer may be there
            try:
                while not _complete(received):
                    chunk = sock.recv(64 * 1024)
                    if not chunk:
                        break
                    received += chunk
            except (ConnectionResetError, TimeoutError, socket.timeout):
                pass
        finally:
            sock.close()
        if not received:
            raise Fail(f"{method} {path}: the server closed the connection without an answer")
        return _parse_raw(bytes(received))


def _split_head(data: bytes) -> tuple[int, dict[str, str], bytes] | None:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise Fail(f"not an HTTP response: {oneline(lines[0])!r}") from None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return status, headers, data[end + 4 :]


def _dechunk(data: bytes) -> bytes | None:
    """The body of a chunked transfer, or None while incomplete."""
    out = bytearray()
    while True:
        eol = data.find(b"\r\n")
        if eol < 0:
            return None
        try:
            size = int(data[:eol].split(b";", 1)[0], 16)
        except ValueError:
            raise Fail("a garbled chunked body") from None
        if size == 0:
            return bytes(out)
        if len(data) < eol + 2 + size + 2:
            return None
        out += data[eol + 2 : eol + 2 + size]
        data = data[eol + 2 + size + 2 :]


def _complete(data: bytearray) -> bool:
    split = _split_head(bytes(data))
    if split is None:
        return False
    _, headers, rest = split
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _dechunk(rest) is not None
    if "content-length" in headers:
        try:
            return len(rest) >= int(headers["content-length"])
        except ValueError:
            return False
    return False  # read to the end of the connection


def _parse_raw(data: bytes) -> Reply:
    split = _split_head(data)
    if split is None:
        raise Fail(f"an incomplete HTTP response: {oneline(data[:200])!r}")
    status, headers, rest = split
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(rest) or b""
    elif "content-length" in headers:
        body = rest[: int(headers["content-length"])]
    else:
        body = rest
    return Reply(status, headers, body)


# --------------------------------------------------------------------------
# What is expected


@dataclass(frozen=True)
class Want:
    """An evaluated decision.

    ``rule_ids`` None: not compared. ``obligations`` None: not compared;
    ``()``: must be absent. ``monitor`` None: not compared; ``{}``: must be
    absent; otherwise ``{"decision", "rule_ids"}``.
    """

    decision: bool
    context_decision: str | None = None
    rule_ids: tuple[str, ...] | None = None
    obligations: tuple[dict, ...] | None = None
    monitor: dict | None = None


@dataclass(frozen=True)
class ItemError:
    """An evaluation of a batch that could not be made."""

    mentions: tuple[str, ...] = ()


def permit(*rules: str, **kw: Any) -> Want:
    return Want(True, "PERMIT", rules, **kw)


def deny(*rules: str, **kw: Any) -> Want:
    return Want(False, "DENY", rules, **kw)


def not_applicable(*rules: str, **kw: Any) -> Want:
    return Want(False, "NOT_APPLICABLE", rules, **kw)


@dataclass(frozen=True)
class Found:
    """A result of an action search: its name and, when given, its rules and
    obligations (None: not compared; ``()``: absent)."""

    name: str
    rule_ids: tuple[str, ...] | None = None
    obligations: tuple[dict, ...] | None = None


# --------------------------------------------------------------------------
# Checks


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise Fail(f"the response has the key {key!r} twice in one object")
        out[key] = value
    return out


def parse_json(reply: Reply, where: str) -> Any:
    try:
        return json.loads(reply.body.decode("utf-8"), object_pairs_hook=_unique_pairs)
    except (UnicodeDecodeError, ValueError) as e:
        raise Fail(f"{where}: the body is not JSON ({e}): {oneline(reply.text, 200)!r}") from None


def expect_json(reply: Reply, where: str, status: int = 200) -> dict:
    """HTTP `status`, application/json, a JSON object."""
    if reply.status != status:
        raise Fail(f"{where}: want HTTP {status}, got {reply.summary()}")
    if reply.media_type != "application/json":
        raise Fail(
            f"{where}: want Content-Type application/json, got {reply.header('content-type')!r}"
        )
    doc = parse_json(reply, where)
    if not isinstance(doc, dict):
        raise Fail(f"{where}: the body must be a JSON object, got {show(doc)}")
    return doc


def _mentions(message: str, mentions: tuple[str | tuple[str, ...], ...], where: str) -> None:
    for m in mentions:
        options = (m,) if isinstance(m, str) else tuple(m)
        if not any(o.lower() in message.lower() for o in options):
            names = " or ".join(repr(o) for o in options)
            raise Fail(f"{where}: the message does not name {names}: {oneline(message, 200)!r}")


def expect_error(
    reply: Reply,
    where: str,
    status: int = 400,
    mentions: tuple[str | tuple[str, ...], ...] = (),
    media_type: str | None = "text/plain",
) -> str:
    """HTTP `status` with a non-empty message naming each of `mentions`
    (a tuple in `mentions` names alternatives)."""
    if reply.status != status:
        raise Fail(f"{where}: want HTTP {status}, got {reply.summary()}")
    if media_type is not None and reply.media_type != media_type:
        raise Fail(
            f"{where}: want Content-Type {media_type}, got {reply.header('content-type')!r}"
        )
    message = reply.text.strip()
    if media_type is not None and not message:
        raise Fail(f"{where}: the HTTP {status} answer carries no message")
    _mentions(message, mentions, where)
    return message


def expect_echo(reply: Reply, request_id: str, where: str) -> None:
    got = reply.header("x-request-id")
    if got != request_id:
        raise Fail(f"{where}: X-Request-ID {request_id!r} not echoed (got {got!r}, HTTP {reply.status})")


def _string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def check_obligations(value: Any, where: str) -> None:
    if not isinstance(value, list) or not value:
        raise Fail(f"{where}: `obligations`, when present, must be a non-empty array: {show(value)}")
    for i, o in enumerate(value):
        at = f"{where}.obligations[{i}]"
        if not isinstance(o, dict):
            raise Fail(f"{at} must be an object: {show(o)}")
        if not isinstance(o.get("id"), str) or not o["id"]:
            raise Fail(f"{at}.id must be a non-empty string: {show(o)}")
        if o.get("type") != "custom":
            raise Fail(f"{at}.type must be \"custom\": {show(o)}")
        props = o.get("properties")
        if not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values()):
            raise Fail(f"{at}.properties must be an object of strings: {show(o)}")


class Run:
    """The server under test and what was seen of it so far."""

    def __init__(
        self,
        client: Client,
        pdp_url: str,
        ttl: int | None,
        max_body: int,
        max_batch: int,
    ):
        self.client = client
        self.pdp_url = pdp_url.rstrip("/")
        self.ttl = ttl
        self.max_body = max_body
        self.max_batch = max_batch
        self.revision: str | None = None

    # -- shapes ------------------------------------------------------------

    def check_revision_ttl(self, ctx: dict, where: str) -> None:
        rev = ctx.get("policy_revision")
        if not isinstance(rev, str) or not REVISION.fullmatch(rev):
            raise Fail(f"{where}: `policy_revision` must be 16 hex digits, got {show(rev)}")
        if self.revision is None:
            self.revision = rev
        elif rev != self.revision:
            raise Fail(f"{where}: `policy_revision` {rev} differs from {self.revision} seen before")
        ttl = ctx.get("ttl_seconds")
        if type(ttl) is not int or ttl < 0:
            raise Fail(f"{where}: `ttl_seconds` must be a non-negative integer, got {show(ttl)}")
        if self.ttl is None:
            self.ttl = ttl
        elif ttl != self.ttl:
            raise Fail(f"{where}: `ttl_seconds` is {ttl}, want {self.ttl}")

    def check_decision(self, d: Any, where: str) -> dict:
        """The shape of an evaluated Decision."""
        if not isinstance(d, dict):
            raise Fail(f"{where}: a decision must be an object, got {show(d)}")
        if type(d.get("decision")) is not bool:
            raise Fail(f"{where}: `decision` must be a boolean, got {show(d.get('decision'))}")
        ctx = d.get("context")
        if not isinstance(ctx, dict):
            raise Fail(f"{where}: `context` must be an object, got {show(ctx)}")
        if "error" in ctx:
            raise Fail(f"{where}: the evaluation failed: {show(ctx['error'])}")
        cd = ctx.get("decision")
        if cd not in DECISIONS:
            raise Fail(f"{where}: `context.decision` must be one of {', '.join(DECISIONS)}, got {show(cd)}")
        if d["decision"] != (cd == "PERMIT"):
            raise Fail(f"{where}: `decision` is {json.dumps(d['decision'])} but `context.decision` is {cd}")
        if not isinstance(ctx.get("reason"), str) or not ctx["reason"]:
            raise Fail(f"{where}: `context.reason` must be a non-empty string, got {show(ctx.get('reason'))}")
        if not _string_list(ctx.get("rule_ids")):
            raise Fail(f"{where}: `context.rule_ids` must be an array of strings, got {show(ctx.get('rule_ids'))}")
        self.check_revision_ttl(ctx, where)
        if "obligations" in ctx:
            check_obligations(ctx["obligations"], f"{where}: context")
        if "monitor" in ctx:
            m = ctx["monitor"]
            if not isinstance(m, dict) or m.get("decision") not in DECISIONS or not _string_list(m.get("rule_ids")):
                raise Fail(f"{where}: `context.monitor` must be {{decision, rule_ids}}, got {show(m)}")
            if m["decision"] == cd:
                raise Fail(f"{where}: `context.monitor` is there but decides as the policy does ({cd})")
        return d

    @staticmethod
    def match(d: dict, want: Want, where: str) -> None:
        ctx = d["context"]
        diffs = []
        if d["decision"] != want.decision:
            diffs.append(f"decision {str(d['decision']).lower()}, want {str(want.decision).lower()}")
        if want.context_decision is not None and ctx["decision"] != want.context_decision:
            diffs.append(f"context.decision {ctx['decision']}, want {want.context_decision}")
        if want.rule_ids is not None and list(ctx["rule_ids"]) != list(want.rule_ids):
            diffs.append(f"rule_ids {ctx['rule_ids']}, want {list(want.rule_ids)}")
        if want.obligations is not None:
            got = ctx.get("obligations", [])
            if _sorted_obligations(got) != _sorted_obligations(list(want.obligations)):
                diffs.append(f"obligations {show(got)}, want {show(list(want.obligations))}")
        if want.monitor is not None:
            got_m = ctx.get("monitor")
            if not want.monitor:
                if got_m is not None:
                    diffs.append(f"monitor {show(got_m)}, want none")
            elif got_m is None or got_m.get("decision") != want.monitor["decision"] or sorted(
                got_m.get("rule_ids", [])
            ) != sorted(want.monitor["rule_ids"]):
                diffs.append(f"monitor {show(got_m)}, want {show(want.monitor)}")
        if diffs:
            raise Fail(f"{where}: " + "; ".join(diffs) + f" (reason: {ctx.get('reason')!r})")

    @staticmethod
    def check_item_error(d: Any, where: str, mentions: tuple[str, ...]) -> None:
        if not isinstance(d, dict) or d.get("decision") is not False:
            raise Fail(f"{where}: an evaluation that cannot be made must be `decision: false`, got {show(d)}")
        err = d.get("context", {}).get("error") if isinstance(d.get("context"), dict) else None
        if not isinstance(err, dict):
            raise Fail(f"{where}: want `context.error` {{status, message}}, got {show(d)}")
        if type(err.get("status")) is not int or err["status"] != 400:
            raise Fail(f"{where}: `context.error.status` must be 400, got {show(err.get('status'))}")
        if not isinstance(err.get("message"), str) or not err["message"]:
            raise Fail(f"{where}: `context.error.message` must be a non-empty string, got {show(err.get('message'))}")
        _mentions(err["message"], mentions, where)

    def check_search(self, obj: dict, where: str) -> list[dict]:
        """The shape of an action search response; its results."""
        page = obj.get("page")
        if not isinstance(page, dict):
            raise Fail(f"{where}: `page` must be an object, got {show(page)}")
        if not isinstance(page.get("next_token"), str):
            raise Fail(f"{where}: `page.next_token` must be a string, got {show(page.get('next_token'))}")
        for key in ("count", "total"):
            if type(page.get(key)) is not int or page[key] < 0:
                raise Fail(f"{where}: `page.{key}` must be a non-negative integer, got {show(page.get(key))}")
        results = obj.get("results")
        if not isinstance(results, list):
            raise Fail(f"{where}: `results` must be an array, got {show(results)}")
        if page["count"] != len(results):
            raise Fail(f"{where}: `page.count` is {page['count']} but {len(results)} results came")
        if page["total"] < page["count"]:
            raise Fail(f"{where}: `page.total` {page['total']} is less than `page.count` {page['count']}")
        names = []
        for i, r in enumerate(results):
            at = f"{where}: results[{i}]"
            if not isinstance(r, dict) or not isinstance(r.get("name"), str) or not r["name"]:
                raise Fail(f"{at} must be an Action with a non-empty `name`, got {show(r)}")
            props = r.get("properties")
            if not isinstance(props, dict) or not _string_list(props.get("rule_ids")):
                raise Fail(f"{at}.properties.rule_ids must be an array of strings, got {show(r)}")
            if "obligations" in r:
                check_obligations(r["obligations"], at)
            names.append(r["name"])
        if len(set(names)) != len(names):
            raise Fail(f"{where}: an action comes twice: {names}")
        ctx = obj.get("context")
        if not isinstance(ctx, dict):
            raise Fail(f"{where}: `context` must be an object, got {show(ctx)}")
        self.check_revision_ttl(ctx, f"{where}: context")
        return results

    # -- requests ----------------------------------------------------------

    def evaluate(
        self,
        doc: Any,
        want: Want | None,
        where: str = "evaluation",
        headers: dict[str, str] | None = None,
        path: str = EVALUATION,
    ) -> tuple[Reply, dict]:
        """One evaluation (or an evaluations request answered as one)."""
        reply = self.client.post(path, doc, headers=headers)
        d = expect_json(reply, where)
        self.check_decision(d, where)
        if "evaluations" in d:
            raise Fail(f"{where}: a single evaluation is answered with `evaluations`: {show(d)}")
        if want is not None:
            self.match(d, want, where)
        return reply, d

    def evaluations(
        self,
        doc: Any,
        wants: Sequence[Want | ItemError | None],
        where: str = "evaluations",
        headers: dict[str, str] | None = None,
    ) -> tuple[Reply, list[dict]]:
        """A batch: its answers, in order, each as `wants` says (None: shape only)."""
        reply = self.client.post(EVALUATIONS, doc, headers=headers)
        obj = expect_json(reply, where)
        items = obj.get("evaluations")
        if not isinstance(items, list):
            raise Fail(f"{where}: `evaluations` must be an array, got {show(obj)}")
        if "decision" in obj:
            raise Fail(f"{where}: an evaluations response has a top-level `decision`")
        if len(items) != len(wants):
            got = [i.get("decision") if isinstance(i, dict) else i for i in items]
            raise Fail(f"{where}: {len(items)} evaluations came back, want {len(wants)} (decisions {show(got)})")
        for i, (item, want) in enumerate(zip(items, wants)):
            at = f"{where}[{i}]"
            if isinstance(want, ItemError):
                self.check_item_error(item, at, want.mentions)
            else:
                self.check_decision(item, at)
                if want is not None:
                    self.match(item, want, at)
        return reply, items

    def search(
        self,
        doc: Any,
        want: list[str | Found] | None,
        where: str = "action search",
        headers: dict[str, str] | None = None,
        whole: bool = True,
    ) -> tuple[Reply, dict]:
        """An action search. `want`: the result names in order (None: not
        compared). `whole`: the request asks for every result at once, so
        `next_token` is "" and `total` is `count`."""
        reply = self.client.post(SEARCH_ACTION, doc, headers=headers)
        obj = expect_json(reply, where)
        results = self.check_search(obj, where)
        if whole and (obj["page"]["next_token"] != "" or obj["page"]["total"] != obj["page"]["count"]):
            raise Fail(f"{where}: all results were asked for at once, got page {show(obj['page'])}")
        if want is not None:
            names = [r["name"] for r in results]
            want_names = [w.name if isinstance(w, Found) else w for w in want]
            if names != want_names:
                raise Fail(f"{where}: results {names}, want {want_names}")
            for r, w in zip(results, want):
                if not isinstance(w, Found):
                    continue
                if w.rule_ids is not None and list(r["properties"]["rule_ids"]) != list(w.rule_ids):
                    raise Fail(f"{where}: {w.name}: rule_ids {r['properties']['rule_ids']}, want {list(w.rule_ids)}")
                if w.obligations is not None:
                    got = r.get("obligations", [])
                    if _sorted_obligations(got) != _sorted_obligations(list(w.obligations)):
                        raise Fail(f"{where}: {w.name}: obligations {show(got)}, want {show(list(w.obligations))}")
        return reply, obj

    def metadata(self, headers: dict[str, str] | None = None) -> tuple[Reply, dict]:
        reply = self.client.request("GET", self.client.metadata_url(), headers=headers)
        if reply.status == 404:
            raise Fail(f"GET {WELL_KNOWN}: 404, the metadata endpoint is not available")
        return reply, expect_json(reply, f"GET {WELL_KNOWN}")


def _sorted_obligations(items: list) -> list:
    return sorted((json.dumps(o, sort_keys=True) for o in items))


# --------------------------------------------------------------------------
# Requests of the documents

USER_ALICE = {"type": "user", "id": "alice"}
USER_BOB = {"type": "user", "id": "bob"}
SPEC_ALICE = {"type": "user", "id": "alice@example.com"}
RECORD_1 = {"type": "record", "id": "record-1"}
RECORD_2 = {"type": "record", "id": "record-2"}
READ = {"name": "read"}
WRITE = {"name": "write"}
CERT_CONTEXT = {"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"}


def doc_(type_: str, id_: str, **properties: Any) -> dict:
    d: dict[str, Any] = {"type": type_, "id": id_}
    if properties:
        d["properties"] = properties
    return d


def ev(subject: Any, action: Any, resource: Any, context: Any = None, **extra: Any) -> dict:
    d: dict[str, Any] = {"subject": subject, "action": action, "resource": resource}
    if context is not None:
        d["context"] = context
    d.update(extra)
    return d


# c-2-2-1: alice read record-1.
C_2_2_1 = ev(USER_ALICE, READ, RECORD_1)
# c-2-2-2: bob write record-1.
C_2_2_2 = ev(USER_BOB, WRITE, RECORD_1)
# c-3-2-2: bob on record-1, read then write.
C_3_2_2 = {
    "subject": USER_BOB,
    "resource": RECORD_1,
    "evaluations": [{"action": READ}, {"action": WRITE}],
}
# c-4-4-1: the actions of alice on record-1.
C_4_4_1 = {"subject": USER_ALICE, "resource": RECORD_1}

# The specification's Access Evaluation API request example.
SPEC_EVALUATION = {
    "subject": {"type": "user", "id": "alice@example.com"},
    "resource": {"type": "account", "id": "123"},
    "action": {"name": "can_read", "properties": {"method": "GET"}},
    "context": {"time": "1985-10-26T01:22-07:00"},
}

SPEC_TIME = {"time": "2024-05-31T15:22-07:00"}
SPEC_DOCUMENTS = ("boxcarring.md", "subject-search.md", "resource-search.md")

# The evaluations example with no default values.
SPEC_EVALUATIONS_NO_DEFAULTS = {
    "evaluations": [
        {
            "subject": {"type": "user", "id": "alice@example.com"},
            "action": {"name": "can_read"},
            "resource": {"type": "document", "id": name},
            "context": {"time": "2024-05-31T15:22-07:00"},
        }
        for name in SPEC_DOCUMENTS
    ]
}

# Default values: one subject and context.
SPEC_EVALUATIONS_SUBJECT_CONTEXT = {
    "subject": {"type": "user", "id": "alice@example.com"},
    "context": {"time": "2024-05-31T15:22-07:00"},
    "evaluations": [
        {"action": {"name": "can_read"}, "resource": {"type": "document", "id": name}}
        for name in SPEC_DOCUMENTS
    ],
}

# Default values: subject, context and action, the action overridden by the third.
SPEC_EVALUATIONS_ACTION_OVERRIDE = {
    "subject": {"type": "user", "id": "alice@example.com"},
    "context": {"time": "2024-05-31T15:22-07:00"},
    "action": {"name": "can_read"},
    "evaluations": [
        {"resource": {"type": "document", "id": "boxcarring.md"}},
        {"resource": {"type": "document", "id": "subject-search.md"}},
        {"action": {"name": "can_edit"}, "resource": {"type": "document", "id": "resource-search.md"}},
    ],
}

# The options example, verbatim: its one evaluation has no action.
SPEC_EVALUATIONS_OPTIONS = {
    "evaluations": [{"resource": {"type": "doc", "id": "1"}, "subject": {"type": "doc", "id": "2"}}],
    "options": {"evaluations_semantic": "execute_all", "another_option": "value"},
}


def spec_semantics(semantic: str | None) -> dict:
    """The `read` on documents 1, 2, 3 example (semantic None: no options)."""
    d: dict[str, Any] = {
        "subject": {"type": "user", "id": "alice@example.com"},
        "action": {"name": "read"},
        "evaluations": [{"resource": {"type": "document", "id": i}} for i in ("1", "2", "3")],
    }
    if semantic is not None:
        d["options"] = {"evaluations_semantic": semantic}
    return d


# The Action Search API request example.
SPEC_ACTION_SEARCH = {
    "subject": {"type": "user", "id": "alice@example.com"},
    "resource": {"type": "account", "id": "123"},
    "context": {"time": "2024-10-26T01:22-07:00"},
}

# The pagination example, adapted to action search: a todo of alice@example.com.
SPEC_PAGINATION = {
    "subject": {"type": "user", "id": "alice@example.com"},
    "resource": {"type": "todo", "id": "1"},
}

# Expected decisions of examples-policy.yaml.
W_DOC_VIEW = permit("spec-document-viewer")
W_DOC_NOT_FOUND = deny("spec-document-not-found")
W_DOC_2 = deny("spec-document-2-withheld")
W_ACCOUNT = permit("spec-account-owner")
W_FIXTURE_READ = permit("fixture-read")
W_FIXTURE_WRITE = permit("fixture-write")
W_NOTHING = not_applicable()
W_C_2_2_1 = W_FIXTURE_READ
W_C_2_2_2 = W_NOTHING


# --------------------------------------------------------------------------
# The examples suite

Case = tuple[str, "Callable[[Run], None] | str"]
EXAMPLES: list[Case] = []


def case(case_id: str) -> Callable[[Callable[[Run], None]], Callable[[Run], None]]:
    def register(fn: Callable[[Run], None]) -> Callable[[Run], None]:
        EXAMPLES.append((case_id, fn))
        return fn

    return register


def skip(case_id: str, why: str) -> None:
    EXAMPLES.append((case_id, why))


def evaluates(body: dict, want: Want, path: str = EVALUATION) -> Callable[[Run], None]:
    """A case: `body` evaluated as `want` says."""

    def check(run: Run) -> None:
        run.evaluate(body, want, path=path)

    return check


def answers_in_order(body: dict, wants: Sequence[Want | ItemError | None]) -> Callable[[Run], None]:
    """A case: the batch `body` answered as `wants` say."""

    def check(run: Run) -> None:
        run.evaluations(body, wants)

    return check


def refuses(path: str, body: Any, *mentions: str) -> Callable[[Run], None]:
    """A case: `body` posted to `path` is HTTP 400 naming `mentions`."""

    def check(run: Run) -> None:
        expect_error(run.client.post(path, body), f"POST {path}", mentions=mentions)

    return check


NOT_EXPRESSIBLE = (
    "reads {what}, which purposegate's AuthZEN mapping ignores (an unknown property), "
    "so no rule of examples-policy.yaml can decide on it"
)
NO_SEARCH = "purposegate offers no {what} search (404, not in the metadata); only action search"

# -- Information model and Access Evaluation ---------------------------------


@case("spec/access-evaluation-request")
def _(run: Run) -> None:
    run.evaluate(SPEC_EVALUATION, W_ACCOUNT)


@case("spec/subject-examples")
def _(run: Run) -> None:
    for subject in (
        {"type": "user", "id": "alice@example.com"},
        {"type": "user", "id": "alice@example.com", "properties": {"department": "Sales"}},
        {
            "type": "user",
            "id": "alice@example.com",
            "properties": {"ip_address": "172.217.22.14", "device_id": "8:65:ee:17:7e:0b"},
        },
    ):
        run.evaluate(ev(subject, {"name": "can_read"}, {"type": "account", "id": "123"}), W_ACCOUNT, f"subject {show(subject)}")


@case("spec/resource-examples")
def _(run: Run) -> None:
    for resource in (
        {"type": "book", "id": "123"},
        {
            "type": "book",
            "id": "123",
            "properties": {"library_record": {"title": "AuthZEN in Action", "isbn": "978-0593383322"}},
        },
    ):
        run.evaluate(ev(SPEC_ALICE, {"name": "can_read"}, resource), permit("spec-book-catalogue"), f"resource {show(resource)}")


@case("spec/action-examples")
def _(run: Run) -> None:
    run.evaluate(
        ev(SPEC_ALICE, {"name": "can_read"}, {"type": "book", "id": "123"}), permit("spec-book-catalogue"), "can_read"
    )
    # extend-loan is no purpose of the policy: a decision, false.
    run.evaluate(
        ev(SPEC_ALICE, {"name": "extend-loan", "properties": {"period": "2W"}}, {"type": "book", "id": "123"}),
        W_NOTHING,
        "extend-loan",
    )


@case("spec/context-examples")
def _(run: Run) -> None:
    for context in (
        {"time": "1985-10-26T01:22-07:00"},
        {"time": "1985-10-26T01:22-07:00", "schema": "https://schema.example.com/access-request.schema.json"},
    ):
        run.evaluate(ev(SPEC_ALICE, {"name": "can_read"}, {"type": "account", "id": "123"}, context), W_ACCOUNT, f"context {show(context)}")


@case("spec/transport/evaluation-example")
def _(run: Run) -> None:
    body = {
        "subject": {"type": "user", "id": "alice@example.com"},
        "resource": {"type": "todo", "id": "1"},
        "action": {"name": "can_read"},
        "context": {"time": "1985-10-26T01:22-07:00"},
    }
    reply, _ = run.evaluate(body, permit("spec-todo-owner"), headers={"X-Request-ID": REQUEST_ID})
    expect_echo(reply, REQUEST_ID, "evaluation")


@case("spec/decision-context")
def _(run: Run) -> None:
    # A deny is 200 with `decision: false`, never an HTTP error; its
    # context is an object (here purposegate's explanation).
    _, d = run.evaluate(ev(SPEC_ALICE, READ, {"type": "document", "id": "2"}), W_DOC_2)
    if not d["context"]["reason"]:
        raise Fail("a deny gives no reason")


# -- Access Evaluations ------------------------------------------------------


@case("spec/evaluations/no-defaults")
def _(run: Run) -> None:
    run.evaluations(SPEC_EVALUATIONS_NO_DEFAULTS, [W_DOC_VIEW, W_DOC_NOT_FOUND, W_DOC_VIEW])


@case("spec/evaluations/default-subject-context")
def _(run: Run) -> None:
    _, with_defaults = run.evaluations(SPEC_EVALUATIONS_SUBJECT_CONTEXT, [W_DOC_VIEW, W_DOC_NOT_FOUND, W_DOC_VIEW])
    _, without = run.evaluations(SPEC_EVALUATIONS_NO_DEFAULTS, [None, None, None])

    def strip(items: list[dict]) -> list[tuple]:
        return [(i["decision"], i["context"]["decision"], sorted(i["context"]["rule_ids"])) for i in items]

    if strip(with_defaults) != strip(without):
        raise Fail(f"defaults answer {strip(with_defaults)}, the same evaluations spelled out {strip(without)}")


@case("spec/evaluations/default-action-overridden")
def _(run: Run) -> None:
    # The specification's response: true, false, false.
    run.evaluations(SPEC_EVALUATIONS_ACTION_OVERRIDE, [W_DOC_VIEW, W_DOC_NOT_FOUND, W_NOTHING])


@case("spec/transport/evaluations-example")
def _(run: Run) -> None:
    reply, _ = run.evaluations(
        SPEC_EVALUATIONS_ACTION_OVERRIDE,
        [W_DOC_VIEW, W_DOC_NOT_FOUND, W_NOTHING],
        headers={"X-Request-ID": REQUEST_ID},
    )
    expect_echo(reply, REQUEST_ID, "evaluations")


@case("spec/evaluations/options")
def _(run: Run) -> None:
    # Its one evaluation has no action and there is no default: it cannot
    # be made; `another_option` is ignored.
    run.evaluations(SPEC_EVALUATIONS_OPTIONS, [ItemError(("action",))])


@case("spec/evaluations-semantics/execute_all")
def _(run: Run) -> None:
    run.evaluations(spec_semantics("execute_all"), [W_DOC_VIEW, W_DOC_2, W_DOC_VIEW])


@case("spec/evaluations-semantics/deny_on_first_deny")
def _(run: Run) -> None:
    run.evaluations(spec_semantics("deny_on_first_deny"), [W_DOC_VIEW, W_DOC_2])


@case("spec/evaluations-semantics/permit_on_first_permit")
def _(run: Run) -> None:
    run.evaluations(spec_semantics("permit_on_first_permit"), [W_DOC_VIEW])


@case("spec/evaluations-semantics/default-is-execute_all")
def _(run: Run) -> None:
    run.evaluations(spec_semantics(None), [W_DOC_VIEW, W_DOC_2, W_DOC_VIEW])


@case("spec/evaluations-semantics/permit_on_first_permit-later")
def _(run: Run) -> None:
    body = spec_semantics("permit_on_first_permit")
    body["evaluations"] = [{"resource": {"type": "document", "id": i}} for i in ("2", "subject-search.md", "3", "1")]
    run.evaluations(body, [W_DOC_2, W_DOC_NOT_FOUND, W_DOC_VIEW])


@case("spec/evaluations-semantics/unknown")
def _(run: Run) -> None:
    expect_error(
        run.client.post(EVALUATIONS, spec_semantics("first_deny_wins")),
        "unknown semantic",
        mentions=("evaluations_semantic",),
    )


@case("mapping/evaluations/failed-item-stops-deny_on_first_deny")
def _(run: Run) -> None:
    body = spec_semantics("deny_on_first_deny")
    body["evaluations"] = [{"resource": {"type": "document", "id": "1"}}, {}, {"resource": {"type": "document", "id": "3"}}]
    run.evaluations(body, [W_DOC_VIEW, ItemError(("resource",))])


@case("mapping/evaluations/failed-item-is-false-for-permit_on_first_permit")
def _(run: Run) -> None:
    body = spec_semantics("permit_on_first_permit")
    body["evaluations"] = [
        {},
        {"resource": {"type": "document", "id": "2"}},
        {"resource": {"type": "document", "id": "3"}},
        {"resource": {"type": "document", "id": "1"}},
    ]
    run.evaluations(body, [ItemError(("resource",)), W_DOC_2, W_DOC_VIEW])


@case("mapping/evaluations/defaults-replaced-whole")
def _(run: Run) -> None:
    # An item's subject replaces the default whole: no merging of fields.
    body = {
        "subject": {"type": "user", "id": "alice@example.com", "properties": {"tenant": "t"}},
        "action": READ,
        "resource": RECORD_1,
        "evaluations": [
            {},
            {"subject": USER_ALICE},
            {"resource": {"type": "document", "id": "1"}},
            {"subject": {"type": "user"}},
        ],
    }
    run.evaluations(body, [W_NOTHING, W_FIXTURE_READ, W_DOC_VIEW, ItemError(("subject.id",))])


@case("mapping/evaluations/max-batch")
def _(run: Run) -> None:
    item = {"resource": RECORD_1}
    body = {"subject": USER_ALICE, "action": READ, "evaluations": [item] * run.max_batch}
    run.evaluations(body, [W_FIXTURE_READ] * run.max_batch, f"{run.max_batch} evaluations")
    body["evaluations"] = [item] * (run.max_batch + 1)
    expect_error(
        run.client.post(EVALUATIONS, body),
        f"{run.max_batch + 1} evaluations",
        mentions=(("evaluations", str(run.max_batch)),),
    )


@case("mapping/evaluations/wrong-types")
def _(run: Run) -> None:
    for name, body, field in (
        ("evaluations a string", {**C_2_2_1, "evaluations": "all"}, "evaluations"),
        ("options a string", {**C_3_2_2, "options": "execute_all"}, "options"),
        ("evaluations_semantic a number", {**C_3_2_2, "options": {"evaluations_semantic": 1}}, "evaluations_semantic"),
    ):
        expect_error(run.client.post(EVALUATIONS, body), name, mentions=(field,))


# -- Action search -----------------------------------------------------------


@case("spec/action-search")
def _(run: Run) -> None:
    run.search(
        SPEC_ACTION_SEARCH,
        [Found("can_read", ("spec-account-owner",), ()), Found("can_write", ("spec-account-owner",), ())],
    )


@case("spec/transport/action-search-example")
def _(run: Run) -> None:
    reply, _ = run.search(SPEC_ACTION_SEARCH, ["can_read", "can_write"], headers={"X-Request-ID": REQUEST_ID})
    expect_echo(reply, REQUEST_ID, "action search")


@case("spec/search-semantics")
def _(run: Run) -> None:
    # Every result, evaluated, is true; every other purpose is false.
    no_watermark: dict[str, Any] = {"supported_obligations": []}
    watermark: dict[str, Any] = {"supported_obligations": ["watermark"]}
    for subject, resource, context in (
        (SPEC_ALICE, {"type": "account", "id": "123"}, None),
        (SPEC_ALICE, {"type": "todo", "id": "1"}, None),
        (SPEC_ALICE, {"type": "document", "id": "1"}, None),
        (SPEC_ALICE, {"type": "document", "id": "2"}, None),
        (SPEC_ALICE, {"type": "document", "id": "subject-search.md"}, None),
        (SPEC_ALICE, {"type": "book", "id": "123"}, no_watermark),
        (SPEC_ALICE, {"type": "book", "id": "123"}, watermark),
        (USER_ALICE, RECORD_1, None),
        (USER_BOB, RECORD_1, None),
        (USER_BOB, RECORD_2, None),
    ):
        search: dict[str, Any] = {"subject": subject, "resource": resource}
        if context is not None:
            search["context"] = context
        where = f"{subject['id']} on {resource['type']} {resource['id']}"
        _, obj = run.search(search, None, f"action search, {where}")
        found = [r["name"] for r in obj["results"]]
        order = [p for p in EXAMPLES_PURPOSES if p in found]
        if found != order:
            raise Fail(f"{where}: results {found} are not purposes of the policy in tree order {list(EXAMPLES_PURPOSES)}")
        for purpose in EXAMPLES_PURPOSES:
            _, d = run.evaluate({**search, "action": {"name": purpose}}, None, f"{where}, {purpose}")
            if d["decision"] != (purpose in found):
                raise Fail(
                    f"{where}: action search {'lists' if purpose in found else 'leaves out'} {purpose}, "
                    f"but its evaluation is {str(d['decision']).lower()} ({d['context']['decision']})"
                )


@case("spec/search-pagination")
def _(run: Run) -> None:
    # The specification's cycle: limit 2, three results in all.
    first_req = {**SPEC_PAGINATION, "page": {"limit": 2}}
    _, first = run.search(first_req, ["can_read", "can_edit"], "initial request", whole=False)
    page = first["page"]
    if page["count"] != 2 or page["total"] != 3 or not page["next_token"]:
        raise Fail(f"initial response: page {show(page)}, want count 2, total 3 and a non-empty next_token")
    second_req = {**SPEC_PAGINATION, "page": {"token": page["next_token"]}}
    _, second = run.search(second_req, ["can_write"], "second request", whole=False)
    page = second["page"]
    if (page["next_token"], page["count"], page["total"]) != ("", 1, 3):
        raise Fail(f"second response: page {show(page)}, want next_token \"\", count 1, total 3")
    _, whole = run.search(SPEC_PAGINATION, ["can_read", "can_edit", "can_write"], "without page")
    if first["results"] + second["results"] != whole["results"]:
        raise Fail("the two pages together differ from the results asked for at once")


@case("spec/search-pagination/token-with-same-limit")
def _(run: Run) -> None:
    _, first = run.search({**SPEC_PAGINATION, "page": {"limit": 2}}, ["can_read", "can_edit"], "initial", whole=False)
    token = first["page"]["next_token"]
    _, second = run.search(
        {**SPEC_PAGINATION, "page": {"token": token, "limit": 2}}, ["can_write"], "token and limit 2", whole=False
    )
    if second["page"]["next_token"] != "":
        raise Fail(f"the last page has next_token {second['page']['next_token']!r}")


@case("spec/search-pagination/changed-limit")
def _(run: Run) -> None:
    _, first = run.search({**SPEC_PAGINATION, "page": {"limit": 1}}, ["can_read"], "limit 1", whole=False)
    token = first["page"]["next_token"]
    if not token:
        raise Fail("limit 1 of 3 results gave no next_token")
    expect_error(
        run.client.post(SEARCH_ACTION, {**SPEC_PAGINATION, "page": {"token": token, "limit": 2}}),
        "the token with limit 2",
    )


@case("spec/search-pagination/changed-request")
def _(run: Run) -> None:
    _, first = run.search({**SPEC_PAGINATION, "page": {"limit": 1}}, ["can_read"], "limit 1", whole=False)
    token = first["page"]["next_token"]
    for name, changed in (
        ("another resource", {**SPEC_PAGINATION, "resource": {"type": "todo", "id": "2"}}),
        ("another subject", {**SPEC_PAGINATION, "subject": {"type": "user", "id": "bob"}}),
        ("a context added", {**SPEC_PAGINATION, "context": {"supported_obligations": ["watermark"]}}),
    ):
        expect_error(
            run.client.post(SEARCH_ACTION, {**changed, "page": {"token": token, "limit": 1}}),
            f"the token with {name}",
        )


@case("mapping/search-pagination/garbled-token")
def _(run: Run) -> None:
    for token in ("a3M9NDU2O3N6PTI=", "not a token", "%%%"):
        expect_error(
            run.client.post(SEARCH_ACTION, {**SPEC_PAGINATION, "page": {"token": token}}), f"token {token!r}"
        )


@case("mapping/search-pagination/limits")
def _(run: Run) -> None:
    run.search({**SPEC_PAGINATION, "page": {"limit": 10}}, ["can_read", "can_edit", "can_write"], "limit 10")
    run.search({**SPEC_PAGINATION, "page": {"limit": 3}}, ["can_read", "can_edit", "can_write"], "limit 3")
    run.search({**SPEC_PAGINATION, "page": {"limit": 0}}, None, "limit 0", whole=False)
    for limit in (-1, 1.5, "2", True):
        expect_error(
            run.client.post(SEARCH_ACTION, {**SPEC_PAGINATION, "page": {"limit": limit}}),
            f"limit {json.dumps(limit)}",
            mentions=("limit",),
        )
    expect_error(run.client.post(SEARCH_ACTION, {**SPEC_PAGINATION, "page": "all"}), "page a string", mentions=("page",))


@case("mapping/action-search/ignores-an-action")
def _(run: Run) -> None:
    run.search({**C_4_4_1, "action": {"name": "delete"}}, ["read", "write"])


@case("mapping/action-search/unknown-fields")
def _(run: Run) -> None:
    run.search(
        {
            "subject": {**USER_ALICE, "properties": {"department": "Sales"}},
            "resource": {**RECORD_1, "properties": {"status": "active"}},
            "context": {"time": "2025-06-27T18:03-07:00"},
            "page": {"properties": {"sort": "name"}},
            "futureField": {"nested": True},
        },
        ["read", "write"],
    )


# -- Obligations profile and monitor rules ----------------------------------


@case("obligations/permit-with-obligation")
def _(run: Run) -> None:
    run.evaluate(
        ev(SPEC_ALICE, READ, {"type": "book", "id": "123"}, {"supported_obligations": ["watermark"]}),
        permit("book-read-watermarked", obligations=(WATERMARK,)),
    )


@case("obligations/camel-case")
def _(run: Run) -> None:
    run.evaluate(
        ev(SPEC_ALICE, READ, {"type": "book", "id": "123"}, {"supportedObligations": ["watermark"]}),
        permit("book-read-watermarked", obligations=(WATERMARK,)),
    )


@case("obligations/not-supported-by-the-pep")
def _(run: Run) -> None:
    run.evaluate(ev(SPEC_ALICE, READ, {"type": "book", "id": "123"}), deny("book-read-watermarked", obligations=()))
    run.evaluate(
        ev(SPEC_ALICE, READ, {"type": "book", "id": "123"}, {"supported_obligations": ["log-access"]}),
        deny("book-read-watermarked", obligations=()),
    )


@case("obligations/none-needed")
def _(run: Run) -> None:
    run.evaluate(
        ev(SPEC_ALICE, {"name": "can_read"}, {"type": "book", "id": "123"}, {"supported_obligations": ["watermark"]}),
        permit("spec-book-catalogue", obligations=()),
    )


@case("obligations/action-search")
def _(run: Run) -> None:
    book = {"subject": SPEC_ALICE, "resource": {"type": "book", "id": "123"}}
    run.search(
        {**book, "context": {"supported_obligations": ["watermark"]}},
        [Found("can_read", ("spec-book-catalogue",), ()), Found("read", ("book-read-watermarked",), (WATERMARK,))],
    )
    run.search(book, [Found("can_read", ("spec-book-catalogue",), ())], "without supported obligations")


@case("obligations/evaluations")
def _(run: Run) -> None:
    run.evaluations(
        {
            "subject": SPEC_ALICE,
            "resource": {"type": "book", "id": "123"},
            "context": {"supported_obligations": ["watermark"]},
            "evaluations": [{"action": READ}, {"action": READ, "context": {}}],
        },
        [permit("book-read-watermarked", obligations=(WATERMARK,)), deny("book-read-watermarked", obligations=())],
    )


@case("mapping/monitor")
def _(run: Run) -> None:
    run.evaluate(
        ev(USER_ALICE, {"name": "delete"}, RECORD_1),
        not_applicable(monitor={"decision": "PERMIT", "rule_ids": ["trial-soft-delete"]}),
        "alice delete",
    )
    run.evaluate(ev(USER_BOB, {"name": "delete"}, RECORD_1), not_applicable(monitor={}), "bob delete")


# -- Metadata ----------------------------------------------------------------


def _endpoint(run: Run, path: str) -> str:
    return run.pdp_url + path


@case("c-6-1")
def _(run: Run) -> None:
    run.metadata()


skip("c-6-1/tenant-path", "the server publishes one PDP at its base URL, no tenant-scoped metadata")


@case("c-6-2")
def _(run: Run) -> None:
    reply, meta = run.metadata()
    for key, value in meta.items():
        if value is None or value == []:
            raise Fail(f"`{key}` has no value; parameters with no values must be omitted")


@case("c-6-3")
def _(run: Run) -> None:
    _, meta = run.metadata()
    if meta.get("policy_decision_point") != run.pdp_url:
        raise Fail(f"policy_decision_point {show(meta.get('policy_decision_point'))}, want {run.pdp_url!r}")
    if meta.get("access_evaluation_endpoint") != _endpoint(run, EVALUATION):
        raise Fail(f"access_evaluation_endpoint {show(meta.get('access_evaluation_endpoint'))}, want {_endpoint(run, EVALUATION)!r}")


@case("c-6-4")
def _(run: Run) -> None:
    _, meta = run.metadata()
    for key, path in (("access_evaluations_endpoint", EVALUATIONS), ("search_action_endpoint", SEARCH_ACTION)):
        if meta.get(key) != _endpoint(run, path):
            raise Fail(f"{key} {show(meta.get(key))}, want {_endpoint(run, path)!r}")
    for key in ("search_subject_endpoint", "search_resource_endpoint"):
        if key in meta:
            raise Fail(f"{key} is advertised, but subject and resource search are not offered")
    caps = meta.get("capabilities")
    if not isinstance(caps, list) or not caps or not all(isinstance(c, str) and c.startswith("urn:") for c in caps):
        raise Fail(f"capabilities must be an array of URN strings, got {show(caps)}")
    if "signed_metadata" in meta:
        raise Fail("signed_metadata is advertised; this client cannot verify it")


@case("c-6-5")
def _(run: Run) -> None:
    _, meta = run.metadata()
    for key, value in meta.items():
        if not key.endswith("_endpoint") and key != "policy_decision_point":
            continue
        if not isinstance(value, str):
            raise Fail(f"{key} must be a URL string, got {show(value)}")
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise Fail(f"{key} {value!r} is not an absolute URL without query and fragment")
        if parts.scheme != urllib.parse.urlsplit(run.pdp_url).scheme:
            raise Fail(f"{key} {value!r} has another scheme than the PDP {run.pdp_url!r}")


@case("c-6-5/https")
def _(run: Run) -> None:
    if not run.pdp_url.startswith("https://"):
        raise Skip("the PDP URL is http://; the HTTPS requirement applies to a deployment behind TLS")
    _, meta = run.metadata()
    for key, value in meta.items():
        if (key.endswith("_endpoint") or key == "policy_decision_point") and not str(value).startswith("https://"):
            raise Fail(f"{key} {value!r} is not an HTTPS URL")


@case("c-6-6")
def _(run: Run) -> None:
    reply = run.client.request("GET", run.client.metadata_url())
    if reply.status == 404:
        raise Fail("the metadata endpoint answers 404")
    expect_json(reply, f"GET {WELL_KNOWN}")


@case("spec/pdp-metadata/head")
def _(run: Run) -> None:
    get, _ = run.metadata()
    head = run.client.request("HEAD", run.client.metadata_url())
    if head.status != 200:
        raise Fail(f"HEAD: want HTTP 200, got {head.summary()}")
    if head.media_type != "application/json":
        raise Fail(f"HEAD: want Content-Type application/json, got {head.header('content-type')!r}")
    if head.body:
        raise Fail(f"HEAD: the answer has a body of {len(head.body)} bytes")
    if head.header("content-length") not in (None, get.header("content-length")):
        raise Fail(f"HEAD: Content-Length {head.header('content-length')}, GET's {get.header('content-length')}")


@case("spec/pdp-metadata/request-id")
def _(run: Run) -> None:
    reply, _ = run.metadata(headers={"X-Request-ID": REQUEST_ID})
    expect_echo(reply, REQUEST_ID, f"GET {WELL_KNOWN}")


@case("obligations/metadata")
def _(run: Run) -> None:
    _, meta = run.metadata()
    if meta.get("supported_obligations") != ["custom"]:
        raise Fail(f"supported_obligations {show(meta.get('supported_obligations'))}, want [\"custom\"]")


@case("mapping/methods")
def _(run: Run) -> None:
    for method, path, allowed in (
        ("GET", EVALUATION, "POST"),
        ("GET", EVALUATIONS, "POST"),
        ("GET", SEARCH_ACTION, "POST"),
        ("PUT", EVALUATION, "POST"),
        ("DELETE", SEARCH_ACTION, "POST"),
        ("POST", WELL_KNOWN, "GET"),
        ("PUT", WELL_KNOWN, "GET"),
    ):
        url = run.client.metadata_url() if path == WELL_KNOWN else run.client.url(path)
        body = encode(C_2_2_1) if method in ("POST", "PUT") else None
        reply = run.client.request(method, url, body, {"Content-Type": "application/json", "X-Request-ID": REQUEST_ID})
        where = f"{method} {path}"
        expect_error(reply, where, status=405, media_type=None)
        allow = [m.strip().upper() for m in (reply.header("allow") or "").split(",")]
        if allowed not in allow:
            raise Fail(f"{where}: Allow {reply.header('allow')!r} does not name {allowed}")
        expect_echo(reply, REQUEST_ID, where)


@case("mapping/subject-and-resource-search-not-offered")
def _(run: Run) -> None:
    for path, body in (
        (SEARCH_SUBJECT, {"subject": {"type": "user"}, "action": READ, "resource": RECORD_1}),
        (SEARCH_RESOURCE, {"subject": USER_ALICE, "action": READ, "resource": {"type": "record"}}),
    ):
        expect_error(run.client.post(path, body), f"POST {path}", status=404, media_type=None)


# -- Certification: fixture --------------------------------------------------

for _n, (_who, _action, _want) in enumerate(
    (
        (USER_ALICE, READ, W_FIXTURE_READ),
        (USER_ALICE, WRITE, W_FIXTURE_WRITE),
        (USER_BOB, READ, W_FIXTURE_READ),
        (USER_BOB, WRITE, W_NOTHING),
    ),
    start=1,
):
    EXAMPLES.append((f"c-1-4/rule-{_n}", evaluates(ev(_who, _action, RECORD_1), _want)))
for _n, _what in ((5, "resource.properties.status"), (6, "subject.properties.role and resource.properties.status"), (7, "action.properties.soft"), (8, "action.properties.soft")):
    skip(f"c-1-4/rule-{_n}", NOT_EXPRESSIBLE.format(what=_what))
skip("c-1-5/S1", NO_SEARCH.format(what="subject"))
skip("c-1-5/S2", NO_SEARCH.format(what="resource"))


@case("c-1-5/S3")
def _(run: Run) -> None:
    _, obj = run.search(C_4_4_1, None)
    names = [r["name"] for r in obj["results"]]
    if not {"read", "write"} <= set(names):
        raise Fail(f"results {names} do not include read and write")


skip("c-1-5/S4", NO_SEARCH.format(what="subject"))
skip("c-1-5/S5", NO_SEARCH.format(what="resource"))
skip("c-1-5/S6", NOT_EXPRESSIBLE.format(what="subject.properties.role and resource.properties.status"))
skip("c-1-6/properties", NOT_EXPRESSIBLE.format(what="properties of subject, resource and action"))

# -- Certification: Basic ----------------------------------------------------


@case("c-2-1")
def _(run: Run) -> None:
    run.evaluate(C_2_2_1, None)


@case("c-2-2-1")
def _(run: Run) -> None:
    run.evaluate(C_2_2_1, W_C_2_2_1)


@case("c-2-2-2")
def _(run: Run) -> None:
    run.evaluate(C_2_2_2, W_C_2_2_2)


@case("c-2-2-3")
def _(run: Run) -> None:
    run.evaluate(ev(USER_ALICE, READ, RECORD_1, {"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"}), W_C_2_2_1)


skip("c-2-2-4", NOT_EXPRESSIBLE.format(what="resource.properties.status"))
skip("c-2-2-5", NOT_EXPRESSIBLE.format(what="subject.properties.role and resource.properties.status"))
skip("c-2-2-6", NOT_EXPRESSIBLE.format(what="action.properties.soft"))
skip("c-2-2-7", NOT_EXPRESSIBLE.format(what="action.properties.soft"))


@case("c-2-2-8")
def _(run: Run) -> None:
    run.evaluate(
        {
            "subject": {"type": "user", "id": "alice", "properties": {"department": "Sales", "role": "manager"}},
            "action": {"name": "read", "properties": {"method": "GET"}},
            "resource": {"type": "record", "id": "record-1", "properties": {"status": "active", "owner": "bob"}},
        },
        W_C_2_2_1,
    )


@case("c-2-2-9")
def _(run: Run) -> None:
    run.evaluate({**C_2_2_1, "foo": "bar", "futureField": {"nested": True}}, W_C_2_2_1)


@case("c-2-3-1")
def _(run: Run) -> None:
    for body in (C_2_2_1, C_2_2_2):
        reply = run.client.post(EVALUATION, body)
        d = expect_json(reply, "evaluation")
        if type(d.get("decision")) is not bool:
            raise Fail(f"`decision` must be a boolean, got {show(d.get('decision'))}")


@case("c-2-3-2")
def _(run: Run) -> None:
    for body in (C_2_2_1, C_2_2_2):
        run.evaluate(body, None)


for _name, _body, _field in (
    ("missing-subject", {"action": READ, "resource": RECORD_1}, "subject"),
    ("missing-action", {"subject": USER_ALICE, "resource": RECORD_1}, "action"),
    ("missing-resource", {"subject": USER_ALICE, "action": READ}, "resource"),
):
    EXAMPLES.append((f"c-2-4-1/{_name}", refuses(EVALUATION, _body, _field)))

for _name, _body, _field in (
    ("subject-without-type", ev({"id": "alice"}, READ, RECORD_1), "subject.type"),
    ("subject-without-id", ev({"type": "user"}, READ, RECORD_1), "subject.id"),
    ("action-without-name", ev(USER_ALICE, {}, RECORD_1), "action.name"),
    ("resource-without-type", ev(USER_ALICE, READ, {"id": "record-1"}), "resource.type"),
    ("resource-without-id", ev(USER_ALICE, READ, {"type": "record"}), "resource.id"),
):
    EXAMPLES.append((f"c-2-4-2/{_name}", refuses(EVALUATION, _body, _field)))


@case("mapping/empty-required-strings")
def _(run: Run) -> None:
    for body, field in (
        (ev({"type": "", "id": "alice"}, READ, RECORD_1), "subject.type"),
        (ev({"type": "user", "id": ""}, READ, RECORD_1), "subject.id"),
        (ev(USER_ALICE, {"name": ""}, RECORD_1), "action.name"),
        (ev(USER_ALICE, READ, {"type": "", "id": "record-1"}), "resource.type"),
        (ev(USER_ALICE, READ, {"type": "record", "id": ""}), "resource.id"),
    ):
        expect_error(run.client.post(EVALUATION, body), f"empty {field}", mentions=(field,))


@case("mapping/null-is-missing")
def _(run: Run) -> None:
    expect_error(run.client.post(EVALUATION, ev(None, READ, RECORD_1)), "subject null", mentions=("subject",))
    expect_error(run.client.post(EVALUATION, ev(USER_ALICE, {"name": None}, RECORD_1)), "action.name null", mentions=("action.name",))


def _each_endpoint_body(path: str) -> dict:
    return {EVALUATION: C_2_2_1, EVALUATIONS: C_3_2_2, SEARCH_ACTION: C_4_4_1}[path]


@case("c-2-4-3")
def _(run: Run) -> None:
    for path in POST_ENDPOINTS:
        body = encode(_each_endpoint_body(path))
        for content_type in ("text/plain", None, "application/x-www-form-urlencoded", "application/jsonx"):
            expect_error(
                run.client.post(path, raw=body, content_type=content_type),
                f"POST {path} with Content-Type {content_type!r}",
                mentions=(("content-type", "content type", "application/json", "media type"),),
            )


@case("mapping/content-type-parameters-and-case")
def _(run: Run) -> None:
    for content_type in ("application/json; charset=utf-8", "Application/JSON"):
        reply = run.client.post(EVALUATION, raw=encode(C_2_2_1), content_type=content_type)
        d = expect_json(reply, f"Content-Type {content_type!r}")
        run.check_decision(d, f"Content-Type {content_type!r}")
        run.match(d, W_C_2_2_1, f"Content-Type {content_type!r}")


@case("c-2-4-4")
def _(run: Run) -> None:
    for path in POST_ENDPOINTS:
        for raw in (b'{"subject": ', b'{"subject": {"type": "user", "id": "alice"},}', b"subject=alice", b'{"a": 1} {"b": 2}'):
            expect_error(run.client.post(path, raw=raw), f"POST {path} with {raw!r}")


@case("c-2-4-5")
def _(run: Run) -> None:
    for path in POST_ENDPOINTS:
        expect_error(run.client.post(path, raw=b""), f"POST {path} with an empty body")


@case("mapping/body-not-an-object")
def _(run: Run) -> None:
    for path in POST_ENDPOINTS:
        for raw in (b"[]", b'"alice"', b"null", b"42"):
            expect_error(run.client.post(path, raw=raw), f"POST {path} with {raw!r}")


@case("c-2-4-6/subject-a-string")
def _(run: Run) -> None:
    expect_error(run.client.post(EVALUATION, ev("alice", READ, RECORD_1)), "evaluation", mentions=("subject",))


@case("c-2-4-6/action-name-a-number")
def _(run: Run) -> None:
    expect_error(run.client.post(EVALUATION, ev(USER_ALICE, {"name": 123}, RECORD_1)), "evaluation", mentions=("action.name",))


@case("mapping/wrong-types")
def _(run: Run) -> None:
    def with_subject_props(props: Any) -> dict:
        return ev({**USER_ALICE, "properties": props}, READ, RECORD_1)

    def with_resource_props(props: Any) -> dict:
        return ev(USER_ALICE, READ, {**RECORD_1, "properties": props})

    def with_context(context: Any) -> dict:
        return ev(USER_ALICE, READ, RECORD_1, context)

    for body, field in (
        (ev(USER_ALICE, "read", RECORD_1), "action"),
        (ev(USER_ALICE, READ, "record-1"), "resource"),
        (ev({"type": "user", "id": 7}, READ, RECORD_1), "subject.id"),
        (ev({"type": ["user"], "id": "alice"}, READ, RECORD_1), "subject.type"),
        (ev(USER_ALICE, READ, {"type": "record", "id": 1}), "resource.id"),
        (ev(USER_ALICE, READ, {"type": {"name": "record"}, "id": "record-1"}), "resource.type"),
        (with_subject_props("admin"), "subject.properties"),
        (with_subject_props({"tenant": 5}), "subject.properties.tenant"),
        (with_subject_props({"roles": "admin"}), "subject.properties.roles"),
        (with_subject_props({"roles": ["admin", 1]}), "subject.properties.roles"),
        (with_resource_props(["x"]), "resource.properties"),
        (with_resource_props({"owner_tenant": True}), "resource.properties.owner_tenant"),
        (with_resource_props({"deidentification": 3}), "resource.properties.deidentification"),
        (with_resource_props({"deidentification": "scrambled"}), "resource.properties.deidentification"),
        (with_resource_props({"group_size": "abc"}), "resource.properties.group_size"),
        (with_resource_props({"group_size": -3}), "resource.properties.group_size"),
        (with_resource_props({"group_size": 2.5}), "resource.properties.group_size"),
        (with_resource_props({"origin": "record"}), "resource.properties.origin"),
        (with_resource_props({"attributes": ["region"]}), "resource.properties.attributes"),
        (with_resource_props({"attributes": {"region": 1}}), "resource.properties.attributes"),
        (with_context("now"), "context"),
        (with_context({"customer_instruction": 7}), "context.customer_instruction"),
        (with_context({"attributes": "x"}), "context.attributes"),
        (with_context({"supported_obligations": "watermark"}), "context.supported_obligations"),
    ):
        expect_error(run.client.post(EVALUATION, body), f"wrong type of {field} ({show(body)})", mentions=(field,))


@case("mapping/both-spellings")
def _(run: Run) -> None:
    for body, snake, camel in (
        (ev(USER_ALICE, READ, {**RECORD_1, "properties": {"owner_tenant": "a", "ownerTenant": "a"}}), "owner_tenant", "ownerTenant"),
        (ev(USER_ALICE, READ, {**RECORD_1, "properties": {"group_size": 60, "groupSize": 60}}), "group_size", "groupSize"),
        (ev(USER_ALICE, READ, RECORD_1, {"customer_instruction": "c", "customerInstruction": "c"}), "customer_instruction", "customerInstruction"),
        (ev(USER_ALICE, READ, RECORD_1, {"supported_obligations": [], "supportedObligations": []}), "supported_obligations", "supportedObligations"),
    ):
        expect_error(run.client.post(EVALUATION, body), f"{snake} and {camel}", mentions=((snake, camel),))


@case("mapping/camel-case-accepted")
def _(run: Run) -> None:
    run.evaluate(
        ev(
            {**USER_ALICE, "properties": {"tenant": "t1", "roles": ["reader"]}},
            READ,
            {**RECORD_1, "properties": {"ownerTenant": "t1", "groupSize": 60, "deidentification": "Unlinked_Pseudonymized", "origin": ["record"], "attributes": {"region": "eu"}}},
            {"customerInstruction": "ticket-1", "attributes": {"channel": "api"}},
        ),
        W_FIXTURE_READ,
    )


@case("mapping/duplicate-keys")
def _(run: Run) -> None:
    for raw, key in (
        (b'{"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"}, "action": {"name": "write"}, "resource": {"type": "record", "id": "record-1"}}', "action"),
        (b'{"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"}, "resource": {"type": "record", "id": "record-1", "id": "record-2"}}', "id"),
        (b'{"subject": {"type": "user", "id": "bob", "id": "alice"}, "action": {"name": "read"}, "resource": {"type": "record", "id": "record-1"}}', "id"),
    ):
        expect_error(run.client.post(EVALUATION, raw=raw), f"duplicate `{key}` in {raw!r}", mentions=(key,))


@case("mapping/unknown-fields-everywhere")
def _(run: Run) -> None:
    run.evaluate(
        {
            "subject": {"type": "user", "id": "alice", "properties": {"department": "Sales", "clearance": {"level": 3}}},
            "action": {"name": "read", "properties": {"method": "GET", "soft": True}},
            "resource": {"type": "record", "id": "record-1", "properties": {"status": "active", "tags": ["a", 1, None]}},
            "context": {"time": "2025-06-27T18:03-07:00", "schema": "https://schema.example.com/x.json", "nested": {"deep": [1, 2]}},
            "evaluations_hint": 1,
        },
        W_C_2_2_1,
    )


@case("mapping/evaluation-ignores-evaluations")
def _(run: Run) -> None:
    run.evaluate({**C_2_2_1, "evaluations": [{"action": WRITE, "subject": USER_BOB}]}, W_C_2_2_1)


@case("mapping/subject-type-not-decided-on")
def _(run: Run) -> None:
    run.evaluate(ev({"type": "service", "id": "alice"}, READ, RECORD_1), W_FIXTURE_READ)


@case("mapping/resource-id-is-the-id-attribute")
def _(run: Run) -> None:
    run.evaluate(ev(SPEC_ALICE, READ, {"type": "document", "id": "2", "properties": {"attributes": {"shelf": "2"}}}), W_DOC_2)
    run.evaluate(ev(SPEC_ALICE, READ, {"type": "document", "id": "22", "properties": {"attributes": {"copy": "2"}}}), W_DOC_VIEW)


@case("c-2-5-1")
def _(run: Run) -> None:
    reply, _ = run.evaluate(C_2_2_1, W_C_2_2_1, headers={"X-Request-ID": REQUEST_ID})
    expect_echo(reply, REQUEST_ID, "evaluation")
    other = "pep-42 ~ with spaces"
    reply, _ = run.evaluate(C_2_2_2, W_C_2_2_2, headers={"X-Request-ID": other})
    expect_echo(reply, other, "evaluation")


@case("c-2-5-1/on-errors")
def _(run: Run) -> None:
    reply = run.client.post(EVALUATION, {"action": READ, "resource": RECORD_1}, headers={"X-Request-ID": REQUEST_ID})
    expect_error(reply, "missing subject")
    expect_echo(reply, REQUEST_ID, "missing subject")
    reply = run.client.post(EVALUATION, raw=b"{", headers={"X-Request-ID": REQUEST_ID})
    expect_error(reply, "malformed JSON")
    expect_echo(reply, REQUEST_ID, "malformed JSON")


@case("c-2-5-2")
def _(run: Run) -> None:
    run.evaluate(C_2_2_1, W_C_2_2_1)


@case("c-2-6")
def _(run: Run) -> None:
    for body, want in ((C_2_2_1, W_C_2_2_1), (C_2_2_2, W_C_2_2_2)):
        seen = set()
        for _ in range(5):
            _, d = run.evaluate(body, want)
            ctx = d["context"]
            seen.add((d["decision"], ctx["decision"], tuple(ctx["rule_ids"]), ctx["policy_revision"]))
        if len(seen) != 1:
            raise Fail(f"five identical requests got {sorted(seen)}")


@case("mapping/body-limit")
def _(run: Run) -> None:
    def padded(size: int) -> bytes:
        """c-2-2-1 with an unknown `padding` string making it `size` bytes."""
        head = encode({**C_2_2_1, "padding": ""})  # ends in `"padding": ""}`
        fill = size - len(head)
        if fill < 0:
            raise Fail(f"--max-body {run.max_body} is smaller than a request")
        raw = head[:-2] + b"x" * fill + b'"}'
        if len(raw) != size or json.loads(raw)["padding"] != "x" * fill:
            raise Fail(f"the client built a padded body of {len(raw)} bytes, not {size}")
        return raw

    at_limit = padded(run.max_body)
    reply = run.client.post(EVALUATION, raw=at_limit)
    d = expect_json(reply, f"a body of exactly {run.max_body} bytes")
    run.check_decision(d, f"a body of {run.max_body} bytes")
    run.match(d, W_C_2_2_1, f"a body of {run.max_body} bytes")
    for path in POST_ENDPOINTS:
        reply = run.client.send_raw(
            "POST",
            path,
            padded(run.max_body + 1),
            {"Content-Type": "application/json", "X-Request-ID": REQUEST_ID},
        )
        expect_error(reply, f"POST {path} with {run.max_body + 1} bytes", status=413, media_type=None)
        expect_echo(reply, REQUEST_ID, f"POST {path} with {run.max_body + 1} bytes")


# -- Certification: Batch ----------------------------------------------------


@case("c-3-1")
def _(run: Run) -> None:
    run.evaluations(C_3_2_2, [None, None])


@case("c-3-2-1")
def _(run: Run) -> None:
    # The second item (alice read record-2) is left to the implementer:
    # the fixture policy permits it.
    run.evaluations(
        {"subject": USER_ALICE, "action": READ, "evaluations": [{"resource": RECORD_1}, {"resource": RECORD_2}]},
        [W_FIXTURE_READ, W_FIXTURE_READ],
    )


@case("c-3-2-2")
def _(run: Run) -> None:
    run.evaluations(C_3_2_2, [W_FIXTURE_READ, W_NOTHING])


skip("c-3-2-3", NOT_EXPRESSIBLE.format(what="resource.properties.status"))
skip("c-3-2-4", NOT_EXPRESSIBLE.format(what="subject.properties.role and resource.properties.status"))


@case("c-3-2-5")
def _(run: Run) -> None:
    run.evaluations({"evaluations": [C_2_2_1, C_2_2_2]}, [W_C_2_2_1, W_C_2_2_2])


@case("c-3-2-6")
def _(run: Run) -> None:
    run.evaluations(
        {
            "subject": USER_ALICE,
            "action": READ,
            "context": {"time": "2025-06-27T18:03-07:00"},
            "evaluations": [
                {"resource": RECORD_1},
                {"resource": RECORD_2, "context": {"time": "2025-06-27T19:00-07:00", "source": "batch-override"}},
            ],
        },
        [W_FIXTURE_READ, W_FIXTURE_READ],
    )


skip("c-3-2-7", NOT_EXPRESSIBLE.format(what="resource.properties.status"))


@case("c-3-3")
def _(run: Run) -> None:
    # Length, order, a decision in each item, no top-level decision.
    run.evaluations(
        {
            "resource": RECORD_1,
            "evaluations": [
                {"subject": USER_BOB, "action": WRITE},
                {"subject": USER_ALICE, "action": READ},
                {"subject": {"type": "user", "id": "nonexistent-user"}, "action": READ},
                {"subject": USER_ALICE, "action": WRITE},
                {"subject": USER_BOB, "action": READ},
            ],
        },
        [W_NOTHING, W_FIXTURE_READ, W_NOTHING, W_FIXTURE_WRITE, W_FIXTURE_READ],
    )


@case("c-3-4-1")
def _(run: Run) -> None:
    run.evaluations(
        {
            "subject": USER_ALICE,
            "action": READ,
            "options": {"evaluations_semantic": "execute_all"},
            "evaluations": [{"resource": RECORD_1}, {}],
        },
        [W_FIXTURE_READ, ItemError(("resource",))],
    )


@case("c-3-4-1/more-failures")
def _(run: Run) -> None:
    run.evaluations(
        {
            "subject": USER_ALICE,
            "action": READ,
            "evaluations": [
                {"resource": {"type": "record"}},
                {"resource": RECORD_1, "action": {}},
                {"resource": RECORD_1, "subject": "alice"},
                {"resource": RECORD_2},
            ],
        },
        [ItemError(("resource.id",)), ItemError(("action.name",)), ItemError(("subject",)), W_FIXTURE_READ],
    )


@case("c-3-4-2")
def _(run: Run) -> None:
    run.evaluate(C_2_2_1, W_C_2_2_1, path=EVALUATIONS)


@case("c-3-4-3")
def _(run: Run) -> None:
    run.evaluate({**C_2_2_1, "evaluations": []}, W_C_2_2_1, path=EVALUATIONS)
    run.evaluate({**C_2_2_2, "evaluations": [], "options": {"evaluations_semantic": "deny_on_first_deny"}}, W_C_2_2_2, path=EVALUATIONS)


@case("c-3-4-3/invalid-as-a-single-evaluation")
def _(run: Run) -> None:
    expect_error(run.client.post(EVALUATIONS, {"subject": USER_ALICE, "action": READ, "evaluations": []}), "evaluations [] without a resource", mentions=("resource",))
    expect_error(run.client.post(EVALUATIONS, {"subject": USER_ALICE, "resource": RECORD_1}), "no evaluations and no action", mentions=("action",))


# -- Certification: Search ---------------------------------------------------

for _id in ("c-4-2-1", "c-4-2-2", "c-4-2-3", "c-4-2-4"):
    skip(_id, NO_SEARCH.format(what="subject"))
for _id in ("c-4-3-1", "c-4-3-2", "c-4-3-3", "c-4-3-4"):
    skip(_id, NO_SEARCH.format(what="resource"))


@case("c-4-1")
def _(run: Run) -> None:
    run.search(C_4_4_1, None)


@case("c-4-4-1")
def _(run: Run) -> None:
    run.search(C_4_4_1, [Found("read", ("fixture-read",), ()), Found("write", ("fixture-write",), ())])


@case("c-4-4-2")
def _(run: Run) -> None:
    _, plain = run.search(C_4_4_1, ["read", "write"], "without context")
    _, with_context = run.search({**C_4_4_1, "context": CERT_CONTEXT}, ["read", "write"], "with context")
    if plain["results"] != with_context["results"]:
        raise Fail("the context changed the results")


skip("c-4-4-3", NOT_EXPRESSIBLE.format(what="subject.properties.role and resource.properties.status"))


@case("c-4-4/bob")
def _(run: Run) -> None:
    run.search({"subject": USER_BOB, "resource": RECORD_1}, [Found("read", ("fixture-read",), ())])


@case("c-4-5-1")
def _(run: Run) -> None:
    # The scenario's subject search with limit 1, asked of action search.
    _, obj = run.search({**C_4_4_1, "page": {"limit": 1}}, ["read"], whole=False)
    page = obj["page"]
    if page["count"] != 1 or page["total"] != 2 or not page["next_token"]:
        raise Fail(f"page {show(page)}, want count 1, total 2 and a non-empty next_token")


@case("c-4-5-2")
def _(run: Run) -> None:
    _, first = run.search({**C_4_4_1, "page": {"limit": 1}}, ["read"], "limit 1", whole=False)
    _, second = run.search({**C_4_4_1, "page": {"token": first["page"]["next_token"]}}, ["write"], "token", whole=False)
    page = second["page"]
    if page["next_token"] != "" or page["count"] != 1 or page["total"] != 2:
        raise Fail(f"the last page: page {show(page)}, want next_token \"\", count 1, total 2")


@case("c-4-5-3")
def _(run: Run) -> None:
    for body in (C_4_4_1, {**C_4_4_1, "page": {"limit": 1}}):
        _, obj = run.search(body, None, f"action search {show(body.get('page'))}", whole="page" not in body)
        extra = set(obj["page"]) - {"next_token", "count", "total", "properties"}
        if extra:
            raise Fail(f"page has keys the specification does not define: {sorted(extra)}")
        if "properties" in obj["page"] and not isinstance(obj["page"]["properties"], dict):
            raise Fail("page.properties must be an object")


@case("c-4-5-4")
def _(run: Run) -> None:
    run.search({**C_4_4_1, "page": {}}, ["read", "write"], "an empty page object")
    run.search({**C_4_4_1, "page": {"properties": {"sort": "name"}}}, ["read", "write"], "page properties only")


@case("c-4-6-1")
def _(run: Run) -> None:
    _, obj = run.search({"subject": {"type": "user", "id": "nonexistent-user"}, "resource": RECORD_1}, [])
    if obj["page"]["total"] != 0:
        raise Fail(f"page {show(obj['page'])} for no results")


@case("c-4-6-2")
def _(run: Run) -> None:
    # Adapted: an action search on a resource type the policy does not know.
    run.search({"subject": USER_ALICE, "resource": {"type": "spaceship", "id": "record-1"}}, [])
    run.search({"subject": USER_ALICE, "resource": {"type": "record", "id": "record-99"}}, ["read", "write"], "unknown record id")


skip("c-4-7-1/subject-search", NO_SEARCH.format(what="subject"))
skip("c-4-7-1/resource-search", NO_SEARCH.format(what="resource"))


@case("c-4-7-1/action-search")
def _(run: Run) -> None:
    expect_error(run.client.post(SEARCH_ACTION, {"subject": USER_ALICE}), "missing resource", mentions=("resource",))
    expect_error(run.client.post(SEARCH_ACTION, {"resource": RECORD_1}), "missing subject", mentions=("subject",))


skip("c-4-7-2/subject-search", NO_SEARCH.format(what="subject"))
skip("c-4-7-2/resource-search", NO_SEARCH.format(what="resource"))


@case("c-4-7-2/action-search")
def _(run: Run) -> None:
    expect_error(
        run.client.post(SEARCH_ACTION, {"subject": {"type": "user"}, "resource": RECORD_1}),
        "subject without id",
        mentions=("subject.id",),
    )
    for resource, field in (({"type": "record"}, "resource.id"), ({"id": "record-1"}, "resource.type")):
        expect_error(run.client.post(SEARCH_ACTION, {"subject": USER_ALICE, "resource": resource}), f"resource without {field}", mentions=(field,))
    expect_error(run.client.post(SEARCH_ACTION, {"subject": {"id": "alice"}, "resource": RECORD_1}), "subject without type", mentions=("subject.type",))
    expect_error(run.client.post(SEARCH_ACTION, {"subject": "alice", "resource": RECORD_1}), "subject a string", mentions=("subject",))


# -- Certification: Transport ------------------------------------------------


@case("c-5-1")
def _(run: Run) -> None:
    run.evaluate(C_2_2_1, W_C_2_2_1)
    run.evaluations(C_3_2_2, [W_FIXTURE_READ, W_NOTHING])
    run.search(C_4_4_1, ["read", "write"])


@case("c-5-2")
def _(run: Run) -> None:
    for path in POST_ENDPOINTS:
        expect_json(run.client.post(path, _each_endpoint_body(path)), f"POST {path}")


@case("c-5-3")
def _(run: Run) -> None:
    for path, body, field in (
        (EVALUATION, {"action": READ, "resource": RECORD_1}, "subject"),
        (EVALUATIONS, {"action": READ, "resource": RECORD_1}, "subject"),
        (EVALUATIONS, {"subject": USER_ALICE, "action": READ}, "resource"),
        (SEARCH_ACTION, {"subject": USER_ALICE}, "resource"),
    ):
        expect_error(run.client.post(path, body), f"POST {path} without {field}", mentions=(field,))


@case("c-5-4")
def _(run: Run) -> None:
    for path in POST_ENDPOINTS:
        rid = f"c-5-4{path}"
        reply = run.client.post(path, _each_endpoint_body(path), headers={"X-Request-ID": rid})
        expect_json(reply, f"POST {path}")
        expect_echo(reply, rid, f"POST {path}")


@case("c-5-5")
def _(run: Run) -> None:
    run.evaluate({**C_2_2_1, "foo": "bar"}, W_C_2_2_1)
    run.evaluations({**C_3_2_2, "foo": "bar", "options": {"evaluations_semantic": "execute_all", "x": 1}}, [W_FIXTURE_READ, W_NOTHING])
    run.search({**C_4_4_1, "foo": "bar"}, ["read", "write"])


# --------------------------------------------------------------------------
# The default suite


def _want_of(entry: dict, where: str) -> Want:
    try:
        decision, context_decision, rule_ids = entry["decision"], entry["context_decision"], entry["rule_ids"]
    except KeyError as e:
        raise ValueError(f"{where}: missing {e}") from None
    if type(decision) is not bool or context_decision not in DECISIONS or not _string_list(rule_ids):
        raise ValueError(f"{where}: decision must be a boolean, context_decision one of {DECISIONS}, rule_ids strings")
    if decision != (context_decision == "PERMIT"):
        raise ValueError(f"{where}: decision {decision} contradicts context_decision {context_decision}")
    return Want(decision, context_decision, tuple(rule_ids))


def default_suite(path: Path) -> list[Case]:
    data = json.loads(path.read_text(encoding="utf-8"))
    cases: list[Case] = []
    names: set[str] = set()

    def name_of(entry: dict, where: str) -> str:
        name = entry.get("name")
        if not isinstance(name, str) or not name or name in names:
            raise ValueError(f"{where}: a case needs a unique `name`")
        names.add(name)
        return f"default/{name}"

    singles = data.get("single", [])
    for i, entry in enumerate(singles):
        where = f"{path.name}: single[{i}]"
        cid = name_of(entry, where)
        want = _want_of(entry, where)
        if not isinstance(entry.get("request"), dict):
            raise ValueError(f"{where}: `request` must be an object")
        cases.append((cid, evaluates(entry["request"], want)))
    for i, entry in enumerate(data.get("batches", [])):
        where = f"{path.name}: batches[{i}]"
        cid = name_of(entry, where)
        wants = [_want_of(e, f"{where}.expected[{j}]") for j, e in enumerate(entry.get("expected", []))]
        if not isinstance(entry.get("request"), dict) or not wants:
            raise ValueError(f"{where}: needs a `request` object and a non-empty `expected`")
        cases.append((cid, answers_in_order(entry["request"], wants)))
    cases.append(("default/action-search-agrees", lambda run: search_agrees(run, singles)))
    return cases


def search_agrees(run: Run, singles: list[dict]) -> None:
    """Action search lists a single case's purpose exactly when it is true."""
    searches: dict[str, tuple[dict, set[str]]] = {}
    for entry in singles:
        req = entry["request"]
        search = {k: req[k] for k in ("subject", "resource", "context") if k in req}
        key = json.dumps(search, sort_keys=True)
        if key not in searches:
            _, obj = run.search(search, None, f"action search for {entry['name']}")
            searches[key] = (search, {r["name"] for r in obj["results"]})
        found = searches[key][1]
        purpose = req["action"]["name"]
        if (purpose in found) != entry["decision"]:
            raise Fail(
                f"{entry['name']}: the evaluation of {purpose} is {str(entry['decision']).lower()}, "
                f"but action search {'lists' if purpose in found else 'leaves it out'} (results {sorted(found)})"
            )


# --------------------------------------------------------------------------
# Running


def run_cases(cases: list[Case], run: Run) -> int:
    passed = failed = skipped = 0
    for cid, what in cases:
        if isinstance(what, str):
            print(f"skip {cid}: {what}", flush=True)
            skipped += 1
            continue
        try:
            what(run)
        except Skip as e:
            print(f"skip {cid}: {oneline(e)}", flush=True)
            skipped += 1
        except Fail as e:
            print(f"FAIL {cid}: {oneline(e)}", flush=True)
            failed += 1
        except requests.RequestException as e:
            print(f"FAIL {cid}: the request failed: {oneline(e)}", flush=True)
            failed += 1
        except OSError as e:
            print(f"FAIL {cid}: the connection failed: {oneline(e)}", flush=True)
            failed += 1
        else:
            print(f"ok   {cid}", flush=True)
            passed += 1
    print(f"{passed} passed, {failed} failed, {skipped} skipped", flush=True)
    return failed


def reachable(client: Client) -> str | None:
    """None when the server answers at all; otherwise why not."""
    try:
        client.request("GET", client.metadata_url())
    except requests.RequestException as e:
        return oneline(e)
    return None


class Parser(argparse.ArgumentParser):
    """Usage errors exit 1: 2 says the server cannot be reached."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=(__doc__ or "").split("\n\n", 1)[0])
    parser.add_argument("--base-url", required=True, help="the server's AuthZEN base URL, e.g. http://127.0.0.1:8080")
    parser.add_argument("--suite", choices=("examples", "default"), help="examples (default) or default")
    parser.add_argument("--default-cases", type=Path, help=f"the default suite's cases (default: {DEFAULT_CASES})")
    parser.add_argument("--pdp-url", help="the policy_decision_point the metadata must name (default: --base-url)")
    parser.add_argument("--max-body", type=int, default=1024 * 1024, help="the server's --authzen-max-body in bytes")
    parser.add_argument("--max-batch", type=int, default=1000, help="the server's --max-batch")
    args = parser.parse_args(argv)

    suite = args.suite or ("default" if args.default_cases else "examples")
    try:
        client = Client(args.base_url)
    except ValueError as e:
        parser.error(str(e))
    if suite == "default":
        path = args.default_cases or DEFAULT_CASES
        try:
            cases = default_suite(path)
        except (OSError, ValueError) as e:
            print(f"cannot read the cases: {e}", file=sys.stderr)
            return 1
        ttl = None
    else:
        cases = EXAMPLES
        ttl = EXAMPLES_TTL_SECONDS

    why = reachable(client)
    if why is not None:
        print(f"cannot reach the server at {client.base}: {why}", file=sys.stderr)
        return 2
    run = Run(client, args.pdp_url or client.base, ttl, args.max_body, args.max_batch)
    return 1 if run_cases(cases, run) else 0


if __name__ == "__main__":
    sys.exit(main())
