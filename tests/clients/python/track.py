"""Xsolla's order tracking with centrifuge-python, run unmodified against order-status.

The Python equivalent of the guide's centrifuge-js code (docs/centrifuge-protocol.md
§14): `data` with the player's JWT, client-level `on_publication`, `history` on
`on_subscribed`.

    python3 track.py ws://127.0.0.1:8081/connection/websocket [deadline-ms]

Environment: AUTH_JWT (sent as data.auth), USER_EXTERNAL_ID (default u1), PROJECT_ID
(default 42), TRACK_DEADLINE_MS (default 5 min). Prints the same lines as track.js:
    subscribed <channel> | history <order_id> <status> | live <order_id> <status>
    history-error <code> <message> | error <json> | disconnected <code> <reason>
and exits 0 after `disconnected` (the deadline calls disconnect(): code 0).
"""

import asyncio
import json
import os
import sys

# The pinned packages live beside this file (deploy/test.sh: pip install --target .deps).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".deps"))
sys.stdout.reconfigure(line_buffering=True)  # one line per event reaches a pipe at once

try:
    from centrifuge import Client, ClientEventHandler, ReplyError, StreamPosition
except ImportError as e:
    print(f"track.py: {e}\nInstall the pinned clients first: deploy/test.sh (or: pip install "
          "--target tests/clients/python/.deps --no-deps -r tests/clients/python/requirements.txt)",
          file=sys.stderr)
    sys.exit(2)


# ---- From here on: the guide's code, with its constants read from the environment. ----
class Events(ClientEventHandler):
    client = None
    done = None

    async def on_subscribed(self, ctx):
        print("subscribed", ctx.channel)
        asyncio.ensure_future(self.history(ctx.channel))  # never await SDK calls in a callback

    async def history(self, ch):
        try:
            res = await self.client.history(ch, limit=-1, since=StreamPosition(0, ""))
        except ReplyError as err:
            print("history-error", err.code, err.message)
            return
        for p in res.publications:
            print("history", p.data["order_id"], p.data["status"])

    async def on_publication(self, ctx):
        print("live", ctx.pub.data["order_id"], ctx.pub.data["status"])

    async def on_disconnected(self, ctx):
        print("disconnected", ctx.code, ctx.reason)
        self.done.set()

    async def on_error(self, ctx):
        print("error", json.dumps({"code": ctx.code, "error": str(ctx.error)}))


async def main():
    url = sys.argv[1] if len(sys.argv) > 1 else None
    if not url:
        print("usage: python3 track.py ws://HOST:PORT/connection/websocket [deadline-ms]",
              file=sys.stderr)
        sys.exit(2)
    deadline_ms = int(sys.argv[2] if len(sys.argv) > 2 else
                      os.environ.get("TRACK_DEADLINE_MS", 5 * 60 * 1000))
    ev = Events()
    ev.done = asyncio.Event()
    ev.client = Client(url, events=ev, data={
        "user_external_id": os.environ.get("USER_EXTERNAL_ID", "u1"),
        "auth": os.environ.get("AUTH_JWT", ""),
        "project_id": int(os.environ.get("PROJECT_ID", "42"))})
    await ev.client.connect()
    try:
        await asyncio.wait_for(ev.done.wait(), deadline_ms / 1000)
    except asyncio.TimeoutError:
        await ev.client.disconnect()


asyncio.run(main())
