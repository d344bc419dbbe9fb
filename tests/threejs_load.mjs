// Load a GLB with three.js's own GLTFLoader (as a web page would) and print what it built.
// Usage: node tests/threejs_load.mjs model.glb
// Node has no DOM, so three.js cannot decode the embedded JPEG here (it says so and goes on);
// the geometry, the material and the morph targets are parsed exactly as in a browser.
import { readFileSync } from 'node:fs';
import { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';

globalThis.self = globalThis; // GLTFLoader looks up `self` (the window in a browser)

const data = readFileSync(process.argv[2]);
const buffer = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
new GLTFLoader().parse(buffer, '', (gltf) => {
  const meshes = [];
  gltf.scene.traverse((node) => { if (node.isMesh) meshes.push(node); });
  const mesh = meshes[0];
  const targets = mesh.geometry.morphAttributes.position || [];
  console.log(JSON.stringify({
    meshes: meshes.length,
    vertices: mesh.geometry.attributes.position.count,
    triangles: mesh.geometry.index.count / 3,
    hasUv: !!mesh.geometry.attributes.uv,
    material: mesh.material.type,
    morphTargets: Object.keys(mesh.morphTargetDictionary || {}),
    morphTargetCount: targets.length,
    largestOffset: Math.max(0, ...targets.map((t) => Math.max(...Array.from(t.array, Math.abs)))),
  }));
}, (error) => { console.error(String(error)); process.exit(1); });
