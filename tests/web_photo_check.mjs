// The web page's own upload checks (web/src/photos.js) run in node on the files named, with the
// contract's default limits; prints one JSON verdict per file.
// Usage: node tests/web_photo_check.mjs a.jpg b.png ...
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { checkPhoto } from '../web/src/photos.js';

const limits = { maxBytes: 10 * 1024 * 1024, minSide: 224, maxSide: 4096 };
const verdicts = {};
for (const path of process.argv.slice(2)) {
  verdicts[basename(path)] = await checkPhoto(new Blob([readFileSync(path)]), limits);
}
console.log(JSON.stringify(verdicts));
