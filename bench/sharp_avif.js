#!/usr/bin/env node
// sharp's AVIF (libheif + libaom inside sharp's prebuilt libvips), in-process, for
// bench/avif_peers.py. sharp.concurrency(1), cache off; run with UV_THREADPOOL_SIZE=1.
//
// Per file and round, the process's CPU time (process.cpuUsage(): user + system of every thread,
// so libvips' and libuv's worker threads are counted) around ONE of:
//   --mode pipeline: sharp(jpeg).rotate().resize(SIZE).avif({quality, effort}).toBuffer()
//                    (decode + resize + encode, what our pipeline time covers), and the same
//                    pipeline with .png({compressionLevel: 0}) once, untimed, as this
//                    contestant's own lossless reference (REF_OUT/<stem>.png);
//   --mode encode:   sharp(png512).avif({quality, effort}).toBuffer() on the given 512-px PNG
//                    (PNG decode + encode; the PNG is our own lossless resize).
// The fastest round per file is kept. Prints TSV: stem, cpu_ms, bytes; writes OUT/<stem>.avif.
"use strict";
const path = require("path");
const fs = require("fs");

function parse(argv) {
  const a = { out: null, refOut: null, size: 512, quality: 50, effort: 4, rounds: 2, mode: "pipeline", chroma: "4:4:4", files: [] };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i];
    if (x === "--out") a.out = argv[++i];
    else if (x === "--ref-out") a.refOut = argv[++i];
    else if (x === "--size") a.size = Number(argv[++i]);
    else if (x === "--quality") a.quality = Number(argv[++i]);
    else if (x === "--effort") a.effort = Number(argv[++i]);
    else if (x === "--rounds") a.rounds = Number(argv[++i]);
    else if (x === "--mode") a.mode = argv[++i];
    else if (x === "--chroma") a.chroma = argv[++i];
    else a.files.push(x);
  }
  return a;
}

function cpuMs(u) { return (u.user + u.system) / 1e3; }

async function main() {
  const a = parse(process.argv.slice(2));
  const sharp = require("sharp");
  sharp.concurrency(1);
  sharp.cache(false);
  fs.mkdirSync(a.out, { recursive: true });
  if (a.refOut) fs.mkdirSync(a.refOut, { recursive: true });
  const make = (f) => {
    let p = sharp(f);
    if (a.mode === "pipeline") p = p.rotate().resize(a.size);
    return p;
  };
  // Warm-up (library load, first-call allocations), untimed.
  await make(a.files[0]).avif({ quality: a.quality, effort: a.effort, chromaSubsampling: a.chroma }).toBuffer();
  for (const f of a.files) {
    const stem = path.basename(f, path.extname(f));
    let best = Infinity, buf = null;
    for (let r = 0; r < a.rounds; r++) {
      const c0 = process.cpuUsage();
      buf = await make(f).avif({ quality: a.quality, effort: a.effort, chromaSubsampling: a.chroma }).toBuffer();
      best = Math.min(best, cpuMs(process.cpuUsage(c0)));
    }
    fs.writeFileSync(path.join(a.out, stem + ".avif"), buf);
    if (a.refOut) await make(f).png({ compressionLevel: 0 }).toFile(path.join(a.refOut, stem + ".png"));
    console.log(`${stem}\t${best.toFixed(3)}\t${buf.length}`);
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
