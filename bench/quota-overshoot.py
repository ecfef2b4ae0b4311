#!/usr/bin/env python3
# The overshoot of a requests quota across the api nodes of a running lab, at paced rates: for
# each rate a new tenant (quota: 40 requests per rolling hour), one client through HAProxy at
# that rate until the first 429 quota-exceeded; prints what was served and the overshoot.
# Usage: resizer lab up --dir DIR ... ; bench/quota-overshoot.py DIR RATE [RATE...]
import json, ssl, sys, time, urllib.request, struct, zlib
lab = json.load(open(sys.argv[1] + "/cluster.json"))["fields"]
ctx = ssl.create_default_context(cafile=lab["tls_ca"])
def call(method, url, body=None, auth=None, ctype=None):
    req = urllib.request.Request(url, data=body, method=method)
    if auth: req.add_header("authorization", "Bearer " + auth)
    if ctype: req.add_header("content-type", ctype)
    try:
        with urllib.request.urlopen(req, context=ctx) as r: return r.status, r.read()
    except urllib.error.HTTPError as e: return e.code, e.read()
def png(w, h):
    raw = b''.join(b'\x00' + b'\x80' * (w * 3) for _ in range(h))
    ch = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d))
    return b'\x89PNG\r\n\x1a\n' + ch(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) + ch(b'IDAT', zlib.compress(raw)) + ch(b'IEND', b'')
image = png(16, 16)
for rate in [float(x) for x in sys.argv[2:]]:
    name = "paced-%d-%d" % (int(rate), int(time.time()))
    s, b = call("POST", lab["admin_url"] + "/v1/tenants", json.dumps({"name": name, "limits": {"quota": {"period": "rolling", "period_seconds": 3600, "requests": 40}}}).encode(), lab["admin_token"], "application/json")
    assert s == 201, b
    s, b = call("POST", lab["admin_url"] + "/v1/tenants/%s/keys" % name, b'{"label":"p"}', lab["admin_token"], "application/json")
    key = json.loads(b)["key"]
    time.sleep(2)
    ok, start = 0, time.time()
    while True:
        t = time.time()
        s, b = call("POST", lab["url"] + "/v1/resize?width=8", image, key)
        if s == 200: ok += 1
        elif s == 429:
            assert b"quota-exceeded" in b, b
            break
        else: raise SystemExit("%d %r" % (s, b))
        time.sleep(max(0, 1 / rate - (time.time() - t)))
    el = time.time() - start
    print("rate %.0f/s (measured %.1f/s): %d served for a quota of 40, overshoot %d = %.2f s of answers" % (rate, ok / el, ok, ok - 40, (ok - 40) / (ok / el)))
