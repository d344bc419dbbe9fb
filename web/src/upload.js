// The three photo slots: pick, take or drop a photo, see it, and hear at once whether the service
// will take it; the service's own verdicts (`details[]`) land in the same place.

import { checkPhoto } from './photos.js';
import { say } from './dom.js';

export const VIEWS = ['front', 'left', 'right'];
const VIEW_NAMES = { front: 'front', left: 'left side', right: 'right side' };

export class UploadForm {
  /**
   * @param {HTMLFormElement} form
   * @param {{maxBytes: number, minSide: number, maxSide: number}} limits
   * @param {(files: Record<string, File>) => void} onSubmit
   */
  constructor(form, limits, onSubmit) {
    this.form = form;
    this.limits = limits;
    this.submitButton = form.querySelector('[type="submit"]');
    this.formMessage = form.querySelector('#form-message');
    this.busy = false;
    this.slots = {};
    for (const view of VIEWS) {
      const fieldset = form.querySelector(`.slot[data-view="${view}"]`);
      const slot = {
        fieldset,
        drop: fieldset.querySelector('[data-drop]'),
        thumb: fieldset.querySelector('.thumb'),
        pose: fieldset.querySelector('.pose'),
        hint: fieldset.querySelector('.drop-hint'),
        message: fieldset.querySelector('[data-message]'),
        file: null,
        valid: false,
        thumbUrl: null,
        checking: 0,
      };
      this.slots[view] = slot;
      for (const input of fieldset.querySelectorAll('input[type="file"]')) {
        input.addEventListener('change', () => {
          if (input.files.length) this.setFile(view, input.files[0]);
          input.value = ''; // choosing the same file again still counts as a choice
        });
      }
      fieldset.querySelector('[data-pick]').addEventListener('click', () => fieldset.querySelector(`#${view}-file`).click());
      fieldset.querySelector('[data-camera]').addEventListener('click', () => fieldset.querySelector(`#${view}-camera`).click());
      this.acceptDrops(view, slot.drop);
    }
    // A photo dropped beside a slot must not make the browser leave the page to show it.
    for (const type of ['dragover', 'drop']) window.addEventListener(type, (event) => event.preventDefault());
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (this.ready()) onSubmit(this.files());
    });
  }

  acceptDrops(view, drop) {
    drop.addEventListener('dragover', (event) => {
      event.preventDefault();
      event.dataTransfer.dropEffect = 'copy';
      drop.classList.add('dragging');
    });
    drop.addEventListener('dragleave', () => drop.classList.remove('dragging'));
    drop.addEventListener('drop', (event) => {
      event.preventDefault();
      drop.classList.remove('dragging');
      const [file] = event.dataTransfer.files;
      if (file) this.setFile(view, file);
    });
  }

  /** Take `file` for `view`: show it, check it against the contract, say what was found. */
  async setFile(view, file) {
    const slot = this.slots[view];
    const check = ++slot.checking; // a later choice wins over a check still running
    slot.file = file;
    slot.valid = false;
    say(this.formMessage, ''); // an earlier refusal was about the earlier photos
    this.update();
    say(slot.message, `Checking ${file.name}…`);
    const verdict = await checkPhoto(file, this.limits);
    if (check !== slot.checking) return;
    this.showThumbnail(slot, verdict.ok ? file : null, view);
    slot.valid = verdict.ok;
    slot.fieldset.classList.toggle('invalid', !verdict.ok);
    slot.fieldset.classList.toggle('valid', verdict.ok);
    if (verdict.ok) {
      say(slot.message, `${file.name}: ${verdict.format.toUpperCase()}, ${verdict.width}×${verdict.height}, ${kilobytes(file.size)}. Ready.`, 'ok');
    } else {
      say(slot.message, `${file.name}: ${verdict.message}`, 'error');
    }
    this.update();
  }

  showThumbnail(slot, file, view) {
    if (slot.thumbUrl) URL.revokeObjectURL(slot.thumbUrl);
    slot.thumbUrl = file ? URL.createObjectURL(file) : null;
    slot.thumb.hidden = !file;
    slot.pose.toggleAttribute('hidden', Boolean(file));
    slot.hint.hidden = Boolean(file);
    if (file) {
      slot.thumb.src = slot.thumbUrl;
      slot.thumb.alt = `Chosen ${VIEW_NAMES[view]} photo: ${file.name}`;
    } else {
      slot.thumb.removeAttribute('src');
      slot.thumb.alt = '';
    }
  }

  ready() {
    return !this.busy && VIEWS.every((view) => this.slots[view].valid);
  }

  files() {
    return Object.fromEntries(VIEWS.map((view) => [view, this.slots[view].file]));
  }

  setBusy(busy) {
    this.busy = busy;
    this.update();
  }

  update() {
    this.submitButton.disabled = !this.ready();
    const missing = VIEWS.filter((view) => !this.slots[view].valid).map((view) => VIEW_NAMES[view]);
    if (!this.busy && !this.formMessage.classList.contains('error')) {
      say(this.formMessage, missing.length ? `Still needed: a good ${missing.join(', ')} photo.` : '');
    }
  }

  /** Show why the service refused the upload: each photo's verdict beside it, the rest below. */
  showRefusal(error) {
    const details = Array.isArray(error.details) ? error.details : null;
    if (details) {
      // The service lists one verdict per photo in the order front, left, right, then any
      // field it did not expect.
      details.forEach((verdict, index) => {
        const view = VIEWS.includes(verdict.field) ? verdict.field : VIEWS[index];
        const slot = this.slots[view];
        if (!slot || index >= VIEWS.length) return;
        if (!verdict.valid) this.refuse(view, `${verdict.filename ?? view}: ${verdict.error}`);
      });
    }
    say(this.formMessage, details ? `${error.message}: see the message beside each photo.` : error.message, 'error');
    this.update();
  }

  /** Mark `view`'s photo as one to replace, with `message` beside it. */
  refuse(view, message) {
    const slot = this.slots[view];
    slot.valid = false;
    slot.fieldset.classList.add('invalid');
    slot.fieldset.classList.remove('valid');
    say(slot.message, message, 'error');
    this.update();
  }
}

function kilobytes(bytes) {
  return bytes >= 1048576 ? `${(bytes / 1048576).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} KB`;
}
