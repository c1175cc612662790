"""Replica discovery: EndpointSlice JSON (the real API's shape), static lists, and the
kubernetes client against a fake API server that speaks the real API's JSON."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from services.coordinator.discovery import (
    EndpointSliceReplicas,
    StaticReplicas,
    targets_from_slices,
)
from spar.errors import InvalidArgument, Unavailable


def endpoint_slice(name: str, addresses: list[tuple[str, bool | None]], port: int = 50051,
                   terminating: bool = False) -> dict[str, Any]:  # fmt: skip
    """An EndpointSlice exactly as GET /apis/discovery.k8s.io/v1/... returns it."""
    endpoints = []
    for i, (ip, ready) in enumerate(addresses):
        conditions: dict[str, Any] = {"serving": True, "terminating": terminating}
        if ready is not None:
            conditions["ready"] = ready
        endpoints.append(
            {
                "addresses": [ip],
                "conditions": conditions,
                "nodeName": "node-1",
                "targetRef": {"kind": "Pod", "name": f"spar-actor-{i}", "namespace": "spar",
                              "uid": f"uid-{i}"},
            }
        )  # fmt: skip
    return {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {
            "name": name,
            "namespace": "spar",
            "labels": {"kubernetes.io/service-name": "spar-actor-headless",
                       "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
            "resourceVersion": "12345",
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "grpc", "protocol": "TCP", "port": port}],
    }  # fmt: skip


def test_ready_endpoints_only() -> None:
    slices = [
        endpoint_slice("a", [("10.0.0.1", True), ("10.0.0.2", False), ("10.0.0.3", None)]),
        endpoint_slice("b", [("10.0.1.1", True)], terminating=True),
    ]
    assert targets_from_slices(slices, "grpc") == ["10.0.0.1:50051", "10.0.0.3:50051"]
    assert targets_from_slices(slices, 6000) == ["10.0.0.1:6000", "10.0.0.3:6000"]
    assert targets_from_slices(slices, "metrics") == []


async def test_static() -> None:
    assert await StaticReplicas(["b:1", "a:2", "b:1"]).targets() == ["a:2", "b:1"]
    with pytest.raises(InvalidArgument):
        StaticReplicas(["nohost"])


class FakeApiServer:
    """Answers EndpointSlice list calls like the Kubernetes API server."""

    def __init__(self) -> None:
        self.slices: list[dict[str, Any]] = []
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                url = urlparse(self.path)
                selector = parse_qs(url.query).get("labelSelector", [""])[0]
                if url.path != "/apis/discovery.k8s.io/v1/namespaces/spar/endpointslices":
                    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "NotFound", "code": 404}  # fmt: skip
                    self._send(404, body)
                    return
                svc = selector.removeprefix("kubernetes.io/service-name=")
                label = "kubernetes.io/service-name"
                items = [s for s in outer.slices if s["metadata"]["labels"][label] == svc]
                doc = {"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                       "metadata": {"resourceVersion": "12345"}, "items": items}  # fmt: skip
                self._send(200, doc)

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        # A short poll: shutdown() waits for the serving loop's next poll (0.5 s by default).
        serve = {"poll_interval": 0.05}
        threading.Thread(target=self.httpd.serve_forever, kwargs=serve, daemon=True).start()


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer()
    yield server
    server.httpd.shutdown()


def client_for(url: str) -> Any:
    from kubernetes import client

    config = client.Configuration()
    config.host = url
    return client.ApiClient(config)


async def test_kubernetes_discovery_against_fake_api(api: FakeApiServer) -> None:
    api.slices = [
        endpoint_slice("s1", [("10.1.0.5", True), ("10.1.0.6", False)]),
        endpoint_slice("s2", [("10.1.0.7", True)]),
    ]
    source = EndpointSliceReplicas("spar", "spar-actor-headless", "grpc", client_for(api.url))
    assert await source.targets() == ["10.1.0.5:50051", "10.1.0.7:50051"]
    query = parse_qs(urlparse(api.requests[0]).query)
    assert query["labelSelector"] == ["kubernetes.io/service-name=spar-actor-headless"]
    api.slices.append(endpoint_slice("s3", [("10.1.0.8", True)]))
    assert len(await source.targets()) == 3, "every call lists afresh"


async def test_kubernetes_discovery_errors_are_unavailable(api: FakeApiServer) -> None:
    source = EndpointSliceReplicas("other-ns", "svc", "grpc", client_for(api.url))
    with pytest.raises(Unavailable, match="listing EndpointSlices of other-ns/svc failed"):
        await source.targets()
