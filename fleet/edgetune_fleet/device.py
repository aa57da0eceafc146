"""The device side: one JSON request line to the `edgetune serve` Unix socket, one answer line back."""

import json
import socket


class DeviceError(RuntimeError):
    """The device answered with an error, or could not be reached."""


def ask(path: str, request: dict, timeout: float = 120.0) -> dict:
    """Sends `request` to the `edgetune serve` socket at `path`; its answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(json.dumps(request).encode() + b"\n")
            buf = bytearray()
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
    except OSError as e:
        raise DeviceError(f"cannot reach edgetune serve at {path}: {e}") from e
    if not buf:
        raise DeviceError(f"edgetune serve at {path} closed the connection without an answer")
    answer = json.loads(buf)
    if "error" in answer:
        raise DeviceError(f"edgetune serve at {path}: {answer['error']}")
    return answer
