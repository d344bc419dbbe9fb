// The 3D view of an avatar (three.js): load a GLB, light and frame it, turn and zoom it, set its
// morph targets. The same stage renders the thumbnails of "My avatars" off screen.
//
// Morph targets are read from the loaded file (each mesh's morphTargetDictionary, which three.js
// fills from the glTF's `extras.targetNames`); nothing here lists them. A head whose several
// meshes (skin, eyes, teeth) share a target name moves them together.

import {
  Box3, Color, DirectionalLight, HemisphereLight, PerspectiveCamera, Scene, Spherical, Vector3,
  WebGLRenderer,
} from 'three';
import { GLTFLoader } from 'three/examples/jsm/loaders/GLTFLoader.js';
import { OrbitControls } from 'three/examples/jsm/controls/OrbitControls.js';

const FIELD_OF_VIEW_DEG = 30;
export const DEFAULT_BACKGROUND = '#e8eaee';

/** The glTF of GLB `bytes` (an ArrayBuffer), parsed by three.js's GLTFLoader. */
export function parseGlb(bytes) {
  return new Promise((resolve, reject) => {
    new GLTFLoader().parse(bytes, '', resolve, (error) => reject(new Error(`The GLB could not be read: ${error.message || error}`)));
  });
}

/** Every mesh under `root` that has morph targets. */
function morphMeshes(root) {
  const meshes = [];
  root.traverse((node) => { if (node.isMesh && node.morphTargetDictionary) meshes.push(node); });
  return meshes;
}

/** The morph target names under `root`, in the file's order, each once. */
export function morphNames(root) {
  const names = [];
  for (const mesh of morphMeshes(root)) {
    for (const name of Object.keys(mesh.morphTargetDictionary)) if (!names.includes(name)) names.push(name);
  }
  return names;
}

/** Lights for a face: a warm key light from above right, a soft fill, sky/ground ambient. */
function addLights(scene) {
  const lights = [
    [new HemisphereLight(0xffffff, 0x7a6a5c, 1.6), null],
    [new DirectionalLight(0xfff4e8, 2.2), new Vector3(0.6, 0.7, 1)],
    [new DirectionalLight(0xe8f0ff, 0.7), new Vector3(-0.8, 0.1, 0.6)],
  ];
  const base = lights.map(([light]) => light.intensity);
  for (const [light, direction] of lights) {
    if (direction) light.position.copy(direction);
    scene.add(light);
  }
  return (brightness) => lights.forEach(([light], i) => { light.intensity = base[i] * brightness; });
}

/** Point `camera` (and `target`) at `object` from the front (+Z), close enough that its outline
 * (taken at the middle of its depth) fills seven eighths of the picture. Returns the distance. */
function frame(camera, object, target) {
  const box = new Box3().setFromObject(object);
  const size = box.getSize(new Vector3());
  const halfView = Math.tan((FIELD_OF_VIEW_DEG * Math.PI) / 360);
  const fitHeight = size.y / 2 / halfView;
  const fitWidth = size.x / 2 / (halfView * camera.aspect);
  const distance = Math.max(fitHeight, fitWidth, 1e-3) * 8 / 7;
  box.getCenter(target);
  camera.position.set(target.x, target.y, target.z + distance);
  camera.near = distance / 100;
  camera.far = distance * 100;
  camera.lookAt(target);
  camera.updateProjectionMatrix();
  return distance;
}

function dispose(root) {
  root.traverse((node) => {
    if (!node.isMesh) return;
    node.geometry.dispose();
    for (const material of [].concat(node.material)) {
      for (const value of Object.values(material)) if (value && value.isTexture) value.dispose();
      material.dispose();
    }
  });
}

export class HeadViewer {
  /** @param {HTMLCanvasElement} canvas */
  constructor(canvas) {
    this.canvas = canvas;
    this.renderer = new WebGLRenderer({ canvas, antialias: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    this.scene = new Scene();
    this.scene.background = new Color(DEFAULT_BACKGROUND);
    this.setBrightness = addLights(this.scene);
    this.camera = new PerspectiveCamera(FIELD_OF_VIEW_DEG, 1, 0.01, 100);
    this.camera.position.set(0, 0, 1);
    this.controls = new OrbitControls(this.camera, canvas);
    this.controls.addEventListener('change', () => this.requestRender());
    this.model = null;
    this.meshes = [];
    this.homeDistance = 1;
    this.pending = false;
    canvas.addEventListener('keydown', (event) => this.onKey(event));
    new ResizeObserver(() => this.resize()).observe(canvas.parentElement);
  }

  /** Load GLB `bytes`; resolves with the morph target names and the scene's extras. */
  async show(bytes) {
    const gltf = await parseGlb(bytes);
    this.clear();
    this.model = gltf.scene;
    this.meshes = morphMeshes(this.model);
    this.scene.add(this.model);
    this.homeDistance = frame(this.camera, this.model, this.controls.target);
    this.controls.minDistance = this.homeDistance * 0.25;
    this.controls.maxDistance = this.homeDistance * 4;
    this.controls.update();
    this.requestRender();
    return { names: morphNames(this.model), extras: gltf.scene.userData || {} };
  }

  /** An empty stage: the background alone. */
  clear() {
    if (this.model) {
      this.scene.remove(this.model);
      dispose(this.model);
    }
    this.model = null;
    this.meshes = [];
    this.requestRender();
  }

  setMorph(name, value) {
    for (const mesh of this.meshes) {
      const index = mesh.morphTargetDictionary[name];
      if (index !== undefined) mesh.morphTargetInfluences[index] = value;
    }
    this.requestRender();
  }

  setBackground(css) {
    this.scene.background = new Color(css);
    this.requestRender();
  }

  setLight(brightness) {
    this.setBrightness(brightness);
    this.requestRender();
  }

  resetView() {
    if (this.model) this.homeDistance = frame(this.camera, this.model, this.controls.target);
    this.controls.update();
  }

  /** Turn the camera around the head (radians) and move it closer (`zoom` < 1) or away. */
  orbit(azimuth, polar, zoom = 1) {
    const offset = this.camera.position.clone().sub(this.controls.target);
    const spherical = new Spherical().setFromVector3(offset);
    spherical.theta += azimuth;
    spherical.phi = Math.min(Math.PI - 0.05, Math.max(0.05, spherical.phi + polar));
    spherical.radius = Math.min(this.controls.maxDistance, Math.max(this.controls.minDistance, spherical.radius * zoom));
    this.camera.position.copy(this.controls.target).add(new Vector3().setFromSpherical(spherical));
    this.controls.update();
  }

  onKey(event) {
    const step = Math.PI / 12;
    const moves = {
      ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step],
      '+': [0, 0, 0.85], '=': [0, 0, 0.85], '-': [0, 0, 1 / 0.85],
    };
    if (event.key === 'Home' || event.key === '0') this.resetView();
    else if (moves[event.key]) this.orbit(...moves[event.key]);
    else return;
    event.preventDefault();
  }

  resize() {
    const { clientWidth: width, clientHeight: height } = this.canvas.parentElement;
    if (!width || !height) return; // hidden
    this.renderer.setSize(width, height, false);
    this.camera.aspect = width / height;
    this.camera.updateProjectionMatrix();
    this.requestRender();
  }

  /** Draw on the next frame (once, however many changes come before it): no frame is drawn
   * while nothing moves, which keeps phones cool and the CPU free in software rendering. */
  requestRender() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.renderer.render(this.scene, this.camera);
    });
  }
}

let thumbnailStage = null;

/** A front view of GLB `bytes` as a `size`-pixel square WebP/PNG Blob, drawn off screen. */
export async function renderThumbnail(bytes, size = 256) {
  const gltf = await parseGlb(bytes);
  if (!thumbnailStage) {
    const canvas = document.createElement('canvas');
    const renderer = new WebGLRenderer({ canvas, antialias: true, preserveDrawingBuffer: true });
    const scene = new Scene();
    scene.background = new Color(DEFAULT_BACKGROUND);
    addLights(scene);
    thumbnailStage = { canvas, renderer, scene, camera: new PerspectiveCamera(FIELD_OF_VIEW_DEG, 1, 0.01, 100) };
  }
  const { canvas, renderer, scene, camera } = thumbnailStage;
  renderer.setSize(size, size, false);
  scene.add(gltf.scene);
  frame(camera, gltf.scene, new Vector3());
  renderer.render(scene, camera);
  scene.remove(gltf.scene);
  dispose(gltf.scene);
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error('The thumbnail could not be drawn'))), 'image/webp', 0.85);
  });
}
