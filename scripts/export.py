"""`make export`: runs a training-data export against the running `make dev` stack.

Logs in as the admin from DATA/dev.json through the front door, starts an export job
(POST /api/admin/exports), polls it until it is done, downloads valid.jsonl,
invalid.jsonl and manifest.json through their presigned URLs into a folder (default
DATA/exports/<job id>/), checks each file's size and SHA-256 against the job, and prints
the counts. Standard library only.

Variables: TB_DATA_DIR (.data), EXPORT_FORMAT (sharegpt | openai), EXPORT_FILTER (a JSON
object of review-list filters; default {"review": "confirmed"}), EXPORT_DIR (the folder),
EXPORT_TIMEOUT (seconds to wait, default 600).
"""

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fail(msg):
    sys.exit(f"make export: {msg}")


def call(base, method, path, token=None, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except urllib.error.URLError as e:
        fail(f"{base} is not answering ({e.reason}): is `make dev` running?")
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def error_of(body):
    if isinstance(body, dict):
        return body.get("error", {}).get("message", "")
    return ""


def main():
    data = os.environ.get("TB_DATA_DIR") or os.path.join(ROOT, ".data")
    try:
        with open(os.path.join(data, "dev.json")) as f:
            dev = json.load(f)
    except FileNotFoundError:
        fail(f"{data}/dev.json not found: start the stack with `make dev` first")
    base = dev["base_url"]
    fmt = os.environ.get("EXPORT_FORMAT") or "sharegpt"
    try:
        flt = json.loads(os.environ.get("EXPORT_FILTER") or '{"review": "confirmed"}')
    except ValueError:
        fail("EXPORT_FILTER is not a JSON object")
    timeout = int(os.environ.get("EXPORT_TIMEOUT") or "600")

    status, b = call(base, "POST", "/api/admin/login", body={
        "email": dev["admin_email"], "password": dev["admin_password"]})
    if status != 200:
        fail(f"admin login failed: HTTP {status} {error_of(b)}")
    token = b["token"]

    status, job = call(base, "POST", "/api/admin/exports", token,
                       {"filter": flt, "format": fmt},
                       {"idempotency-key": f"make-export-{uuid.uuid4()}"})
    if status not in (200, 202):
        fail(f"starting the export failed: HTTP {status} {error_of(job)}")
    job_id = job["id"]
    print(f"export {job_id}: {fmt}, filter {json.dumps(job['filter'])}", file=sys.stderr)

    deadline = time.time() + timeout
    while job["state"] in ("queued", "running"):
        if time.time() > deadline:
            fail(f"job {job_id} still {job['state']} after {timeout}s")
        time.sleep(0.5)
        status, job = call(base, "GET", f"/api/admin/exports/{job_id}", token)
        if status != 200:
            fail(f"reading job {job_id} failed: HTTP {status} {error_of(job)}")
    if job["state"] != "done":
        fail(f"job {job_id} {job['state']}: {job.get('error')}")

    out = os.environ.get("EXPORT_DIR") or os.path.join(data, "exports", job_id)
    os.makedirs(out, exist_ok=True)
    for f in job["files"]:
        with urllib.request.urlopen(f["url"], timeout=120) as r:
            body = r.read()
        if len(body) != f["bytes"] or hashlib.sha256(body).hexdigest() != f["sha256"]:
            fail(f"{f['name']} does not match the job's size and sha256")
        with open(os.path.join(out, f["name"]), "wb") as fh:
            fh.write(body)
    c = job["counts"]
    print(f"valid {c['valid']}  invalid {c['invalid']}  total {c['total']}"
          f"  skipped {c['skipped']}  ->  {out}")


if __name__ == "__main__":
    main()
