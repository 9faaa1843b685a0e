#!/usr/bin/env python3
"""Steady submission load for the kill -9 test: THREADS clients send to RCPT over
STARTTLS + AUTH PLAIN until STOP_FILE exists, reconnecting whenever the server goes
away. Each message has a body of random length and content; "<Message-ID> <sha256>"
(the hash of the body's lines joined by LF) is appended to OUT/attempted before sending
and to OUT/accepted once the server answered 250 to the end of data.

    load.py HOST PORT USER PASSWORD RCPT OUT STOP_FILE [THREADS]
"""
import hashlib
import os
import random
import smtplib
import ssl
import sys
import threading
import time
import uuid

host, port, user, password, rcpt, out, stop = sys.argv[1:8]
threads = int(sys.argv[8]) if len(sys.argv) > 8 else 4
lock = threading.Lock()


def note(name, entry):
    with lock, open(os.path.join(out, name), "a") as f:
        f.write(entry + "\n")
        f.flush()


def client():
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    while not os.path.exists(stop):
        try:
            with smtplib.SMTP(host, int(port), timeout=10) as smtp:
                smtp.starttls(context=context)
                smtp.login(user, password)
                while not os.path.exists(stop):
                    message_id = "<%s@load.test>" % uuid.uuid4().hex
                    lines = [
                        "%032x" % random.getrandbits(128) * random.randint(1, 2)
                        for _ in range(random.randint(1, 300))
                    ]
                    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()
                    entry = "%s %s" % (message_id, digest)
                    note("attempted", entry)
                    message = (
                        "From: %s\r\nTo: %s\r\nSubject: load\r\nMessage-ID: %s\r\n\r\n"
                        "%s\r\n" % (user, rcpt, message_id, "\r\n".join(lines))
                    )
                    smtp.sendmail(user, [rcpt], message)
                    note("accepted", entry)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)


workers = [threading.Thread(target=client) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
