"""A real SMTP server for muster's tests (aiosmtpd): accepts every message and prints each as
one JSON line on standard output ({"mail_from", "rcpt_tos", "data"}). The first line printed is
{"port": N}, the port it listens on (127.0.0.1; --port chooses it, 0 picks a free one).
"""

import argparse
import asyncio
import json
import sys

from aiosmtpd.smtp import SMTP


class Sink:
    def __init__(self, refuse):
        # Recipients refused (550) before any is accepted: a permanent refusal to retry.
        self.refuse = refuse

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.refuse > 0:
            self.refuse -= 1
            return "550 5.1.1 mailbox unavailable (test refusal)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        print(
            json.dumps(
                {
                    "mail_from": envelope.mail_from,
                    "rcpt_tos": envelope.rcpt_tos,
                    "data": envelope.content.decode("utf-8", "replace"),
                }
            ),
            flush=True,
        )
        return "250 OK"


async def main(port, refuse):
    loop = asyncio.get_running_loop()
    sink = Sink(refuse)
    server = await loop.create_server(lambda: SMTP(sink), "127.0.0.1", port)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--refuse", type=int, default=0, help="refuse this many recipients first")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.port, args.refuse))
    except KeyboardInterrupt:
        sys.exit(0)
