#!/usr/bin/env python3
"""Steady submission load for the kill -9 test: THREADS clients send to RCPT over
STARTTLS + AUTH PLAIN until STOP_FILE exists, reconnecting whenever the server goes
away. Each Message-ID is appended to OUT/attempted before sending and to OUT/accepted
once the server answered 250 to the end of data.

    load.py HOST PORT USER PASSWORD RCPT OUT STOP_FILE [THREADS]
"""
import os
import smtplib
import ssl
import sys
import threading
import time
import uuid

host, port, user, password, rcpt, out, stop = sys.argv[1:8]
threads = int(sys.argv[8]) if len(sys.argv) > 8 else 4
lock = threading.Lock()


def note(name, message_id):
    with lock, open(os.path.join(out, name), "a") as f:
        f.write(message_id + "\n")
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
                    note("attempted", message_id)
                    body = (
                        "From: %s\r\nTo: %s\r\nSubject: load\r\nMessage-ID: %s\r\n\r\n"
                        "kill -9 test\r\n" % (user, rcpt, message_id)
                    )
                    smtp.sendmail(user, [rcpt], body)
                    note("accepted", message_id)
        except (OSError, smtplib.SMTPException):
            time.sleep(0.05)


workers = [threading.Thread(target=client) for _ in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
