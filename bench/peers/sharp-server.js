// The bench harness around sharp (not peer code: sharp comes from npm, see install.sh): the
// smallest HTTP server that answers `POST /` with the request body resized like `resizer dev`'s
// `width=512&height=512&fit=inside&format=jpeg&quality=80` — EXIF-rotated, longest side 512, never
// enlarged, JPEG q80, metadata stripped (sharp's default). Listens on 127.0.0.1, port 0 unless
// given, and prints `listening PORT` once it does.
// With SHARP_AVIF="Q:EFFORT" set, AVIF instead (quality Q, effort EFFORT, 4:4:4).
// Usage: NODE_PATH=$CACHE/sharp/node_modules node sharp-server.js [PORT]
'use strict';
const http = require('http');
const sharp = require('sharp');

sharp.cache(false); // every request converts: nothing is served from a cache

const avif = process.env.SHARP_AVIF ? process.env.SHARP_AVIF.split(':').map(Number) : null;
const encode = avif
  ? (image) => image.avif({ quality: avif[0], effort: avif[1], chromaSubsampling: '4:4:4' })
  : (image) => image.jpeg({ quality: 80 });
const contentType = avif ? 'image/avif' : 'image/jpeg';

const server = http.createServer((req, res) => {
  if (req.method !== 'POST') {
    res.writeHead(405).end();
    return;
  }
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    encode(sharp(Buffer.concat(chunks)).rotate().resize(512, 512, { fit: 'inside', withoutEnlargement: true }))
      .toBuffer()
      .then((out) => res.writeHead(200, { 'Content-Type': contentType, 'Content-Length': out.length }).end(out))
      .catch((err) => res.writeHead(422, { 'Content-Type': 'text/plain' }).end(String(err)));
  });
});
server.keepAliveTimeout = 60000;
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log(`listening ${server.address().port}`);
});
