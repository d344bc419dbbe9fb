// The viewer section: the head in 3D, its morph-target sliders and expression presets, its
// facial features, and the GLB download.

import { downloadGlb, requestJson } from './api.js';
import { byId, el, say, saveBytes } from './dom.js';
import { HeadViewer } from './viewer.js';

// Expressions as ARKit blend-shape weights. A preset sets the names the loaded head has and
// leaves out the rest; one whose names the head lacks entirely is not offered.
const PRESETS = [
  ['Neutral', {}],
  ['Smile', { mouthSmileLeft: 0.8, mouthSmileRight: 0.8, cheekSquintLeft: 0.4, cheekSquintRight: 0.4, eyeSquintLeft: 0.2, eyeSquintRight: 0.2 }],
  ['Surprise', { jawOpen: 0.35, browInnerUp: 0.9, browOuterUpLeft: 0.8, browOuterUpRight: 0.8, eyeWideLeft: 0.7, eyeWideRight: 0.7 }],
  ['Wink', { eyeBlinkLeft: 1, mouthSmileLeft: 0.5, cheekSquintLeft: 0.3 }],
  ['Kiss', { mouthPucker: 1, mouthFunnel: 0.3 }],
  ['Angry', { browDownLeft: 0.9, browDownRight: 0.9, noseSneerLeft: 0.5, noseSneerRight: 0.5, mouthFrownLeft: 0.6, mouthFrownRight: 0.6 }],
  ['Puffed cheeks', { cheekPuff: 1, mouthPucker: 0.3 }],
];

// ARKit names start with the part of the face they move.
const GROUPS = [['brow', 'Brows'], ['eye', 'Eyes'], ['cheek', 'Cheeks'], ['nose', 'Nose'], ['jaw', 'Jaw'],
  ['mouth', 'Mouth'], ['tongue', 'Tongue']];

export class ViewerPanel {
  constructor({ onClose } = {}) {
    this.section = byId('viewer');
    this.canvas = byId('viewer-canvas');
    this.message = byId('viewer-message');
    this.viewer = null; // made on first use: the canvas must be on screen to be sized
    this.glb = null;
    this.avatarId = null;
    this.sliders = new Map();
    this.opening = 0;
    byId('download').addEventListener('click', () => {
      if (this.glb) saveBytes(this.glb.bytes, this.glb.filename, 'model/gltf-binary');
    });
    byId('close-viewer').addEventListener('click', () => {
      this.close();
      onClose?.();
    });
    byId('light').addEventListener('input', (event) => this.viewer?.setLight(Number(event.target.value)));
    byId('background').addEventListener('change', (event) => {
      this.viewer?.setBackground(event.target.value);
      this.canvas.parentElement.style.backgroundColor = event.target.value;
    });
    byId('reset-view').addEventListener('click', () => this.viewer?.resetView());
  }

  /** Show avatar `avatarId` just after element `place`: download its GLB, load it, list its
   * morph targets and features. Resolves with the GLB scene's extras (which views were used, …),
   * or null if it failed. */
  async open(avatarId, place) {
    const opening = ++this.opening;
    this.avatarId = avatarId;
    // In the section that opened it, so it goes and comes back with that section.
    if (place.nextElementSibling !== this.section) place.after(this.section);
    this.glb = null;
    this.section.hidden = false;
    this.section.dataset.state = 'loading';
    this.section.setAttribute('aria-busy', 'true');
    byId('download').disabled = true;
    say(this.message, 'Loading the head…');
    byId('presets').replaceChildren();
    byId('morphs').replaceChildren();
    byId('features').replaceChildren();
    if (!this.viewer) this.viewer = new HeadViewer(this.canvas);
    this.viewer.clear();
    this.viewer.resize();
    this.section.scrollIntoView({ block: 'start' });
    try {
      const [glb, info] = await Promise.all([
        downloadGlb(avatarId),
        requestJson(`/api/avatar/info/${encodeURIComponent(avatarId)}`).then((answer) => answer.data),
      ]);
      if (opening !== this.opening) return null;
      const { names, extras } = await this.viewer.show(glb.bytes);
      if (opening !== this.opening) return null;
      this.glb = glb;
      this.buildSliders(names);
      this.buildPresets(names);
      renderFeatures(byId('features'), info.facialFeatures);
      byId('download').disabled = false;
      say(this.message, names.length
        ? 'Drag to turn the head, scroll or pinch to zoom; the sliders move its face.'
        : 'Drag to turn the head, scroll or pinch to zoom. This head has no morph targets to move.');
      this.section.dataset.state = 'ready';
      return extras;
    } catch (error) {
      if (opening !== this.opening) return null;
      say(this.message, `The avatar could not be shown: ${error.message}`, 'error');
      this.section.dataset.state = 'error';
      return null;
    } finally {
      if (opening === this.opening) this.section.removeAttribute('aria-busy');
    }
  }

  close() {
    this.opening += 1;
    this.section.hidden = true;
    this.section.dataset.state = 'empty';
    this.viewer?.clear();
    this.glb = null;
    this.avatarId = null;
  }

  buildSliders(names) {
    this.sliders.clear();
    const groups = new Map(GROUPS.map(([prefix, title]) => [prefix, { title, names: [] }]));
    const other = { title: 'Other', names: [] };
    for (const name of names) (groups.get(/^[a-z]+/.exec(name)?.[0]) ?? other).names.push(name);
    const fieldsets = [...groups.values(), other].filter((group) => group.names.length).map((group) => el('fieldset', {},
      el('legend', {}, group.title),
      ...group.names.map((name) => this.slider(name))));
    byId('morphs').replaceChildren(...fieldsets);
  }

  slider(name) {
    const id = `morph-${name}`;
    const input = el('input', { type: 'range', id, min: 0, max: 1, step: 0.01, value: 0, 'data-morph': name });
    const output = el('output', { for: id }, '0.00');
    input.addEventListener('input', () => {
      output.value = Number(input.value).toFixed(2);
      this.viewer.setMorph(name, Number(input.value));
    });
    this.sliders.set(name, { input, output });
    return el('div', { class: 'morph' }, el('label', { for: id }, name), input, output);
  }

  buildPresets(names) {
    const available = PRESETS.filter(([label, weights]) => label === 'Neutral' || Object.keys(weights).some((name) => names.includes(name)));
    byId('presets').replaceChildren(...(names.length ? available : []).map(([label, weights]) => {
      const button = el('button', { type: 'button', class: 'button button-secondary' }, label);
      button.addEventListener('click', () => this.applyWeights(weights));
      return button;
    }));
  }

  /** Set every slider: the named weights, 0 for the rest. */
  applyWeights(weights) {
    for (const [name, { input, output }] of this.sliders) {
      const value = weights[name] ?? 0;
      input.value = value;
      output.value = value.toFixed(2);
      this.viewer.setMorph(name, value);
    }
  }
}

/** The service's facialFeatures as a definition list. */
function renderFeatures(list, features) {
  if (!features) {
    list.replaceChildren(el('dt', {}, 'Features'), el('dd', {}, 'The service reported none for this avatar.'));
    return;
  }
  const rows = [];
  const add = (term, ...description) => rows.push(el('dt', {}, term), el('dd', {}, ...description));
  const uncertain = new Set(Array.isArray(features.uncertain) ? features.uncertain : []);
  // "oval (uncertain)": the service reports a feature too near its decision line to call.
  const hedged = (name, text) => (uncertain.has(name) ? `${text} (uncertain)` : text);
  if (features.faceShape) add('Face shape', hedged('faceShape', features.faceShape));
  const tone = features.skinTone;
  if (tone && typeof tone.r === 'number') {
    const swatch = el('span', { class: 'swatch', 'aria-hidden': 'true' });
    swatch.style.backgroundColor = `rgb(${tone.r}, ${tone.g}, ${tone.b})`;
    const confidence = typeof tone.confidence === 'number' ? ` (confidence ${Math.round(tone.confidence * 100)}%)` : '';
    add('Skin tone', swatch, `RGB ${tone.r}, ${tone.g}, ${tone.b}${confidence}`);
  }
  const seen = (flags) => Object.entries(flags || {}).filter(([, on]) => on === true)
    .map(([name]) => hedged(name, words(name)));
  if (features.expressions) add('Expression', seen(features.expressions).join(', ') || 'neutral');
  if (features.accessories) add('Accessories', seen(features.accessories).join(', ') || 'none seen');
  if (features.scores) {
    add('Scores', Object.entries(features.scores)
      .map(([name, score]) => `${words(name)} ${typeof score === 'number' ? `${Math.round(score * 100)}%` : score}`).join(', '));
  }
  if (features.confidence && typeof features.confidence === 'object') {
    add('Confidence', Object.entries(features.confidence)
      .map(([name, value]) => `${words(name)} ${typeof value === 'number' ? `${Math.round(value * 100)}%` : value}`).join(', '));
  }
  const maybe = [...uncertain].filter((name) => !['faceShape'].includes(name));
  if (maybe.length) add('Uncertain', maybe.map(words).join(', '));
  const shown = new Set(['faceShape', 'skinTone', 'expressions', 'accessories', 'scores', 'confidence', 'uncertain']);
  for (const [name, value] of Object.entries(features)) {
    if (!shown.has(name)) add(words(name), typeof value === 'object' ? JSON.stringify(value) : String(value));
  }
  list.replaceChildren(...rows);
}

/** "raisedEyebrows" → "raised eyebrows". */
function words(name) {
  return name.replace(/([a-z])([A-Z])/g, '$1 $2').toLowerCase();
}
