#!/usr/bin/env node
// In-process sharp loop, used by compare_libvips.py: sharp (libvips inside, its own prebuilt
// binary from npm) with one thread, the cache off, timing ONLY the loop over the files (Node's
// start-up and `require("sharp")` excluded):
//
//   for f of files:
//     sharp(f).rotate()                                    // auto-orient from EXIF
//       .resize(SIZE, SIZE, { fit: "inside", withoutEnlargement: true })
//       .jpeg({ quality: QUALITY })                        // metadata is dropped by default
//       .toFile(OUT/<stem>.jpg)
//
// Prints one JSON line, the same shape as `resizer ... --json`:
//   {"images": N, "failed": F, "seconds": S, "images_per_sec": R, ...}
// Run under `taskset -c 1` with UV_THREADPOOL_SIZE=1: libuv runs sharp's work on its pool.
"use strict";

const path = require("path");
const fs = require("fs");

function parse(argv) {
  const a = { out: null, size: 512, quality: 80, format: "jpeg", allowEnlarge: false, files: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === "--out") a.out = argv[++i];
    else if (arg === "--size") a.size = Number(argv[++i]);
    else if (arg === "--quality") a.quality = Number(argv[++i]);
    else if (arg === "--format") a.format = argv[++i];
    else if (arg === "--allow-enlarge") a.allowEnlarge = true;
    else a.files.push(arg);
  }
  if (!a.out || !a.files.length) throw new Error("usage: sharp_worker.js --out DIR [--size N] [--quality Q] [--format jpeg|png] FILES...");
  return a;
}

async function main() {
  const a = parse(process.argv.slice(2));
  const sharp = require("sharp");
  sharp.concurrency(1);
  sharp.cache(false);
  sharp.simd(true);
  fs.mkdirSync(a.out, { recursive: true });
  const ext = a.format === "jpeg" ? ".jpg" : ".png";
  let failed = 0;
  const errors = [];
  const t0 = process.hrtime.bigint();
  for (const f of a.files) {
    const stem = path.basename(f, path.extname(f));
    try {
      let p = sharp(f).rotate().resize(a.size, a.size, { fit: "inside", withoutEnlargement: !a.allowEnlarge });
      p = a.format === "jpeg" ? p.jpeg({ quality: a.quality }) : p.png();
      await p.toFile(path.join(a.out, stem + ext));
    } catch (e) {
      failed += 1;
      errors.push(`${f}: ${e.message}`);
    }
  }
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const ok = a.files.length - failed;
  console.log(JSON.stringify({
    images: a.files.length,
    failed,
    seconds: Math.round(seconds * 1e6) / 1e6,
    images_per_sec: seconds > 0 ? Math.round((ok / seconds) * 1000) / 1000 : null,
    sharp: sharp.versions.sharp,
    libvips: sharp.versions.vips,
  }));
  for (const e of errors) console.error(e);
  process.exitCode = failed ? 1 : 0;
}

main().catch((e) => {
  console.error(e.stack || String(e));
  process.exitCode = 2;
});
