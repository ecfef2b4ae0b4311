#!/usr/bin/env python3
"""Animated GIF → animated WebP, ours against sharp (libvips), one core each.

Usage: bench/animation_vs_sharp.py [RESIZER]   (default target/release/resizer)

Makes two animated GIFs with Debian's Pillow (/usr/bin/python3, python3-pil) into a temp dir —
a 480x360 pan across a corpus photo (24 frames, a real GIF's quantised colours) and 500x500
shifting colour bands (100 frames, every pixel changes) — and converts each to an animated WebP
of width 240, quality 80, five times:
- ours: `taskset -c 1 resizer resize IN -o OUT.webp --width 240 --quality 80`, the CPU the
  pipeline reports (decode through encode);
- sharp: `sharp(IN, {animated: true}).resize(240).webp({quality: 80})` in one Node process
  under `taskset -c 1`, UV_THREADPOOL_SIZE=1, concurrency 1, cache off; process CPU time
  around each conversion.
Prints per input the median CPU ms, output bytes and frames of each.
"""
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESIZER = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/release/resizer")
PHOTO = os.path.join(ROOT, "..", "shared", "corpus", "photos", "BytheWater-0.jpg")
RUNS = 5

SHARP = r"""
// node -e: process.argv is [node, ...arguments].
const sharp = require(process.argv[1]);
sharp.concurrency(1); sharp.cache(false);
(async () => {
  const [input, output, runs] = [process.argv[2], process.argv[3], Number(process.argv[4])];
  const cpu = [];
  let info;
  for (let i = 0; i < runs; i++) {
    const t = process.cpuUsage();
    info = await sharp(input, { animated: true }).resize(240).webp({ quality: 80 }).toFile(output);
    const d = process.cpuUsage(t);
    cpu.push((d.user + d.system) / 1000);
  }
  console.log(JSON.stringify({ cpu, bytes: info.size, pages: (await sharp(output, { animated: true }).metadata()).pages }));
})();
"""


def pan(path):
    photo = Image.open(path).convert("RGB")
    photo = photo.resize((960, photo.height * 960 // photo.width))
    frames = [photo.crop((x, 0, x + 480, 360)).quantize(256) for x in range(0, 480, 20)]
    return frames, 80


def bands():
    frames = []
    for i in range(100):
        im = Image.new("P", (500, 500))
        im.putpalette([(j * 37 + k * 91) % 256 for j in range(256) for k in range(3)])
        for y in range(0, 500, 4):
            im.paste((y // 4 + i * 7) % 256, (0, y, 500, y + 4))
        frames.append(im)
    return frames, 40


def main():
    tmp = tempfile.mkdtemp(prefix="anim-sharp-")
    env = dict(os.environ, UV_THREADPOOL_SIZE="1")
    sharp_module = os.path.join(ROOT, "bench", "node_modules", "sharp")
    for name, (frames, duration) in [("photo_pan_480x360x24", pan(PHOTO)), ("bands_500x500x100", bands())]:
        gif = os.path.join(tmp, name + ".gif")
        frames[0].save(gif, save_all=True, append_images=frames[1:], duration=duration, loop=0, optimize=False)
        ours_out, sharp_out = os.path.join(tmp, name + ".ours.webp"), os.path.join(tmp, name + ".sharp.webp")
        ours = []
        for _ in range(RUNS):
            run = subprocess.run(["taskset", "-c", "1", RESIZER, "resize", gif, "-o", ours_out, "--width", "240",
                                  "--quality", "80"], capture_output=True, text=True, check=True)
            ours.append(float(re.search(r"cpu ([0-9.]+) ms", run.stderr).group(1)))
        ours_frames = Image.open(ours_out).n_frames
        run = subprocess.run(["taskset", "-c", "1", "node", "-e", SHARP, sharp_module, gif, sharp_out, str(RUNS)],
                             capture_output=True, text=True, check=True, env=env)
        s = json.loads(run.stdout)
        print(f"{name}: {os.path.getsize(gif)} B GIF, {len(frames)} frames")
        print(f"  ours : {statistics.median(ours):8.1f} ms CPU  {os.path.getsize(ours_out):8d} B  {ours_frames} frames")
        print(f"  sharp: {statistics.median(s['cpu']):8.1f} ms CPU  {s['bytes']:8d} B  {s['pages']} frames")


if __name__ == "__main__":
    main()
