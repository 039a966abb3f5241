"""Drives one interactive `tads sql` session through a pseudo-terminal, as a person would:
a query, a bad query, a help query, then \\q. Prints the whole transcript (escape codes
stripped). Usage: pty_session.py TADS_BINARY ARGS..."""
import os
import pty
import re
import select
import sys
import time

argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.environ["TERM"] = "dumb"
    os.execv(argv[0], argv)

transcript = b""


def read_until(marker, start=0, timeout=60.0):
    """Reads until `marker` appears in the transcript after offset `start`."""
    global transcript
    end = time.time() + timeout
    while marker not in transcript[start:]:
        left = end - time.time()
        if left <= 0:
            sys.stderr.write("timed out waiting for %r; so far:\n%s\n" % (marker, transcript.decode("utf-8", "replace")))
            os.kill(pid, 9)
            sys.exit(1)
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            transcript += chunk


def send(line):
    os.write(fd, line.encode() + b"\r")


read_until(b"> ")
for line, marker in [
    ("SELECT count(*) AS n FROM telemetry;", b"row(s) fetched"),
    ("SELECT nope FROM telemetry;", b"rror"),
    ("SELECT name, kind FROM tads_help() WHERE name = 'pca_score';", b"row(s) fetched"),
]:
    start = len(transcript)
    send(line)
    read_until(marker, start)
    # The answer is followed by the next prompt.
    read_until(b"> ", start + transcript[start:].find(marker))
send("\\q")
_, status = os.waitpid(pid, 0)
try:
    while True:
        r, _, _ = select.select([fd], [], [], 0.2)
        if not r:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        transcript += chunk
except OSError:
    pass
text = transcript.decode("utf-8", "replace")
text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r", "")
print(text)
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
