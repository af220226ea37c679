"""Drives tuspy 1.1.0 against tinydrop; run by tests/tus_clients.rs.

    .venv/bin/python tests/clients/tuspy_client.py --endpoint URL --file PATH
        [--name NAME] [--chunk BYTES] [--retries N] [--retry-delay SECONDS]
        [--store URL_STORAGE_FILE]

With --store, URLs are kept in a FileStorage (store_url=True): a new process
for the same file resumes the stored upload, as a real application would.

Prints one line per event on stdout, for the test to read:
    RESUME offset=N url=URL | URL url | PATCH offset=N | HEAD offset=N
    RESPONSE offset=N
    SAVED_AS name | STATUS saved|duplicate | SHA256 hex | DONE
    ERROR message (exit code 1)
"""

import argparse
import os
import sys
from urllib.parse import unquote

from tusclient import client
from tusclient.storage.filestorage import FileStorage


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def trace(uploader):
    """Prints every PATCH and HEAD, also those of tuspy's own retries."""
    do_request, get_offset = uploader._do_request, uploader.get_offset

    def traced_request():
        say("PATCH offset={}".format(uploader.offset))
        return do_request()

    def traced_offset():
        offset = get_offset()
        say("HEAD offset={}".format(offset))
        return offset

    uploader._do_request = traced_request
    uploader.get_offset = traced_offset


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--name")
    p.add_argument("--chunk", type=int)
    p.add_argument("--retries", type=int, default=0)
    p.add_argument("--retry-delay", type=float, default=1.0)
    p.add_argument("--store")
    a = p.parse_args()

    kwargs = dict(
        metadata={
            "filename": a.name or os.path.basename(a.file),
            "filetype": "application/octet-stream",
        },
        retries=a.retries,
        retry_delay=a.retry_delay,
    )
    if a.chunk:
        kwargs["chunk_size"] = a.chunk
    if a.store:
        kwargs["store_url"] = True
        kwargs["url_storage"] = FileStorage(a.store)

    c = client.TusClient(a.endpoint)
    # With a stored URL the constructor asks the server (HEAD) where it stands.
    uploader = c.uploader(a.file, **kwargs)
    if uploader.url:
        say("RESUME offset={} url={}".format(uploader.offset, uploader.url))
    else:
        uploader.set_url(uploader.create_url())
        uploader.offset = 0
        say("URL {}".format(uploader.url))
    trace(uploader)
    size = uploader.get_file_size()
    while uploader.offset < size:
        uploader.upload_chunk()
        say("RESPONSE offset={}".format(uploader.offset))
    headers = uploader.request.response_headers if uploader.request else {}
    if "tinydrop-saved-as" in headers:
        say("SAVED_AS {}".format(unquote(headers["tinydrop-saved-as"])))
        say("STATUS {}".format(headers.get("tinydrop-status")))
        say("SHA256 {}".format(headers.get("tinydrop-sha256")))
    say("DONE")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any failure as one line
        say("ERROR {}: {}".format(type(e).__name__, " ".join(str(e).split())))
        sys.exit(1)
