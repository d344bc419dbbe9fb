// "My avatars": the token (pasted once, kept in this browser) and the caller's avatars, a page at
// a time, each with a thumbnail and open / download / delete.
//
// Thumbnails are drawn here from each GLB (three.js, off screen) and kept in localStorage, so a
// head is downloaded for its thumbnail once per browser rather than on every visit; the service
// stays free of rendering work.

import { ApiError, downloadGlb, readEnvelope, authHeaders, requestJson, storeToken, storedToken } from './api.js';
import { byId, el, say, saveBytes } from './dom.js';
import { renderThumbnail } from './viewer.js';

const PAGE_SIZE = 6;
const THUMB_PREFIX = 'avatar-service.thumbnail.';

export class MyAvatars {
  /** @param {{onOpen: (avatarId: string) => void, onDeleted: (avatarId: string) => void}} hooks */
  constructor({ onOpen, onDeleted }) {
    this.onOpen = onOpen;
    this.onDeleted = onDeleted;
    this.page = 1;
    this.loading = 0;
    this.list = byId('avatar-list');
    this.message = byId('list-message');
    this.tokenInput = byId('token');
    this.tokenStatus = byId('token-status');
    this.tokenInput.value = storedToken();
    this.describeToken();
    byId('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const token = this.tokenInput.value.trim().replace(/^Bearer\s+/i, '');
      storeToken(token);
      this.tokenInput.value = token;
      this.describeToken(token ? 'Saved in this browser.' : '');
      this.load(1);
    });
    byId('forget-token').addEventListener('click', () => {
      storeToken('');
      this.tokenInput.value = '';
      this.describeToken('Forgotten: this browser no longer sends a token.');
      this.load(1);
    });
    byId('previous-page').addEventListener('click', () => this.load(this.page - 1));
    byId('next-page').addEventListener('click', () => this.load(this.page + 1));
  }

  describeToken(prefix = '') {
    const state = storedToken() ? 'Your avatars are listed below.' : 'No token saved: avatars made without one belong to nobody and are not listed.';
    say(this.tokenStatus, `${prefix} ${state}`.trim(), prefix.startsWith('Saved') ? 'ok' : '');
  }

  /** Show page `page` of the caller's avatars, `notice` (what was just done) before their count. */
  async load(page = this.page, notice = '') {
    const loading = ++this.loading;
    byId('pager').hidden = true;
    if (!storedToken()) {
      this.list.replaceChildren();
      say(this.message, 'Paste your access token above to see your avatars.');
      return;
    }
    say(this.message, 'Loading your avatars…');
    let data;
    try {
      ({ data } = await requestJson(`/api/avatar?page=${page}&limit=${PAGE_SIZE}`));
    } catch (error) {
      if (loading !== this.loading) return;
      this.list.replaceChildren();
      const hint = error instanceof ApiError && error.status === 401 ? ' Check the token, or ask the operator for a new one.' : '';
      say(this.message, `${error.message}${hint}`, 'error');
      return;
    }
    if (loading !== this.loading) return;
    const pages = Math.max(1, Math.ceil(data.total / data.limit));
    if (data.avatars.length === 0 && page > 1) {
      await this.load(Math.min(page - 1, pages), notice); // the last one of the last page was deleted
      return;
    }
    this.page = page;
    const count = data.total ? `${data.total} avatar${data.total === 1 ? '' : 's'}.` : 'You have no avatars yet: make one under "New avatar".';
    say(this.message, `${notice} ${count}`.trim(), notice ? 'ok' : '');
    const cards = data.avatars.map((item) => this.card(item));
    this.list.replaceChildren(...cards.map((card) => card.element));
    byId('pager').hidden = pages <= 1;
    byId('page-label').textContent = `Page ${page} of ${pages}`;
    byId('previous-page').disabled = page <= 1;
    byId('next-page').disabled = page >= pages;
    // One at a time: each thumbnail is a download and a render.
    for (const card of cards) {
      if (loading !== this.loading) return;
      await card.drawThumbnail();
    }
  }

  card(item) {
    const id = item.avatarId;
    const made = item.createdAt ? new Date(item.createdAt).toLocaleString() : 'unknown time';
    const completed = item.status === 'completed';
    const preview = el('div', { class: 'preview' }, completed ? 'Drawing…' : item.status);
    const open = el('button', { type: 'button', class: 'button button-primary', 'aria-label': `Open the avatar made ${made}` }, 'Open');
    const download = el('button', { type: 'button', class: 'button button-secondary', 'aria-label': `Download the avatar made ${made}` }, 'Download');
    const remove = el('button', { type: 'button', class: 'button button-danger', 'aria-label': `Delete the avatar made ${made}` }, 'Delete');
    open.disabled = download.disabled = !completed;
    const element = el('li', { class: 'avatar-card', 'data-avatar-id': id },
      preview,
      el('p', { class: 'meta' }, `Made ${made}`, el('br'), `Status: ${item.status}`, el('br'), el('small', {}, id)),
      el('div', { class: 'actions' }, open, download, remove));
    open.addEventListener('click', () => this.onOpen(id));
    download.addEventListener('click', async () => {
      try {
        const glb = await downloadGlb(id);
        saveBytes(glb.bytes, glb.filename, 'model/gltf-binary');
      } catch (error) {
        say(this.message, error.message, 'error');
      }
    });
    remove.addEventListener('click', () => this.remove(id, made));
    const drawThumbnail = async () => {
      if (!completed) return;
      try {
        const blob = cachedThumbnail(id) ?? await cacheThumbnail(id, await renderThumbnail((await downloadGlb(id)).bytes));
        preview.replaceChildren(el('img', { src: URL.createObjectURL(blob), alt: `Front view of the avatar made ${made}` }));
      } catch (error) {
        preview.textContent = 'No preview';
        preview.title = error.message;
      }
    };
    return { element, drawThumbnail };
  }

  async remove(id, made) {
    if (!window.confirm(`Delete the avatar made ${made}? Its GLB is removed from the service for good.`)) return;
    try {
      const response = await fetch(`/api/avatar/${encodeURIComponent(id)}`, { method: 'DELETE', headers: authHeaders() });
      await readEnvelope(response);
    } catch (error) {
      say(this.message, error.message, 'error');
      return;
    }
    forgetThumbnail(id);
    this.onDeleted(id);
    await this.load(this.page, `Deleted the avatar made ${made}.`);
  }
}

function cachedThumbnail(id) {
  let dataUrl = null;
  try {
    dataUrl = localStorage.getItem(THUMB_PREFIX + id);
  } catch {
    return null;
  }
  if (!dataUrl) return null;
  const [head, base64] = dataUrl.split(',');
  const binary = atob(base64);
  return new Blob([Uint8Array.from(binary, (char) => char.charCodeAt(0))], { type: head.slice(5, head.indexOf(';')) });
}

async function cacheThumbnail(id, blob) {
  const dataUrl = await new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
  try {
    localStorage.setItem(THUMB_PREFIX + id, dataUrl);
  } catch {
    // storage full or off: the thumbnail is drawn again next time
  }
  return blob;
}

function forgetThumbnail(id) {
  try {
    localStorage.removeItem(THUMB_PREFIX + id);
  } catch {
    // nothing kept
  }
}
