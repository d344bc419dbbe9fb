// The progress panel: sending the photos, then the job's stage, progress and timings as the
// status endpoint reports them; warnings; and for a failed job, why and what to do.

import { byId, el, formatMs, say } from './dom.js';

const STAGE_TEXT = {
  queued: 'Waiting for a free worker',
  preprocessing: 'Finding the face in each photo',
  inference: 'Measuring the face',
  exporting: 'Building the 3D head',
  completed: 'Done: your avatar is ready',
  failed: 'The avatar could not be made',
  canceled: 'The avatar was canceled',
};

// The status endpoint's timings (milliseconds) in a reading order; any others follow as named.
const TIMING_NAMES = {
  queueWait: 'Waiting in the queue',
  preprocessStage: 'Preprocessing (whole stage)',
  decode: 'Reading the photos',
  detect: 'Finding the faces',
  crop: 'Cropping the faces',
  inferenceQueueWait: 'Waiting for the landmark model',
  inferenceStage: 'Landmark model (whole stage)',
  landmarks: 'Landmark model',
  exportQueueWait: 'Waiting for the head builder',
  exportStage: 'Building the head (whole stage)',
  mesh: 'Fitting the mesh',
  texture: 'Baking the texture',
  features: 'Measuring the features',
  glb: 'Writing the GLB',
  total: 'Total',
};

const SERVICE_TROUBLE = new Set(['timeout', 'stalled', 'internal_error', 'models_unavailable',
  'queue_unavailable', 'storage_unavailable']);

/** What a person can do about a failed job, from its error code. */
export function adviceFor(error, avatarId) {
  const code = error?.code;
  const view = error?.view;
  const tellOperator = `If it keeps failing, give the operator the avatar id ${avatarId}.`;
  if (code === 'no_face') {
    return `Take the ${view ? `${view} ` : ''}photo again: the whole face in view and not too small, turned as its sketch shows, in even light. Then choose it above and send the photos again.`;
  }
  if (code === 'invalid_image') return `Choose another ${view ? `${view} ` : ''}photo file: this one could not be read. Then send the photos again.`;
  if (SERVICE_TROUBLE.has(code)) return `This was the service's trouble, not your photos': send them again in a few minutes. ${tellOperator}`;
  return `Check each photo against its sketch and send them again. ${tellOperator}`;
}

export class ProgressPanel {
  constructor() {
    this.panel = byId('progress');
    this.stage = byId('progress-stage');
    this.bar = byId('progress-bar');
    this.percent = byId('progress-percent');
    this.warnings = byId('progress-warnings');
    this.failure = byId('progress-failure');
    this.timings = byId('progress-timings');
  }

  reset() {
    this.panel.hidden = false;
    this.failure.hidden = true;
    this.warnings.hidden = true;
    this.warnings.replaceChildren();
    this.timings.replaceChildren();
    this.setBar(0);
  }

  hide() {
    this.panel.hidden = true;
  }

  sending(fraction) {
    say(this.stage, `Sending the photos… ${Math.round(fraction * 100)}%`);
    this.setBar(0);
  }

  setBar(fraction) {
    this.bar.value = fraction;
    this.percent.textContent = `${Math.round(fraction * 100)}%`;
  }

  /** Show one status body of GET /api/avatar/jobs/:id. */
  update(status) {
    const text = STAGE_TEXT[status.status] ?? status.status;
    const stage = ['failed', 'canceled'].includes(status.status) && status.stage ? ` (stopped while: ${(STAGE_TEXT[status.stage] ?? status.stage).toLowerCase()})` : '';
    say(this.stage, text + stage, status.status === 'failed' ? 'error' : '');
    this.setBar(typeof status.progress === 'number' ? status.progress : 0);
    this.showTimings(status.timings || {});
    if (Array.isArray(status.warnings)) this.showWarnings(status.warnings);
    if (status.status === 'failed') {
      byId('failure-message').textContent = status.error?.message || 'The service did not say why.';
      byId('failure-advice').textContent = adviceFor(status.error, status.avatarId);
      this.failure.hidden = false;
    } else if (status.status === 'canceled') {
      byId('failure-message').textContent = 'The job was canceled before it finished.';
      byId('failure-advice').textContent = 'Send the photos again to make a new avatar.';
      this.failure.hidden = false;
    }
  }

  /** The request could not be made or followed (a refusal, a lost connection). */
  lost(message) {
    say(this.stage, message, 'error');
  }

  showTimings(timings) {
    const names = Object.keys(timings);
    const known = Object.keys(TIMING_NAMES).filter((name) => names.includes(name));
    const rest = names.filter((name) => !(name in TIMING_NAMES)).sort();
    this.timings.replaceChildren(...[...known, ...rest].flatMap((name) => [
      el('dt', {}, TIMING_NAMES[name] ?? name), el('dd', {}, formatMs(timings[name])),
    ]));
  }

  /** Warnings in words, e.g. that a side photo was left out. */
  showWarnings(warnings) {
    this.warnings.replaceChildren(...warnings.map((warning) => el('li', {}, warning)));
    this.warnings.hidden = warnings.length === 0;
  }
}
