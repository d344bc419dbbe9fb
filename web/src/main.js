// The page: "New avatar" (upload → progress → viewer) and "My avatars", switched by the URL's
// fragment (#create, #mine) so the browser's back button and bookmarks work.

import { ApiError, followJob, postPhotos } from './api.js';
import { MyAvatars } from './avatars.js';
import { byId } from './dom.js';
import { describeLimits, limitsFromPage } from './photos.js';
import { ProgressPanel } from './progress.js';
import { UploadForm, VIEWS } from './upload.js';
import { ViewerPanel } from './viewerPanel.js';

const limits = limitsFromPage();
byId('limits-text').textContent = describeLimits(limits);

const progress = new ProgressPanel();
const viewer = new ViewerPanel();
const mine = new MyAvatars({
  onOpen: (avatarId) => viewer.open(avatarId, byId('token-form')),
  onDeleted: (avatarId) => { if (viewer.avatarId === avatarId) viewer.close(); },
});
const upload = new UploadForm(byId('upload-form'), limits, makeAvatar);

async function makeAvatar(files) {
  upload.setBusy(true);
  viewer.close();
  progress.reset();
  progress.sending(0);
  try {
    let accepted;
    try {
      accepted = await postPhotos(files, (fraction) => progress.sending(fraction));
    } catch (error) {
      progress.hide();
      upload.showRefusal(withAdvice(error));
      return;
    }
    progress.update({ ...accepted, progress: 0, timings: {} });
    let status;
    try {
      status = await followJob(accepted.avatarId, (answer) => progress.update(answer));
    } catch (error) {
      progress.lost(`Lost track of the avatar (${error.message}). It may still finish: look for it under "My avatars", or send the photos again.`);
      return;
    }
    // A job that failed over one photo (no face in it, unreadable): say so beside that photo.
    if (status.status === 'failed' && VIEWS.includes(status.error?.view)) {
      upload.refuse(status.error.view, `${status.error.message}. Choose another ${status.error.view} photo.`);
    }
    if (status.status !== 'completed') return;
    const extras = await viewer.open(accepted.avatarId, byId('progress'));
    // The service's own warnings when it gives them; else what the GLB says about the views it used.
    if (!Array.isArray(status.warnings) && extras && Array.isArray(extras.views)) {
      progress.showWarnings(VIEWS.filter((view) => !extras.views.includes(view)).map((view) =>
        `The ${view} photo was not used: no face could be found or fitted in it, so the head was built without it. A clearer ${view} photo gives a better ${view} side.`));
    }
  } finally {
    upload.setBusy(false);
  }
}

/** A refusal with what to do about it where the message alone does not say. */
function withAdvice(error) {
  if (error instanceof ApiError && error.status === 401) {
    error.message = `${error.message} Save your access token under "My avatars", then send the photos again.`;
  }
  return error;
}

function showTab() {
  const tab = location.hash === '#mine' ? 'mine' : 'create';
  for (const panel of document.querySelectorAll('[data-tab-panel]')) panel.hidden = panel.id !== tab;
  for (const link of document.querySelectorAll('[data-tab]')) {
    if (link.dataset.tab === tab) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (tab === 'mine') mine.load();
}

window.addEventListener('hashchange', showTab);
showTab();
document.documentElement.classList.add('app-ready');
