"""A TCP proxy of the tests' own, put between the service and a dependency (PostgreSQL,
Redis, the S3 store) to make that dependency fail on demand:

- cut(): every open connection is closed and new ones are refused (the listening socket
  is closed: connection refused), as when the server is stopped.
- pause(): nothing is forwarded either way, open or new connections, until restore();
  what was sent meanwhile is then delivered. A server stalled for a moment.
- black_hole(): new connections are accepted and never answered, as a server behind a
  firewall that drops packets, or one that hangs. Open connections are closed: on a real
  network TCP keepalives and tcp_user_timeout find such a peer gone; on loopback the
  proxy's own kernel acknowledges everything, so nothing could.
- restore(): forward again, on the same port.

`faulted` is set once a connection or data arrived while a fault was on, so a test can
await "the service felt the fault" instead of sleeping.
"""

import select
import socket
import threading

PASS, CUT, PAUSE, BLACK_HOLE = "pass", "cut", "pause", "black hole"


class FaultProxy:
    def __init__(self, target_host, target_port, host="127.0.0.1"):
        self.target = (target_host, int(target_port))
        self.host = host
        self.mode = PASS
        self.faulted = threading.Event()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._pairs = set()  # (client socket, upstream socket or None)
        self._held = set()  # black-holed client sockets
        self._stopped = False
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self._start_accepting()

    # ---- faults -------------------------------------------------------------------------

    def cut(self):
        with self._lock:
            self.mode = CUT
            self._close_listener()
            self._drop_all()

    def pause(self):
        with self._lock:
            self.mode = PAUSE
            self._flowing.clear()

    def black_hole(self):
        with self._lock:
            self.mode = BLACK_HOLE
            self._drop_all()

    def restore(self):
        with self._lock:
            was = self.mode
            self.mode = PASS
            self._flowing.set()
            for sock in self._held:
                _close(sock)
            self._held.clear()
            if was == CUT:
                self._listener = self._listen(self.port)
                self._start_accepting()
            self.faulted.clear()

    def stop(self):
        with self._lock:
            self._stopped = True
            self._flowing.set()
            self._close_listener()
            self._drop_all()
            for sock in self._held:
                _close(sock)
            self._held.clear()

    # ---- plumbing -----------------------------------------------------------------------

    def _listen(self, port):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        sock.listen(128)
        return sock

    def _start_accepting(self):
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True, name="faultproxy").start()

    def _close_listener(self):
        if self._listener is not None:
            # shutdown wakes the thread blocked in accept(); close alone does not.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            _close(self._listener)
            self._listener = None

    def _drop_all(self):
        for client, upstream in list(self._pairs):
            _close(client)
            if upstream is not None:
                _close(upstream)
        self._pairs.clear()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                if self._stopped:
                    _close(client)
                    return
                if self.mode == BLACK_HOLE:
                    self._held.add(client)
                    self.faulted.set()
                    continue
                if self.mode == PAUSE:
                    self.faulted.set()
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        self._flowing.wait()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _close(client)
            return
        upstream.settimeout(None)
        pair = (client, upstream)
        with self._lock:
            if self.mode in (CUT, BLACK_HOLE) or self._stopped:
                _close(client)
                _close(upstream)
                return
            self._pairs.add(pair)
        try:
            self._pump(client, upstream)
        finally:
            with self._lock:
                self._pairs.discard(pair)
            _close(client)
            _close(upstream)

    def _pump(self, client, upstream):
        peers = {client: upstream, upstream: client}
        while True:
            try:
                readable, _, _ = select.select(list(peers), [], [], 0.5)
            except (OSError, ValueError):  # a socket was closed by a fault
                return
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                if not self._flowing.is_set():
                    self.faulted.set()
                    self._flowing.wait()
                if self.mode in (CUT, BLACK_HOLE):
                    return
                try:
                    peers[sock].sendall(data)
                except OSError:
                    return


def _close(sock):
    try:
        sock.close()
    except OSError:
        pass
