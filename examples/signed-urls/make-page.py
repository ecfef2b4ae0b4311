#!/usr/bin/env python3
"""Writes index.html: an example page whose images are signed GET URLs (docs/urls.md).

The page shows the two JPEGs of this folder, served by an origin (e.g. `python3 -m http.server
8000` in this folder), through resizer: a plain <img>, an <img srcset sizes> with three widths,
and a <picture> with a WebP <source> and a JPEG fallback. After `load`, a small script writes one
JSON line per image into <pre id="report">: what the browser got.

Signing needs the signing key's secret, so the page is made here rather than by hand:

    make-page.py --key-id Ab3dEf9hJk2L --secret 9c1f... \
        --api http://127.0.0.1:8080 --origin http://127.0.0.1:8000

Each option may come from the environment instead: RESIZER_KEY_ID, RESIZER_URL_SECRET,
RESIZER_API, RESIZER_ORIGIN. `--out` writes elsewhere than index.html next to this script.
Python 3 standard library only.
"""

import argparse
import base64
import hashlib
import hmac
import html
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# The images of this folder, as the origin serves them, and their sizes (for the page's layout).
LANDSCAPE = "landscape.jpg"  # 1200 x 800
BLOCKS = "blocks.jpg"  # 960 x 1280
SRCSET_WIDTHS = (320, 640, 960)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_url(api: str, key_id: str, secret: bytes, options: str, source: str) -> str:
    """`<api>/v1/img/<key id>/<signature>/<options>/<source>`, as docs/urls.md describes."""
    src = b64url(source.encode())
    sig = b64url(hmac.new(secret, f"{key_id}/{options}/{src}".encode(), hashlib.sha256).digest())
    return f"{api}/v1/img/{key_id}/{sig}/{options}/{src}"


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>resizer: signed URLs</title>
<style>
  body {{ font: 15px/1.4 system-ui, sans-serif; margin: 24px; color: #222; background: #fafafa; }}
  h1 {{ font-size: 20px; margin: 0 0 4px; }}
  h2 {{ font-size: 15px; margin: 20px 0 6px; }}
  p {{ margin: 0 0 6px; max-width: 60em; }}
  code, pre {{ font: 12px/1.35 ui-monospace, monospace; }}
  main {{ display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: flex-start; }}
  img {{ display: block; border: 1px solid #ccc; background: #fff; }}
  pre {{ background: #fff; border: 1px solid #ccc; padding: 8px; white-space: pre-wrap; word-break: break-all; }}
</style>
</head>
<body>
<h1>Signed GET URLs</h1>
<p>Every image below is <code>GET /v1/img/&lt;key id&gt;/&lt;signature&gt;/&lt;options&gt;/&lt;source&gt;</code>
on <code>{api}</code>, resizing a JPEG from <code>{origin}</code>.</p>

<main>
<section>
<h2>&lt;img&gt;: <code>width=400,format=auto</code></h2>
<img id="plain" data-report alt="a landscape, 400 pixels wide" width="400" height="267"
  src="{plain}">
</section>

<section>
<h2>&lt;img srcset sizes&gt;: widths {widths}, <code>format=auto</code>, 640 px wide</h2>
<img id="responsive" data-report alt="the landscape, the browser's choice of three widths"
  sizes="(max-width: 700px) 100vw, 640px" style="width: min(640px, 100%); height: auto"
  width="640" height="427"
  srcset="{srcset}"
  src="{srcset_default}">
</section>

<section>
<h2>&lt;picture&gt;: a <code>format=webp</code> source,<br>a <code>format=jpeg</code> fallback</h2>
<picture>
  <source type="image/webp" srcset="{picture_webp}">
  <img id="picture" data-report alt="coloured blocks, 300 pixels wide" width="300" height="400"
    src="{picture_jpeg}">
</picture>
</section>
</main>

<h2>What the browser got</h2>
<pre id="report">(waiting for load)</pre>

<script>
// What a browser sends for an <img> (Chromium's Accept): the format=auto answer depends on it.
const IMAGE_ACCEPT = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
addEventListener("load", async () => {{
  const lines = [];
  for (const img of document.querySelectorAll("img[data-report]")) {{
    // The content type of the answer: a second request for currentSrc, with an image's Accept.
    // It is cross-origin, and the API sends no CORS headers: a browser with its usual web
    // security refuses to show it (see README.md).
    let contentType = null;
    let error = null;
    try {{
      const response = await fetch(img.currentSrc, {{ headers: {{ accept: IMAGE_ACCEPT }} }});
      contentType = response.headers.get("content-type");
    }} catch (e) {{
      error = String(e);
    }}
    lines.push(JSON.stringify({{
      id: img.id,
      url: img.getAttribute("src"),
      naturalWidth: img.naturalWidth,
      naturalHeight: img.naturalHeight,
      currentSrc: img.currentSrc,
      contentType,
      error,
    }}));
  }}
  const report = document.getElementById("report");
  report.textContent = lines.join("\\n");
  report.dataset.done = "true";
}});
</script>
</body>
</html>
"""


def main() -> int:
    parser = argparse.ArgumentParser(description="Write an example page of signed resizer URLs.")
    parser.add_argument("--key-id", default=os.environ.get("RESIZER_KEY_ID"), help="signing key id (RESIZER_KEY_ID)")
    parser.add_argument(
        "--secret", default=os.environ.get("RESIZER_URL_SECRET"), help="its secret, 64 hex digits (RESIZER_URL_SECRET)"
    )
    parser.add_argument(
        "--api", default=os.environ.get("RESIZER_API"), help="resizer's public API, e.g. http://127.0.0.1:8080 (RESIZER_API)"
    )
    parser.add_argument(
        "--origin",
        default=os.environ.get("RESIZER_ORIGIN"),
        help="where this folder is served, e.g. http://127.0.0.1:8000 (RESIZER_ORIGIN)",
    )
    parser.add_argument("--out", default=os.path.join(HERE, "index.html"), help="default: index.html next to this script")
    args = parser.parse_args()
    missing = [name for name in ("key_id", "secret", "api", "origin") if not getattr(args, name)]
    if missing:
        parser.error("missing: " + ", ".join("--" + m.replace("_", "-") for m in missing))
    try:
        secret = bytes.fromhex(args.secret)
    except ValueError:
        parser.error("--secret: 64 hex digits")
    if len(secret) != 32:
        parser.error("--secret: 64 hex digits")
    for name in (LANDSCAPE, BLOCKS):
        if not os.path.exists(os.path.join(HERE, name)):
            parser.error(f"{name} is missing next to this script")

    api, origin = args.api.rstrip("/"), args.origin.rstrip("/")

    def url(options: str, image: str) -> str:
        return html.escape(signed_url(api, args.key_id, secret, options, f"{origin}/{image}"))

    page = PAGE.format(
        api=html.escape(api),
        origin=html.escape(origin),
        widths=", ".join(map(str, SRCSET_WIDTHS)),
        plain=url("width=400,format=auto", LANDSCAPE),
        srcset=",\n    ".join(f"{url(f'width={w},format=auto', LANDSCAPE)} {w}w" for w in SRCSET_WIDTHS),
        srcset_default=url("width=640,format=auto", LANDSCAPE),
        picture_webp=url("width=300,format=webp", BLOCKS),
        picture_jpeg=url("width=300,format=jpeg", BLOCKS),
    )
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(page)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
