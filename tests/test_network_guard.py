"""No test reaches the network: pytest-socket (pyproject.toml) refuses every non-loopback connection."""
import socket
import threading

import pytest
from pytest_socket import SocketConnectBlockedError


def test_outside_connection_fails_loudly():
    with pytest.raises(SocketConnectBlockedError):
        socket.create_connection(('93.184.216.34', 80), timeout=1)


def test_dns_names_are_refused_too():
    s = socket.socket()
    with pytest.raises(SocketConnectBlockedError):
        s.connect(('example.org', 443))
    s.close()


def test_loopback_still_works():
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(1)
    port = server.getsockname()[1]
    t = threading.Thread(target=lambda: server.accept()[0].close())
    t.start()
    socket.create_connection(('127.0.0.1', port), timeout=5).close()
    t.join(5)
    server.close()


def test_torchvision_download_offline_says_so(tmp_path):
    # offline (no DNS) or online behind the guard, the download fails: the error must say so, not "files not found"
    from kdnotes.data import torchvision_dataset
    for name in ('mnist', 'cifar10'):
        with pytest.raises(ConnectionError, match='offline'):
            torchvision_dataset(name, root=tmp_path / name, download=True)
