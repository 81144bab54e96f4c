"""Free-port selection: confined to $FAULTPLANE_PORT_RANGE when it is set."""

from __future__ import annotations

import socket

import pytest

from faultplane.demo.ports import RANGE_VARIABLE, PortAllocator, free_port


def test_ports_come_from_the_configured_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RANGE_VARIABLE, "41000-41400")
    allocate = PortAllocator()
    ports = [allocate() for _ in range(50)]

    assert all(41000 <= port < 41400 for port in ports)
    assert len(set(ports)) == 50


def test_a_port_taken_in_the_range_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        taken.listen()
        # A range of exactly one free port besides the taken one would make the choice
        # random between them: instead, check many picks never return the taken port.
        low = max(1024, port - 300)
        monkeypatch.setenv(RANGE_VARIABLE, f"{low}-{low + 600}")
        assert port not in {free_port() for _ in range(300)}


@pytest.mark.parametrize("value", ["20000", "a-b", "30000-20000", "80-90"])
def test_a_bad_range_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(RANGE_VARIABLE, value)
    with pytest.raises(ValueError, match=RANGE_VARIABLE):
        free_port()
