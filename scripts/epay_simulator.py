"""Local EPay payment simulator (development and tests only; never deployed).

Stands in for an EPay-style gateway (the usual front for Alipay and WeChat Pay) so that
signup -> plan -> pay -> key -> usage works offline. The admin server's checkout URL
points here (EPAY_API_BASE); the member sees an order page with "Pay" and "Cancel".
"Pay" does what the real gateway does: it signs the notify parameters with the
merchant key (MD5 over the sorted non-empty parameters, key appended; see
lambda-admin/src/payments/epay.rs) and delivers them to the order's notify_url (the
worker's /webhooks/epay/notify, the real verified path), then sends the browser to the
signed return_url.

Refuses to start when ENVIRONMENT=production. Standard library only.

Usage: EPAY_PID=... EPAY_KEY=... python epay_simulator.py PORT
"""

import hashlib
import html
import os
import secrets
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def sign(params, key):
    joined = "&".join(
        f"{k}={v}" for k, v in sorted(params.items()) if v != "" and k not in ("sign", "sign_type")
    )
    return hashlib.md5((joined + key).encode()).hexdigest()


PAGE = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>EPay simulator / 支付模拟器</title>
<style>body{{font-family:system-ui,sans-serif;max-width:480px;margin:2rem auto;padding:0 1rem}}
.box{{border:1px solid #ddd;border-radius:8px;padding:1rem}}button{{font:inherit;padding:.5rem 1rem;margin-right:.5rem}}
.pay{{background:#1677ff;color:#fff;border:0;border-radius:6px}}.warn{{color:#92400e;background:#fef3c7;padding:.5rem}}</style>
</head><body><p class="warn">Local payment simulator — no money moves. 本地支付模拟器，不会产生真实扣款。</p>
<div class="box"><h1>{name}</h1><p>Amount / 金额: <strong data-testid="money">{money} CNY</strong></p>
<p>Method / 方式: {ptype}</p><p>Order / 订单: <code>{order}</code></p>
<form method="post" action="/pay">{hidden}
<button class="pay" type="submit" name="result" value="paid" data-testid="sim-pay">Pay / 确认支付</button>
<button type="submit" name="result" value="cancel">Cancel / 取消</button></form></div></body></html>"""


class Handler(BaseHTTPRequestHandler):
    server_version = "epay-simulator"

    def log_message(self, fmt, *args):  # one short line per request, no query (it has the sign)
        sys.stderr.write(f"epay-simulator {self.command} {self.path.split('?')[0]}\n")

    def reply(self, status, body, ctype="text/html; charset=utf-8", headers=None):
        data = body.encode()
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/health":
            return self.reply(200, "ok", "text/plain")
        if url.path == "/favicon.ico":
            return self.reply(204, "", "image/x-icon")
        if url.path != "/submit.php":
            return self.reply(404, "not found", "text/plain")
        p = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        if p.get("pid") != PID or p.get("sign") != sign(p, KEY):
            return self.reply(400, "bad signature / 签名错误", "text/plain; charset=utf-8")
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in p.items()
        )
        page = PAGE.format(
            name=html.escape(p.get("name", "")),
            money=html.escape(p.get("money", "")),
            ptype=html.escape(p.get("type", "")),
            order=html.escape(p.get("out_trade_no", "")),
            hidden=hidden,
        )
        self.reply(200, page)

    def do_POST(self):
        if urllib.parse.urlsplit(self.path).path != "/pay":
            return self.reply(404, "not found", "text/plain")
        length = int(self.headers.get("content-length") or 0)
        p = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        result = p.pop("result", "cancel")
        if p.get("pid") != PID or p.get("sign") != sign(p, KEY):
            return self.reply(400, "bad signature / 签名错误", "text/plain; charset=utf-8")
        if result != "paid":
            return self.reply(303, "", headers={"location": p.get("return_url") or "/"})
        out = {
            "pid": PID,
            "trade_no": "SIM" + secrets.token_hex(8),
            "out_trade_no": p["out_trade_no"],
            "type": p.get("type", "alipay"),
            "name": p.get("name", ""),
            "money": p["money"],
            "trade_status": "TRADE_SUCCESS",
            "sign_type": "MD5",
        }
        out["sign"] = sign(out, KEY)
        body = urllib.parse.urlencode(out).encode()
        req = urllib.request.Request(
            p["notify_url"], data=body, method="POST",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                answer = r.read().decode().strip()
        except urllib.error.HTTPError as e:
            answer = f"HTTP {e.code}"
        except OSError as e:
            answer = f"unreachable: {e.__class__.__name__}"
        if answer != "success":
            return self.reply(502, f"notify was not accepted: {html.escape(answer)}", "text/plain")
        sep = "&" if "?" in p["return_url"] else "?"
        self.reply(303, "", headers={"location": p["return_url"] + sep + urllib.parse.urlencode(out)})


if __name__ == "__main__":
    if os.environ.get("ENVIRONMENT", "").lower() == "production":
        sys.exit("the EPay simulator never runs with ENVIRONMENT=production")
    PID = os.environ["EPAY_PID"]
    KEY = os.environ["EPAY_KEY"]
    port = int(sys.argv[1])
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
