// Validate one glTF/GLB file with the Khronos glTF validator and print its JSON report.
// Usage: node tests/gltf_validate.mjs path/to/file.glb
// Exit status: 0 when a report was produced (read numErrors from it), 2 on bad usage or a
// file the validator could not even parse as glTF.
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import validator from "gltf-validator";

const path = process.argv[2];
if (!path) {
  console.error("usage: node tests/gltf_validate.mjs FILE.glb");
  process.exit(2);
}

try {
  const bytes = new Uint8Array(await readFile(path));
  const report = await validator.validateBytes(bytes, {
    uri: basename(path),
    maxIssues: 1000,
    // A GLB from the pipeline is self-contained: any external reference is itself a failure.
    externalResourceFunction: (uri) => Promise.reject(`external resource not allowed: ${uri}`),
  });
  process.stdout.write(JSON.stringify(report));
} catch (error) {
  console.error(`validation failed: ${error}`);
  process.exit(2);
}
