// What the Assent console (/) and the support page (/support) share: talking to the server, small DOM
// helpers, dates, and the step-up challenge dialog that follows a challenge until its release. No framework,
// no inline code, nothing from another origin: both pages are served under a strict Content-Security-Policy.
// Text from the server is only ever set with textContent / append, never as HTML.
'use strict';

const FINAL_STATUSES = new Set(['approved', 'denied', 'expired', 'released']);

const $ = (id) => document.getElementById(id);

// What each page tells this file: its session routes (a 401 there is an answer, not an ended session),
// whether someone is signed in, what to do when the session ends, where its challenges live, and what
// to refresh once the challenge dialog closes.
const page = {
  sessionPaths: [],
  signedIn: () => false,
  sessionEnded: () => {},
  challenges: '',
  afterChallenge: () => {},
};

// ---------------------------------------------------------------------------------------------
// Talking to the server

/** An error answer (RFC 9457 problem+json) or a network failure (status 0). */
class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail || problem.title || `The server answered ${status}.`);
    this.status = status;
    this.title = problem.title;
    this.detail = problem.detail;
    this.retryAfter = retryAfter;
    // The whole problem, for its extension members (`reauth_required`, `reauth`, `reauth_url`).
    this.problem = problem;
  }
}

// How far the server's clock is ahead of this browser's, from the Date header, so that the countdown
// matches the server's expiry even on a machine whose clock is off. The header has a one-second
// resolution, so small differences are ignored.
let clockSkew = 0;

async function api(method, path, body) {
  const init = {
    method,
    credentials: 'same-origin',
    headers: { Accept: 'application/json, application/problem+json' },
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, { title: 'Network error', detail: 'The server could not be reached. Check the connection and try again.' });
  }
  const serverNow = Date.parse(res.headers.get('Date') || '');
  if (!Number.isNaN(serverNow)) {
    const skew = serverNow - Date.now();
    clockSkew = Math.abs(skew) > 2000 ? skew : 0;
  }
  const data = await readJson(res);
  if (res.ok) return data;
  // Every console route but the session itself answers 401 once the session has ended
  // (it expired, or the user signed out in another tab). The re-authentication also answers 401 for
  // a wrong password: its caller finds out which it was.
  if (res.status === 401 && page.signedIn() && !page.sessionPaths.includes(path)) page.sessionEnded();
  throw new ApiError(res.status, data || {}, res.headers.get('Retry-After'));
}

async function readJson(res) {
  const text = await res.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function describe(err) {
  return err.title && err.detail ? `${err.title}: ${err.detail}` : err.message;
}

/** A 429 answer in words: the server's reason (or `fallback`), and when to try again. */
function throttledText(err, fallback) {
  const reason = err.detail ? sentence(err.detail) : fallback;
  return [reason, tryAgainText(err.retryAfter)].filter(Boolean).join(' ');
}

/** A refused sign-in, said on the form (`what` names its fields); the password is cleared and focused. */
function signInRefused(err, what, passwordField) {
  let message = describe(err);
  if (err.status === 401) message = `Sign-in failed: check the ${what}.`;
  else if (err.status === 429) message = throttledText(err, 'Too many sign-in attempts.');
  notify($('signin-message'), message, 'error');
  passwordField.value = '';
  passwordField.focus();
}

/** The server's details are lower-case clauses ("too many failed sign-ins; wait …"): one sentence. */
function sentence(text) {
  const t = text.trim();
  return `${t.charAt(0).toUpperCase()}${t.slice(1)}${/[.!?]$/.test(t) ? '' : '.'}`;
}

/** "You may try again at 14:05 (in 15 minutes)." from a Retry-After header (seconds or an HTTP date). */
function tryAgainText(retryAfter) {
  if (!retryAfter) return '';
  const value = retryAfter.trim();
  const at = /^\d+$/.test(value) ? Date.now() + Number(value) * 1000 : Date.parse(value);
  if (Number.isNaN(at)) return '';
  return `You may try again at ${timeFormat.format(at)} (${relativeTime(at)}).`;
}

// ---------------------------------------------------------------------------------------------
// Small DOM helpers

/** Builds an element; strings among the children become text nodes (never parsed as HTML). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') el.className = value;
    else if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? '' : value);
  }
  el.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return el;
}

/** Shows a message in a live region; kind is info, success, warning or error. */
function notify(el, content, kind = 'info') {
  if (!content) {
    el.replaceChildren();
    el.className = 'notice';
    return;
  }
  el.replaceChildren(...[content].flat());
  el.className = `notice notice-${kind}`;
}

/**
 * Runs an action for a button, ignoring clicks while it runs. aria-disabled rather than disabled,
 * so that the button keeps the keyboard focus.
 */
async function busy(button, action) {
  if (button.getAttribute('aria-busy') === 'true') return;
  button.setAttribute('aria-busy', 'true');
  button.setAttribute('aria-disabled', 'true');
  try {
    await action();
  } finally {
    button.removeAttribute('aria-busy');
    button.removeAttribute('aria-disabled');
  }
}

// Where to put the focus back when a dialog closes.
const dialogOpener = new WeakMap();

function openDialog(dialog, opener = document.activeElement) {
  dialogOpener.set(dialog, opener);
  if (!dialog.open) dialog.showModal();
}

function closeIfOpen(dialog) {
  if (dialog.open) dialog.close();
}

function restoreFocus(dialog) {
  const opener = dialogOpener.get(dialog);
  dialogOpener.delete(dialog);
  if (opener && opener.isConnected && !document.querySelector('dialog[open]')) opener.focus();
}

/** Asks for a confirmation in the confirm dialog; resolves to true when confirmed. */
function confirmAction({ title, paragraphs, confirmLabel }) {
  const dialog = $('confirm-dialog');
  $('confirm-title').textContent = title;
  $('confirm-text').replaceChildren(...paragraphs.map((p) => h('p', {}, p)));
  $('confirm-ok').textContent = confirmLabel;
  dialog.returnValue = '';
  openDialog(dialog);
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'confirm'), { once: true });
  });
}

// Copy state per button, so a second click restarts the "Copied" timer.
const copiedTimers = new WeakMap();

async function copyText(text, button, statusEl, field) {
  try {
    // The Clipboard API exists only in a secure context (https, or http on localhost).
    if (!navigator.clipboard) throw new Error('no clipboard');
    await navigator.clipboard.writeText(text);
  } catch {
    field.focus();
    field.select();
    statusEl.textContent = 'The browser did not allow copying. The text is selected: press Ctrl+C (⌘C on a Mac).';
    return;
  }
  button.textContent = 'Copied';
  button.classList.add('is-copied');
  statusEl.textContent = 'Copied to the clipboard.';
  clearTimeout(copiedTimers.get(button));
  copiedTimers.set(button, setTimeout(() => resetCopy(button, statusEl), 4000));
}

function resetCopy(button, statusEl) {
  clearTimeout(copiedTimers.get(button));
  button.textContent = 'Copy';
  button.classList.remove('is-copied');
  statusEl.textContent = '';
}

// ---------------------------------------------------------------------------------------------
// Dates: RFC 3339 UTC from the server, shown in the user's locale and time zone.

const dateTimeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'long' });
const timeFormat = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });
const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto' });

function timeEl(iso, format = dateTimeFormat) {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return iso ? String(iso) : '—';
  return h('time', { datetime: iso, title: fullFormat.format(date) }, format.format(date));
}

function relativeTime(ms) {
  const seconds = Math.round((ms - Date.now()) / 1000);
  if (Math.abs(seconds) < 120) return relativeFormat.format(seconds, 'second');
  if (Math.abs(seconds) < 3600) return relativeFormat.format(Math.round(seconds / 60), 'minute');
  return relativeFormat.format(Math.round(seconds / 3600), 'hour');
}

// ---------------------------------------------------------------------------------------------
// Step-up challenges approved on a phone. One dialog and one follower for every action, on either
// page; what differs is in each page's STEP_UPS.

const WAITING_ON_PHONE = 'Waiting for your approval on your phone…';
const PICK_THE_NUMBER = 'Your phone shows three numbers. Pick this one:';

// What each kind of step-up is for; every page adds its own: {title, intro, waiting, result, restart, show}.
const STEP_UPS = {};

// The challenge the dialog follows: {id, kind, number, opener, expiresAt, source, timer, ended}.
let challenge = null;
let retryAction = null;

/** A step-up that did not start: said in the dialog when it was a retry from there, else on the page. */
function startFailed(kind, opener, pageMessage, text) {
  if ($('challenge-dialog').open) {
    setChallengeStatus(text, 'error');
    offerRetry(kind, opener);
  } else {
    notify(pageMessage, text, 'error');
  }
}

/** The 202 answer of a step-up: shows its number in the dialog and follows it until it ends. */
function showChallenge(answer, kind, opener) {
  const stepUp = STEP_UPS[kind];
  challenge = {
    id: answer.challenge_id,
    kind,
    number: answer.number,
    opener,
    expiresAt: Date.parse(answer.expires_at),
    source: null,
    timer: null,
    ended: false,
  };
  $('challenge-title').textContent = stepUp.title;
  $('challenge-intro').textContent = stepUp.intro;
  $('challenge-number').textContent = String(answer.number);
  $('challenge-devices').replaceChildren(...notifiedText(answer.notified_devices));
  hideRetryButton();
  setChallengeStatus(stepUp.waiting);
  openDialog($('challenge-dialog'), opener);
  startCountdown(challenge);
  follow(challenge);
}

function notifiedText(count) {
  if (count > 0) {
    return [`A notification was sent to ${count === 1 ? '1 device' : `${count} devices`}.`];
  }
  return ['No push was sent; open the Assent app (or ', h('code', {}, 'assent companion pending'), ') to see the request.'];
}

function setChallengeStatus(text, kind = 'info') {
  notify($('challenge-status'), text, kind);
}

function startCountdown(c) {
  const tick = () => {
    const left = Math.max(0, Math.ceil((c.expiresAt - (Date.now() + clockSkew)) / 1000));
    const text = left > 0 ? `Expires in ${Math.floor(left / 60)}:${String(left % 60).padStart(2, '0')}` : 'Expiring…';
    $('challenge-countdown').textContent = Number.isNaN(left) ? '' : text;
  };
  tick();
  c.timer = setInterval(tick, 1000);
}

// Follows the challenge over server-sent events (no polling). The server sends the status at once and
// at each change, and closes the stream after a final one.
function follow(c) {
  const source = new EventSource(`${page.challenges}/${encodeURIComponent(c.id)}/events`);
  c.source = source;
  source.addEventListener('status', (event) => {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    onStatus(c, data.status, data.awaiting);
  });
  source.addEventListener('error', () => {
    if (c !== challenge || c.ended) return;
    if (source.readyState === EventSource.CLOSED) {
      // The browser has given up reconnecting (the server answered with an error instead of a
      // stream): ask for the status once.
      c.source = null;
      checkOnce(c);
    } else {
      // EventSource reconnects by itself; the server then repeats the current status.
      setChallengeStatus('Connection lost; reconnecting…', 'warning');
    }
  });
}

async function checkOnce(c) {
  let s;
  try {
    s = await api('GET', `${page.challenges}/${encodeURIComponent(c.id)}`);
  } catch (err) {
    if (c !== challenge) return;
    endChallenge(c);
    setChallengeStatus(`Lost track of the request. ${describe(err)}`, 'error');
    offerRetry(c.kind, c.opener);
    return;
  }
  if (c !== challenge) return;
  onStatus(c, s.status, s.awaiting);
  if (!c.ended) {
    // Still pending, but no stream to tell us when that changes: let the user follow it again.
    setChallengeStatus('The connection to the server was lost while waiting.', 'error');
    retryAction = () => {
      hideRetryButton();
      setChallengeStatus(STEP_UPS[c.kind].waiting);
      follow(c);
    };
    showRetryButton('Reconnect');
  }
}

function onStatus(c, status, awaiting) {
  if (c !== challenge || c.ended) return;
  if (status === 'pending' && awaiting === 'second_approval') {
    // The two-person rule: the second person picks the same number on their own phone.
    setChallengeStatus(`Approved on your phone. Waiting for a second owner or admin to approve; they pick ${c.number}.`, 'success');
    return;
  }
  if (status === 'pending') {
    setChallengeStatus(STEP_UPS[c.kind].waiting);
    return;
  }
  if (!FINAL_STATUSES.has(status)) return;
  endChallenge(c);
  switch (status) {
    case 'approved':
      release(c);
      break;
    case 'denied':
      setChallengeStatus('The request was denied on your phone.', 'error');
      offerRetry(c.kind, c.opener);
      break;
    case 'expired':
      setChallengeStatus('The request expired before it was approved.', 'error');
      offerRetry(c.kind, c.opener);
      break;
    case 'released':
      setChallengeStatus(`This request has already been used. Start a new one to get ${STEP_UPS[c.kind].result}.`, 'warning');
      offerRetry(c.kind, c.opener);
      break;
  }
}

/** A final status: stop listening (so EventSource does not reconnect) and stop the countdown. */
function endChallenge(c) {
  c.ended = true;
  if (c.source) c.source.close();
  c.source = null;
  clearInterval(c.timer);
  $('challenge-countdown').textContent = '';
}

function stopChallenge() {
  if (challenge) endChallenge(challenge);
  challenge = null;
  retryAction = null;
}

function offerRetry(kind, opener) {
  retryAction = () => busy($('challenge-retry'), () => STEP_UPS[kind].restart(opener));
  showRetryButton('Try again');
}

function hideRetryButton() {
  const retry = $('challenge-retry');
  const hadFocus = document.activeElement === retry;
  retry.hidden = true;
  $('challenge-close').textContent = 'Cancel';
  if (hadFocus) $('challenge-close').focus(); // a hidden button cannot keep the focus
}

function showRetryButton(label) {
  const retry = $('challenge-retry');
  retry.textContent = label;
  retry.hidden = false;
  $('challenge-close').textContent = 'Close';
  retry.focus();
}

/** Approved: the release hands what the step-up was for (once), shown by the step-up's own dialog. */
async function release(c) {
  const stepUp = STEP_UPS[c.kind];
  setChallengeStatus(`Approved. Getting ${stepUp.result}…`, 'success');
  let released;
  try {
    released = await api('POST', `${page.challenges}/${encodeURIComponent(c.id)}/release`);
  } catch (err) {
    if (c !== challenge) return;
    setChallengeStatus(`Could not get ${stepUp.result}. ${describe(err)}`, 'error');
    offerRetry(c.kind, c.opener);
    return;
  }
  if (c !== challenge) return; // the user closed the dialog meanwhile
  $('challenge-dialog').close();
  stepUp.show(released, c.opener);
}

function onChallengeDialogClosed() {
  stopChallenge();
  $('challenge-number').textContent = '';
  notify($('challenge-status'), '');
  restoreFocus($('challenge-dialog'));
  page.afterChallenge();
}

// ---------------------------------------------------------------------------------------------
// Phones: a person's list, and the enrollment dialog (its QR code and code)

const PLATFORMS = { apns: 'iOS (APNs)', fcm: 'Android (FCM)' };
const PUSH_STATES = {
  ok: 'push notifications on',
  invalid: 'push token invalid — it is renewed when the app next starts',
  none: 'no push token: requests show when the app checks for them',
};

/** A phone in a person's list; with `onRemove`, a Remove button that calls it. */
function deviceItem(device, onRemove) {
  const name = device.name || 'Unnamed device';
  const push = PUSH_STATES[device.push_token_state];
  return h('li', { class: 'device' },
    h('div', { class: 'device-text' },
      h('p', { class: 'device-name' }, name, ' ', h('span', { class: 'device-platform' }, PLATFORMS[device.platform] || device.platform || '')),
      h('p', { class: 'device-meta' },
        'Enrolled ', timeEl(device.created_at),
        ' · last seen ', device.last_seen_at ? timeEl(device.last_seen_at) : 'never'),
      push && h('p', { class: `device-push push-${device.push_token_state}` }, push)),
    onRemove && h('button', {
      type: 'button',
      class: 'button button-quiet',
      'aria-label': `Remove ${name}`,
      onclick: (event) => onRemove(device, name, event.currentTarget),
    }, 'Remove'));
}

/** The enrollment dialog, for a code from the 201 answer or from a `device.enroll` release. */
function showEnrollment(enrollment, opener) {
  $('enrollment-qr').replaceChildren(...(enrollment.qr_svg
    ? [h('img', { class: 'qr', src: svgDataUrl(enrollment.qr_svg), alt: 'QR code that enrolls your phone in Assent' })]
    : []));
  $('enrollment-code').textContent = enrollment.code;
  $('enrollment-expiry').replaceChildren('The code works once, until ', timeEl(enrollment.expires_at, timeFormat), '.');
  $('enrollment-command').value = `assent companion enroll --server ${location.origin} --code ${enrollment.code}`;
  resetCopy($('copy-enrollment-command'), $('enrollment-copied'));
  openDialog($('enroll-dialog'), opener);
}

/** The server draws the QR code as an SVG document; an <img> shows it without running anything in it. */
function svgDataUrl(svg) {
  let binary = '';
  for (const byte of new TextEncoder().encode(svg)) binary += String.fromCharCode(byte);
  return `data:image/svg+xml;base64,${btoa(binary)}`;
}

// ---------------------------------------------------------------------------------------------
// Wiring

function on(id, type, handler) {
  $(id).addEventListener(type, handler);
}

