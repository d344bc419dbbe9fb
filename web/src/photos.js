// The upload contract checked in the browser before anything is sent, with the service's own
// words: the type from the file's first bytes (not its name), its size, and its width and height
// from its header (nothing is decoded, so a huge image is refused as fast as a small one).
// The service checks everything again; what only it can see (a cut-off file, an animation)
// comes back in its `details[]`.

/** The contract's limits, as the service renders them into the page. */
export function limitsFromPage(body = document.body) {
  return {
    maxBytes: Number(body.dataset.maxImageBytes) || 10 * 1024 * 1024,
    minSide: Number(body.dataset.minImageSide) || 224,
    maxSide: Number(body.dataset.maxImageSide) || 4096,
  };
}

export function describeLimits(limits) {
  return `${limits.minSide} to ${limits.maxSide} pixels on each side, at most ${megabytes(limits.maxBytes)} MB each`;
}

const megabytes = (bytes) => Math.floor(bytes / (1024 * 1024));

/**
 * `{ok: true, format, width, height}` for a photo the service will take, else `{ok: false, message}`.
 * @param {File} file
 */
export async function checkPhoto(file, limits) {
  if (file.size === 0) return refuse('File is empty: choose the photo itself.');
  if (file.size > limits.maxBytes) {
    return refuse(`File too large. Maximum size is ${megabytes(limits.maxBytes)}MB per image (this one is ${(file.size / 1048576).toFixed(1)} MB).`);
  }
  const bytes = new Uint8Array(await file.arrayBuffer());
  const format = sniffFormat(bytes);
  if (!format) return refuse('Unsupported file type: only JPEG, PNG and WebP images are accepted.');
  const size = readSize(format, bytes);
  if (!size) return refuse(`This ${format.toUpperCase()} file looks damaged: its size cannot be read. Export it again or choose another photo.`);
  const { width, height } = size;
  if (width < limits.minSide || height < limits.minSide) {
    return refuse(`Image too small. Minimum size is ${limits.minSide}x${limits.minSide} pixels (this one is ${width}x${height}).`);
  }
  if (width > limits.maxSide || height > limits.maxSide) {
    return refuse(`Image too large. Maximum size is ${limits.maxSide}x${limits.maxSide} pixels (this one is ${width}x${height}).`);
  }
  return { ok: true, format, width, height };
}

const refuse = (message) => ({ ok: false, message });

/** 'jpeg', 'png', 'webp' or null, from the magic numbers. */
export function sniffFormat(bytes) {
  const starts = (offset, values) => values.every((value, i) => bytes[offset + i] === value);
  if (starts(0, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (starts(0, [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return 'png';
  if (starts(0, [0x52, 0x49, 0x46, 0x46]) && starts(8, [0x57, 0x45, 0x42, 0x50])) return 'webp';
  return null;
}

function readSize(format, bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  try {
    if (format === 'png') return { width: view.getUint32(16), height: view.getUint32(20) };
    if (format === 'webp') return webpSize(bytes, view);
    return jpegSize(bytes, view);
  } catch {
    return null; // read past the end: a truncated header
  }
}

// Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
const JPEG_SOF = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

function jpegSize(bytes, view) {
  let pos = 2;
  while (pos < bytes.length) {
    if (bytes[pos] !== 0xff) return null;
    while (bytes[pos] === 0xff) pos += 1; // fill bytes
    const marker = bytes[pos];
    pos += 1;
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue; // no length
    if (marker === 0xd9 || marker === 0xda) return null; // end of image or scan data before any frame
    const length = view.getUint16(pos);
    if (JPEG_SOF.has(marker)) return { height: view.getUint16(pos + 3), width: view.getUint16(pos + 5) };
    pos += length;
  }
  return null;
}

function webpSize(bytes, view) {
  const chunk = String.fromCharCode(...bytes.subarray(12, 16));
  if (chunk === 'VP8 ') return { width: view.getUint16(26, true) & 0x3fff, height: view.getUint16(28, true) & 0x3fff };
  if (chunk === 'VP8L') {
    const bits = view.getUint32(21, true);
    return { width: (bits & 0x3fff) + 1, height: ((bits >> 14) & 0x3fff) + 1 };
  }
  if (chunk === 'VP8X') {
    const uint24 = (offset) => bytes[offset] | (bytes[offset + 1] << 8) | (bytes[offset + 2] << 16);
    return { width: uint24(24) + 1, height: uint24(27) + 1 };
  }
  return null;
}
