"""Local stand-ins for the platforms: a recording HTTP server and a tiny SMTP server.

The real slack_sdk, twilio and requests clients talk to these over TCP on
127.0.0.1, so the tests check what actually goes over the wire.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


@dataclass
class Reply:
    status: int = 200
    body: object = field(default_factory=lambda: {"ok": True})
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to stall before answering (to provoke client timeouts)


class FakeHTTP:
    """Records every request; answers with queued replies, then with `default` (a Reply or a function of Seen)."""

    def __init__(self, default=None):
        self.requests: list[Seen] = []
        self.replies: deque[Reply] = deque()
        self.default = default or Reply()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _handle(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()},
                            {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                fake.requests.append(seen)
                reply = fake.replies.popleft() if fake.replies else fake.default
                if callable(reply):
                    reply = reply(seen)
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            do_GET = do_POST = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    data: bytes


class FakeSMTP:
    """Enough SMTP (RFC 5321) for smtplib: EHLO, MAIL, RCPT, DATA, QUIT. `refuse` makes RCPT answer 550."""

    def __init__(self):
        self.mails: list[Mail] = []
        self.refuse: set[str] = set()
        fake = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")

            def handle(self):
                self.reply("220 fake ESMTP")
                sender, rcpts = "", []
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    cmd = line.decode().strip()
                    verb = cmd.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250-fake\r\n250 8BITMIME" if verb == "EHLO" else "250 fake")
                    elif verb == "MAIL":
                        sender, rcpts = cmd.split(":", 1)[1].split()[0].strip("<>"), []
                        self.reply("250 OK")
                    elif verb == "RCPT":
                        addr = cmd.split(":", 1)[1].strip().strip("<>")
                        if addr in fake.refuse:
                            self.reply("550 no such user")
                        else:
                            rcpts.append(addr)
                            self.reply("250 OK")
                    elif verb == "DATA":
                        self.reply("354 go ahead")
                        data = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data += chunk
                        fake.mails.append(Mail(sender, rcpts, data))
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:  # RSET, NOOP, ...
                        self.reply("250 OK")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeSlack(FakeHTTP):
    """Slack's Web API as far as we use it: chat.postMessage and chat.update, with the messages kept.

    `messages[(channel, ts)]` is each message as it stands now (text, blocks, thread_ts, updates);
    a DM to a user id (U...) lands in the conversation D<user>, as Slack answers with the DM's id.
    chat.update of an unknown message answers `message_not_found`, as Slack does.
    """

    def __init__(self):
        self.messages: dict[tuple[str, str], dict] = {}
        self._counter = 0
        self._lock = threading.Lock()
        super().__init__(self._answer)

    @staticmethod
    def body_of(seen: Seen) -> dict:
        if seen.headers.get("content-type", "").startswith("application/x-www-form"):
            body = seen.form
            return {k: json.loads(v) if k == "blocks" else v for k, v in body.items()}
        return seen.json

    def _answer(self, seen: Seen) -> Reply:
        body = self.body_of(seen)
        method = seen.path.rsplit("/", 1)[-1]
        with self._lock:
            if method == "chat.postMessage":
                channel = body["channel"]
                if channel.startswith("U"):
                    channel = "D" + channel[1:]
                self._counter += 1
                ts = f"{1700000000 + self._counter}.{self._counter:06d}"
                self.messages[(channel, ts)] = {"text": body.get("text"), "blocks": body.get("blocks"),
                                                "thread_ts": body.get("thread_ts"), "updates": 0}
                return Reply(body={"ok": True, "channel": channel, "ts": ts})
            if method == "chat.update":
                key = (body["channel"], body["ts"])
                if key not in self.messages:
                    return Reply(body={"ok": False, "error": "message_not_found"})
                stored = self.messages[key]
                stored.update(text=body.get("text"), blocks=body.get("blocks"), updates=stored["updates"] + 1)
                return Reply(body={"ok": True, "channel": key[0], "ts": key[1], "text": body.get("text")})
        return Reply(404, {"ok": False, "error": "unknown_method"})

    def calls(self, method: str) -> list[Seen]:
        return [r for r in self.requests if r.path.endswith("/" + method)]


class LimitedRobot(FakeHTTP):
    """A group robot that enforces its platform's limits as the platform does: beyond `messages` in any
    `seconds` (sliding, by arrival time) it answers with the platform's "too fast" reply instead of posting.

    `posted` is what got through, in arrival order; `refused` what was turned away; `peak` the most messages
    it ever saw in one window, counting refused ones, so a test can show the limit was never even approached.
    """

    def __init__(self, limits: list[tuple[int, float]], too_fast: Reply, ok: Reply | None = None):
        self.limits = limits
        self.too_fast = too_fast
        self.ok = ok or Reply(200, {"errcode": 0, "errmsg": "ok"})
        self.arrivals: list[float] = []
        self.posted: list[tuple[float, Seen]] = []
        self.refused: list[tuple[float, Seen]] = []
        self.peak: dict[tuple[int, float], int] = {limit: 0 for limit in limits}
        self._lock = threading.Lock()
        super().__init__(self._answer)

    def _answer(self, seen: Seen) -> Reply:
        with self._lock:
            now = time.monotonic()
            self.arrivals.append(now)
            over = False
            for limit in self.limits:
                count, window = limit
                in_window = sum(1 for t in self.arrivals if now - t < window)
                self.peak[limit] = max(self.peak[limit], in_window)
                over = over or in_window > count
            (self.refused if over else self.posted).append((now, seen))
        return self.too_fast if over else self.ok
