"""Which HTTP ingress `feira up` runs, and the socket the direct one shares."""

from __future__ import annotations

import socket

import pytest

from deployments.http_ingress import reuse_port_socket
from feira.ingress import choose_ingress
from feira.settings import Settings


def test_direct_ingress_needs_no_haproxy_and_says_how_many_processes() -> None:
    choice = choose_ingress(Settings(ingress="direct", http_ingress_processes=3))
    assert choice.direct is True
    assert choice.haproxy is False
    assert choice.env() == {}
    assert "3 uvicorn processes" in choice.reason


def test_serve_ingresses_are_not_direct() -> None:
    assert choose_ingress(Settings(ingress="proxy")).direct is False


def test_settings_refuse_an_unknown_ingress() -> None:
    with pytest.raises(ValueError, match="ingress"):
        Settings(ingress="nginx")  # type: ignore[arg-type]


def test_processes_share_one_port() -> None:
    first = reuse_port_socket("127.0.0.1", 0)
    port = first.getsockname()[1]
    second = reuse_port_socket("127.0.0.1", port)
    try:
        assert second.getsockname()[1] == port
        assert second.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    finally:
        first.close()
        second.close()
