"""Bootstraps the local stack through the worker's front door (scripts/dev.sh runs it).

Creates, or reuses on later runs: a provider (the mock upstream, or a real provider when
its key is in the environment), the demo model, a free demo plan, a published
catalogue, and a demo member subscribed to the plan with an API key. Only the key's hash
is kept server-side, so the key itself is kept in the data folder (demo.json) and reused
as long as it still works. Writes dev.json. Standard library only.

Usage: python dev_bootstrap.py DATA_DIR BASE_URL ADMIN_URL MOCK_URL DYNAMO_URL
Admin and demo credentials come from the environment (dev.sh loads secrets.env).
"""

import json
import secrets
import os
import sys
import urllib.error
import urllib.request

DATA, BASE, ADMIN_URL, MOCK_URL, DYNAMO_URL = sys.argv[1:6]
ADMIN_EMAIL = os.environ["ADMIN_EMAIL"]
ADMIN_PASSWORD = os.environ["ADMIN_PASSWORD"]
DEMO_EMAIL = "demo@tollbooth.local"
DEMO_PASSWORD = os.environ["DEMO_PASSWORD"]
PLAN_ID = "demo-free"

# (env var, provider kind, base URL, upstream model) for real providers, first wins.
REAL_PROVIDERS = [
    ("OPENAI_API_KEY", "openai", "https://api.openai.com/v1", "gpt-4o-mini"),
    ("DEEPSEEK_API_KEY", "openai", "https://api.deepseek.com/v1", "deepseek-chat"),
    ("ANTHROPIC_API_KEY", "anthropic", "https://api.anthropic.com/v1", "claude-3-5-haiku-latest"),
    ("GEMINI_API_KEY", "gemini", "https://generativelanguage.googleapis.com/v1beta", "gemini-2.0-flash"),
]


def log(msg):
    print(f"\033[1m[tollbooth]\033[0m {msg}", file=sys.stderr)


def call(method, path, token=None, body=None, base=BASE):
    """Returns (status, parsed JSON or None). Never prints bodies (they may hold secrets)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("content-type", "application/json")
    if token:
        req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def must(expected, status, body, what):
    if status not in expected:
        msg = (body or {}).get("error", {}).get("message", "") if isinstance(body, dict) else ""
        sys.exit(f"bootstrap: {what} failed: HTTP {status} {msg}")
    if isinstance(body, dict) and body.get("edge", {}).get("synced") is False:
        sys.exit(f"bootstrap: {what}: the edge did not accept the push: {body['edge'].get('errors')}")
    return body


def upsert(admin, collection, ident, body, what):
    """PUT to update what exists, POST to create what does not."""
    status, b = call("PUT", f"/api/admin/{collection}/{ident}", admin, body)
    if status == 404:
        status, b = call("POST", f"/api/admin/{collection}", admin, body)
    must([200, 201], status, b, what)


def provider_spec():
    for var, kind, base_url, model in REAL_PROVIDERS:
        key = os.environ.get(var, "").strip()
        if key:
            return var, kind, base_url, model, key
    return None, "openai", f"{MOCK_URL}/v1", "gpt-4o-mini", "sk-mock-upstream"


def main():
    var, kind, base_url, upstream_model, secret = provider_spec()
    demo_model = upstream_model
    admin, admin_password = admin_login()

    # Provider and model are upserted every run: the mock's port or the chosen real
    # provider may differ from the last run. Plan and member are created once.
    log(f"provider: {'the mock upstream' if var is None else var.split('_')[0].lower()} ({base_url})")
    upsert(admin, "providers", "demo",
           {"id": "demo", "kind": kind, "base_url": base_url, "credentials": [{"secret": secret}]}, "provider")
    model = {"name": demo_model, "deployments": [{"provider": "demo", "model": upstream_model}],
             "price": {"input_per_mtok": 150_000, "output_per_mtok": 600_000}}
    upsert(admin, "models", demo_model, model, "model")

    status, b = call("GET", "/api/admin/plans", admin)
    plans = must([200], status, b, "list plans")["data"]
    if not any(p.get("id") == PLAN_ID for p in plans):
        log("creating the free demo plan (1M tokens a month)")
        status, b = call("POST", "/api/admin/plans", admin,
                         {"id": PLAN_ID, "name": "Demo (free)", "period": "month",
                          "allowance_amount": 1_000_000, "allowance_unit": "tokens"})
        must([201], status, b, "plan")
    status, b = call("POST", "/api/admin/catalogue/publish", admin)
    version = must([200, 201], status, b, "catalogue publish").get("version")
    log(f"catalogue {version} published")

    state_path = os.path.join(DATA, "demo.json")
    state = {}
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
    key = state.get("demo_key")
    if key and call("GET", "/v1/models", key)[0] == 200:
        log("reusing the demo member and key from the last run")
    else:
        status, b = call("POST", "/api/auth/signup", body={"email": DEMO_EMAIL, "password": DEMO_PASSWORD})
        if status == 409:
            status, b = call("POST", "/api/auth/login", body={"email": DEMO_EMAIL, "password": DEMO_PASSWORD})
        member = must([200, 201], status, b, "demo member signup/login")
        token = member["token"]
        status, b = call("GET", "/api/me", token)
        sub = (must([200], status, b, "demo member profile") or {}).get("subscription") or {}
        if sub.get("plan_id") != PLAN_ID or sub.get("status") not in (None, "active"):
            status, b = call("POST", "/api/me/subscription", token, {"plan_id": PLAN_ID})
            must([200, 201], status, b, "demo subscription")
        status, b = call("POST", "/api/me/keys", token, {"name": "demo"})
        key = must([201], status, b, "demo key")["key"]
        log("created the demo member, subscription and key")
        state = {"demo_email": DEMO_EMAIL, "demo_key": key}
        write_private(state_path, state)

    dev = {
        "base_url": BASE,
        "admin_url": ADMIN_URL,
        "mock_url": MOCK_URL if var is None else None,
        "dynamodb_url": DYNAMO_URL,
        "admin_email": ADMIN_EMAIL,
        "admin_password": admin_password,
        "demo_email": DEMO_EMAIL,
        "demo_password": DEMO_PASSWORD,
        "demo_key": key,
        "demo_model": demo_model,
        "provider": "mock" if var is None else var.split("_")[0].lower(),
        "s3_url": os.environ.get("TB_S3_URL"),
        "export_bucket": os.environ.get("TB_EXPORT_BUCKET"),
    }
    write_private(os.path.join(DATA, "dev.json"), dev)


def admin_login():
    """Logs the admin in. The bootstrap password (ADMIN_PASSWORD) must be changed at the
    first login: the script replaces it with a generated one, kept in DATA/admin.json
    (mode 600) and in dev.json, and uses that one from then on."""
    path = os.path.join(DATA, "admin.json")
    current = ADMIN_PASSWORD
    if os.path.exists(path):
        with open(path) as f:
            current = json.load(f).get("admin_password", ADMIN_PASSWORD)
    status, b = call("POST", "/api/admin/login", body={"email": ADMIN_EMAIL, "password": current})
    if status == 401 and current != ADMIN_PASSWORD:
        # A fresh store with an old data folder: the bootstrap password is the one.
        current = ADMIN_PASSWORD
        status, b = call("POST", "/api/admin/login", body={"email": ADMIN_EMAIL, "password": current})
    token = must([200], status, b, "admin login")["token"]
    if b.get("must_change_password"):
        new = f"admin-{secrets.token_hex(8)}-C1"
        status, b = call("POST", "/api/admin/password", token,
                         body={"current_password": current, "new_password": new})
        must([200], status, b, "first admin password change")
        write_private(path, {"admin_password": new})
        log("changed the bootstrap admin password (kept in admin.json and dev.json)")
        current = new
    return token, current


def write_private(path, obj):
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
