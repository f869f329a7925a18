"""The local stack's mail: an SNS HTTP endpoint that mails each notification to an SMTP sink.

moto delivers nothing to SNS email subscriptions, but it does POST to HTTP subscriptions. This
process is both ends of a real mail hop: the HTTP side receives SNS's JSON and sends it as an
email over SMTP; the SMTP side (aiosmtpd) receives it and stores it in a Maildir, which
`quarry mail` reads.
"""
from __future__ import annotations

import argparse
import asyncio
import mailbox
import smtplib
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

import orjson
import structlog
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox

from shared.logs import configure_logging

log = structlog.get_logger("quarry.mailsink")
SENDER = "quarry@localhost"


def read_mail(maildir: Path) -> list[dict[str, str]]:
    """Every stored email, oldest first: from, to, subject, date, body."""
    if not maildir.exists():
        return []
    box = mailbox.Maildir(maildir, create=False)
    messages = []
    # Maildir names start with the delivery time: "<seconds>.M<microseconds>P<pid>...".
    for key in sorted(box.keys(), key=_delivery_order):
        message = box[key]
        payload = message.get_payload(decode=True)
        body = payload.decode(errors="replace") if isinstance(payload, bytes) else str(message.get_payload())
        messages.append({"from": message["From"], "to": message["To"], "subject": message["Subject"],
                         "date": message["Date"], "body": body})
    return messages


def _delivery_order(key: str) -> tuple[int, int]:
    seconds, _, rest = key.partition(".")
    micros = rest[1:].split("P", 1)[0] if rest.startswith("M") else "0"
    return int(seconds) if seconds.isdigit() else 0, int(micros) if micros.isdigit() else 0


def _send(smtp_port: int, recipient: str, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, recipient, subject
    message["Date"] = formatdate(localtime=False)
    message.set_content(body)
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
        smtp.send_message(message)


def _id_line(body: str) -> str | None:
    """Quarry's notices end with 'Notification id: <id>' (moto's HTTP delivery drops attributes)."""
    last = body.rstrip().rsplit("\n", 1)[-1]
    return last.split(": ", 1)[1].strip() if last.startswith("Notification id: ") else None


def _first_time(seen: Path | None, notice_id: str) -> bool:
    """Record the id; False if it was recorded before (kept on disk, so across restarts)."""
    if seen is None:
        return True
    known = set(seen.read_text().split()) if seen.exists() else set()
    if notice_id in known:
        return False
    with seen.open("a") as out:
        out.write(notice_id + "\n")
    return True


def build_app(*, smtp_port: int, recipient: str, seen: Path | None = None) -> web.Application:
    async def sns(request: web.Request) -> web.Response:
        try:
            envelope = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.Response(status=400, text="expected SNS JSON")
        kind = envelope.get("Type", request.headers.get("x-amz-sns-message-type"))
        if kind == "SubscriptionConfirmation":
            log.info("subscription_confirmation_received", topic=envelope.get("TopicArn"))
            return web.Response(text="ok")
        subject = envelope.get("Subject") or "Quarry notification"
        # A publisher that crashed after publishing sends the same notice again with the same id:
        # like a mail system de-duplicating on Message-ID, the sink mails each id once.
        notice_id = (envelope.get("MessageAttributes", {}).get("quarry_notification_id", {}).get("Value")
                     or _id_line(envelope.get("Message", "")))
        if notice_id and not _first_time(seen, notice_id):
            log.info("notification_duplicate_dropped", notification_id=notice_id)
            return web.Response(text="ok")
        await asyncio.get_running_loop().run_in_executor(None, _send, smtp_port, recipient, subject,
                                                         envelope.get("Message", ""))
        log.info("notification_mailed", subject=subject, notification_id=notice_id)
        return web.Response(text="ok")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/sns", sns)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m infra.local_stack.mailsink", description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--smtp-port", type=int, required=True)
    parser.add_argument("--maildir", type=Path, required=True)
    parser.add_argument("--recipient", default="you@example.com")
    args = parser.parse_args()
    configure_logging("INFO")
    for sub in ("tmp", "new", "cur"):  # a Maildir's three folders; Maildir() skips them if the root exists
        (args.maildir / sub).mkdir(parents=True, exist_ok=True)
    controller = Controller(Mailbox(str(args.maildir)), hostname="127.0.0.1", port=args.smtp_port)
    controller.start()
    try:
        web.run_app(build_app(smtp_port=args.smtp_port, recipient=args.recipient,
                              seen=args.maildir.parent / "notification-ids"), host="127.0.0.1",
                    port=args.http_port, print=None, access_log=None)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
