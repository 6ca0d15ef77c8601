#!/usr/bin/env python3
"""Opens N authenticated, idle PostgreSQL connections to HOST:PORT (token as
password, cleartext auth as the Sluice agent asks for), holds them until
stdin closes, then exits. Prints "ready N" once all are up."""
import socket, struct, sys

def msg(tag, body):
    return tag + struct.pack("!I", len(body) + 4) + body

def startup(user, db):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", db)):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body

def read_until_ready(s):
    buf = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed: %r" % buf[-200:])
        buf += chunk
        while len(buf) >= 5:
            tag = buf[0:1]
            (n,) = struct.unpack("!I", buf[1:5])
            if len(buf) < n + 1:
                break
            body, buf = buf[5:n + 1], buf[n + 1:]
            if tag == b"R" and struct.unpack("!I", body[:4])[0] == 3:
                return "password"
            if tag == b"E":
                raise RuntimeError(body.decode(errors="replace"))
            if tag == b"Z":
                return "ready"

def main():
    host, port, db, token, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.sendall(startup("bench", db))
        if read_until_ready(s) == "password":
            s.sendall(msg(b"p", token.encode() + b"\0"))
            read_until_ready(s)
        conns.append(s)
    print("ready", len(conns), flush=True)
    sys.stdin.read()
    for s in conns:
        try:
            s.sendall(msg(b"X", b""))
            s.close()
        except OSError:
            pass

if __name__ == "__main__":
    main()
