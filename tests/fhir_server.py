"""A small FHIR R4 server for tests, on 127.0.0.1, following the specification for what medmeta uses.

- search: ``GET /<Type>?_count=N`` returns a searchset Bundle with a ``next`` link until the last page;
- Bulk Data: ``GET /$export`` (also ``/Patient/$export``, ``/Group/<id>/$export``) with
  ``Prefer: respond-async`` answers 202 and ``Content-Location``; the status URL answers 202 with
  ``Retry-After`` while "in progress" (``polls`` times), then 200 with the manifest; the NDJSON
  files download from the manifest's URLs;
- ``POST /`` with a transaction Bundle validates every entry with ``fhir.resources`` R4B and answers
  a transaction-response Bundle, or 400 with an OperationOutcome;
- a bearer token, when set, is required everywhere (401 otherwise);
- :meth:`TestFhirServer.fail_next` makes the next requests fail with a chosen status (429, 5xx), with an
  optional ``Retry-After``, to test retries.

Use the ``fhir_server`` fixture of ``tests/conftest.py``.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import orjson
import uvicorn
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

FHIR_JSON = "application/fhir+json"


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type=FHIR_JSON, headers=headers)


def outcome(status: int, code: str, diagnostics: str) -> Response:
    doc = {"resourceType": "OperationOutcome",
           "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}]}
    return _json(doc, status)


class TestFhirServer:
    """State and behaviour of the test server; ``url`` is its base URL."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, dict]] = defaultdict(dict)
        self.token: str | None = None
        self.polls = 1  # status requests answered 202 before the export is complete
        self.retry_after = "0"
        self.export_errors: list[dict] = []  # OperationOutcomes the next export reports in its error file
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._failures: list[tuple[int, str | None]] = []
        self._jobs: dict[str, dict] = {}
        self.url = ""
        self.app = Starlette(routes=[
            Route("/", self.transaction, methods=["POST"]),
            Route("/_status/{job}", self.status),
            Route("/_files/{job}/{name}", self.download),
            Route("/$export", self.kickoff),
            Route("/Patient/$export", self.kickoff),
            Route("/Group/{group}/$export", self.kickoff),
            Route("/{rtype}", self.search),
        ], middleware=[Middleware(_Gate, server=self)])

    # -- test controls ---------------------------------------------------------------------------------
    def reset(self) -> None:
        self.resources.clear()
        self.token, self.polls, self.retry_after = None, 1, "0"
        self.export_errors = []
        self.requests.clear()
        self._failures.clear()
        self._jobs.clear()

    def load(self, resources: list[dict]) -> None:
        for r in resources:
            self.resources[r["resourceType"]][r["id"]] = r

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        self._failures += [(status, retry_after)] * times

    # -- interactions --------------------------------------------------------------------------------------
    async def search(self, request: Request) -> Response:
        rtype = request.path_params["rtype"]
        try:
            get_fhir_model_class(rtype)
        except (KeyError, ValueError):
            return outcome(404, "not-found", f"unknown resource type {rtype}")
        count = int(request.query_params.get("_count", "50"))
        offset = int(request.query_params.get("_offset", "0"))
        items = list(self.resources.get(rtype, {}).values())
        page = items[offset: offset + count]
        base = f"{self.url}/{rtype}"
        links = [{"relation": "self", "url": f"{base}?_count={count}&_offset={offset}"}]
        if offset + count < len(items):
            links.append({"relation": "next", "url": f"{base}?_count={count}&_offset={offset + count}"})
        return _json({"resourceType": "Bundle", "type": "searchset", "total": len(items), "link": links,
                      "entry": [{"fullUrl": f"{base}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                                for r in page]})

    async def kickoff(self, request: Request) -> Response:
        if request.headers.get("prefer") != "respond-async":
            return outcome(400, "invalid", "Prefer: respond-async is required")
        types = request.query_params.get("_type")
        wanted = types.split(",") if types else sorted(self.resources)
        job = uuid.uuid4().hex
        self._jobs[job] = {"types": wanted, "polls": 0, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        return Response(status_code=202, headers={"Content-Location": f"{self.url}/_status/{job}"})

    async def status(self, request: Request) -> Response:
        job = self._jobs.get(request.path_params["job"])
        if job is None:
            return outcome(404, "not-found", "no such export")
        if job["polls"] < self.polls:
            job["polls"] += 1
            return Response(status_code=202, headers={"Retry-After": self.retry_after, "X-Progress": "in progress"})
        jid = request.path_params["job"]
        output = [{"type": t, "url": f"{self.url}/_files/{jid}/{t}.ndjson", "count": len(self.resources[t])}
                  for t in job["types"] if self.resources.get(t)]
        errors = [{"type": "OperationOutcome", "url": f"{self.url}/_files/{jid}/errors.ndjson"}] \
            if self.export_errors else []
        return _json({"transactionTime": job["time"], "request": f"{self.url}/$export",
                      "requiresAccessToken": self.token is not None, "output": output, "error": errors})

    async def download(self, request: Request) -> Response:
        rtype = request.path_params["name"].removesuffix(".ndjson")
        items = self.export_errors if rtype == "errors" else self.resources.get(rtype, {}).values()
        body = b"".join(orjson.dumps(r) + b"\n" for r in items)
        return Response(body, media_type="application/fhir+ndjson")

    async def transaction(self, request: Request) -> Response:
        try:
            bundle = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return outcome(400, "structure", f"invalid JSON: {exc}")
        if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
            return outcome(400, "invalid", "expected a transaction Bundle")
        responses, accepted = [], []
        for i, entry in enumerate(bundle.get("entry") or []):
            r = entry.get("resource") or {}
            try:
                get_fhir_model_class(r.get("resourceType", "")).model_validate(r)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                return outcome(400, "invalid", f"entry {i}: {r.get('resourceType')}.{where}: {err['msg']}")
            except (KeyError, ValueError) as exc:
                return outcome(400, "invalid", f"entry {i}: {exc}")
            rid = r.get("id") or uuid.uuid4().hex
            existed = rid in self.resources[r["resourceType"]]
            accepted.append({**r, "id": rid})
            responses.append({"response": {"status": "200 OK" if existed else "201 Created",
                                           "location": f"{r['resourceType']}/{rid}/_history/1"}})
        self.load(accepted)
        return _json({"resourceType": "Bundle", "type": "transaction-response", "entry": responses})


class _Gate:
    """Logs requests, injects failures and checks the bearer token before any interaction."""

    def __init__(self, app, server: TestFhirServer) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        s = self.server
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        s.requests.append((scope["method"], scope["path"], headers))
        response = None
        if s._failures:
            status, retry_after = s._failures.pop(0)
            response = outcome(status, "transient" if status >= 429 else "processing", f"injected {status}")
            if retry_after is not None:
                response.headers["Retry-After"] = retry_after
        elif s.token and headers.get("authorization") != f"Bearer {s.token}":
            response = outcome(401, "login", "a valid bearer token is required")
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class RunningServer:
    """Runs a :class:`TestFhirServer` with uvicorn in a background thread on 127.0.0.1."""

    def __init__(self) -> None:
        self.server = TestFhirServer()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.server.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.uvicorn = uvicorn.Server(uvicorn.Config(self.server.app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> TestFhirServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.uvicorn.started and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(5)
        self.sock.close()
