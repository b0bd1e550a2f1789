"""Test-wide fixtures: no test may reach the network."""
import ipaddress
import socket

import pytest

_real_connect, _real_connect_ex = socket.socket.connect, socket.socket.connect_ex


def _is_loopback(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX paths are local
        return True
    host = address[0]
    if host in ('localhost', ''):
        return True
    try:
        return ipaddress.ip_address(host.split('%')[0]).is_loopback
    except ValueError:
        return False  # a host name other than localhost would need DNS and the network


class NetworkAccessError(RuntimeError):
    pass


def _guarded(real):
    def connect(self, address):
        if not _is_loopback(address):
            raise NetworkAccessError(f'test tried to connect to {address!r}: tests must not use the network '
                                     '(ship or generate the data, or mock the download)')
        return real(self, address)
    return connect


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Make every connection to a non-loopback address fail loudly."""
    monkeypatch.setattr(socket.socket, 'connect', _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, 'connect_ex', _guarded(_real_connect_ex))
    yield
