// The Assent console: a small single-page app over the console API (CONTRACT.md §3).
// No framework, no inline code, nothing from another origin: the page is served under a strict
// Content-Security-Policy. Text from the server is only ever set with textContent / append, never as HTML.
'use strict';

const SESSION = '/v1/console/session';
const REAUTH = '/v1/console/session/reauth';
const ENROLLMENTS = '/v1/console/devices/enrollments';
const FINAL_STATUSES = new Set(['approved', 'denied', 'expired', 'released']);

const $ = (id) => document.getElementById(id);

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
  if (res.status === 401 && session && path !== SESSION && path !== REAUTH) sessionEnded();
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
// Session: sign in, sign out

let session = null; // {email, role, workspace, workspace_name, scim_base_url} while signed in
// The workspace's token policy as last loaded (null until then, and for members).
let policy = null;

const canManage = () => session !== null && (session.role === 'owner' || session.role === 'admin');

// signedOutMessage: what to say on the sign-in form should there be no session; devicesMessage: what
// to say under "Your devices" should there be one.
async function loadSession({ afterSignIn = false, signedOutMessage = '', devicesMessage = '' } = {}) {
  let s;
  try {
    s = await api('GET', SESSION);
  } catch (err) {
    if (err.status === 401) showSignIn(signedOutMessage, 'error');
    else showSignIn(describe(err), 'error');
    return;
  }
  enterConsole(s, afterSignIn);
  if (devicesMessage) {
    notify($('devices-message'), devicesMessage, 'success');
    $('add-device').focus(); // what the person came back to do
  }
}

function showSignIn(message = '', kind = 'info') {
  session = null;
  policy = null;
  $('grace-notice').hidden = true;
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  $('device-list').replaceChildren();
  $('activity-rows').replaceChildren();
  $('schemas-json').value = '';
  $('tenant-url').value = '';
  for (const id of ['dirsync-message', 'devices-message', 'activity-message']) notify($(id), '');
  $('loading').hidden = true;
  $('console-view').hidden = true;
  $('account').hidden = true;
  $('signin-view').hidden = false;
  document.title = 'Sign in · Assent';
  notify($('signin-message'), message, kind);
  const first = ['login-workspace', 'login-email', 'login-password'].map($).find((f) => !f.value);
  (first || $('login-password')).focus();
}

function sessionEnded() {
  showSignIn('Your session has ended. Sign in again.');
}

function enterConsole(s, afterSignIn) {
  session = s;
  const workspaceName = s.workspace_name || s.workspace;
  $('account-workspace').textContent = workspaceName;
  $('account-user').textContent = `${s.email} · ${s.role}`;
  // The Tenant URL is the server's public URL + /v1/scim/v2; the page's own origin is the best guess
  // should the server not say.
  $('tenant-url').value = s.scim_base_url || `${location.origin}/v1/scim/v2`;

  const manage = canManage();
  $('regenerate-token').hidden = !manage;
  $('activity-section').hidden = !manage;

  $('loading').hidden = true;
  $('signin-view').hidden = true;
  $('account').hidden = false;
  $('console-view').hidden = false;
  document.title = `Directory Sync · ${workspaceName} · Assent`;
  if (afterSignIn) $('main').focus();

  $('policy-section').hidden = !manage;
  $('schemas-section').hidden = !manage;
  loadDevices();
  if (manage) {
    loadActivity(true);
    loadPolicy();
    loadSchemas();
  }
}

async function signIn(event) {
  event.preventDefault();
  const workspace = $('login-workspace').value.trim();
  const email = $('login-email').value.trim();
  const passwordField = $('login-password');
  const missing = [$('login-workspace'), $('login-email'), passwordField].find((f) => !f.value.trim());
  if (missing) {
    notify($('signin-message'), 'Enter the workspace, e-mail and password.', 'error');
    missing.focus();
    return;
  }
  await busy($('login-submit'), async () => {
    notify($('signin-message'), '');
    try {
      await api('POST', SESSION, { workspace, email, password: passwordField.value });
    } catch (err) {
      let message = describe(err);
      if (err.status === 401) message = 'Sign-in failed: check the workspace, e-mail and password.';
      else if (err.status === 429) message = throttledText(err, 'Too many sign-in attempts.');
      notify($('signin-message'), message, 'error');
      passwordField.value = '';
      passwordField.focus();
      return;
    }
    passwordField.value = '';
    await loadSession({ afterSignIn: true });
  });
}

// Single sign-on (CONTRACT.md §11): the browser goes to the workspace's identity provider through
// /v1/sso/{workspace}/start and comes back to this page signed in, or with ?sso_error=<reason>.
const SSO_ERRORS = {
  not_configured: 'Single sign-on is not set up for this workspace.',
  invalid_state: 'That single sign-on link is not valid in this browser any more. Start again.',
  expired: 'The single sign-on took too long. Start again.',
  provider_error: 'The identity provider did not sign you in.',
  provider_unreachable: 'The identity provider could not be reached. Try again shortly.',
  email_missing: 'The identity provider did not tell your e-mail address.',
  email_not_verified: 'The identity provider has not verified your e-mail address.',
  domain_not_allowed: 'Your e-mail address is not a member of this workspace, and its domain may not join.',
  linked_elsewhere: 'This workspace member is linked to another account at the identity provider.',
  rate_limited: 'Too many single sign-on attempts from here. Wait a few minutes, then try again.',
  no_session: 'Sign in first: only a signed-in session can be confirmed with single sign-on.',
  login_not_fresh: 'The identity provider did not ask you to sign in again. Try again.',
  wrong_person: 'Someone else signed in at the identity provider: this session was not confirmed.',
  unavailable: 'Single sign-on is unavailable. Try again shortly.',
};

function ssoSignIn() {
  const field = $('login-workspace');
  const workspace = field.value.trim();
  if (!workspace) {
    notify($('signin-message'), 'Enter the workspace to sign in with single sign-on.', 'error');
    field.focus();
    return;
  }
  location.assign(`/v1/sso/${encodeURIComponent(workspace)}/start`);
}

/**
 * The value of ?name= in the address, which is then taken out of it (a reload or a bookmark must not
 * show its message again); null when absent. The value is not ours: callers map it to their own words.
 */
function takeQueryParam(name) {
  const params = new URLSearchParams(location.search);
  const value = params.get(name);
  if (value === null) return null;
  params.delete(name);
  const query = params.toString();
  history.replaceState(history.state, '', `${location.pathname}${query ? `?${query}` : ''}${location.hash}`);
  return value;
}

// The message for ?sso_error=. Only known reasons are shown as such (hasOwn: "constructor" is no reason).
function takeSsoError() {
  const reason = takeQueryParam('sso_error');
  if (reason === null) return '';
  return Object.hasOwn(SSO_ERRORS, reason)
    ? SSO_ERRORS[reason]
    : 'Single sign-on failed: the identity provider\'s answer was refused. Try again, or ask a workspace owner.';
}

// ?reauth=ok: back from confirming who one is at the identity provider. Any other value says nothing.
function takeReauthResult() {
  return takeQueryParam('reauth') === 'ok'
    ? 'You confirmed who you are with single sign-on. You can add a device now.'
    : '';
}

async function signOut() {
  await busy($('sign-out'), async () => {
    try {
      await api('DELETE', SESSION);
    } catch (err) {
      if (err.status !== 401) {
        notify($('dirsync-message'), `Could not sign out. ${describe(err)}`, 'error');
        return;
      }
    }
    showSignIn('You are signed out.');
  });
}

// ---------------------------------------------------------------------------------------------
// Step-up challenges approved on a phone: View Token, Regenerate token, and adding a phone for a
// person who has one already. One dialog and one follower for every action; what differs is here.

const WAITING_ON_PHONE = 'Waiting for your approval on your phone…';
const PICK_THE_NUMBER = 'Your phone shows three numbers. Pick this one:';

const STEP_UPS = {
  reveal: {
    title: 'Approve on your phone',
    intro: PICK_THE_NUMBER,
    waiting: WAITING_ON_PHONE,
    result: 'the token',
    restart: (opener) => startTokenChallenge('reveal', opener),
    show: showToken,
  },
  rotate: {
    title: 'Approve the new token on your phone',
    intro: PICK_THE_NUMBER,
    waiting: WAITING_ON_PHONE,
    result: 'the new token',
    // The confirmation was given already; trying again goes straight to a new challenge.
    restart: (opener) => startTokenChallenge('rotate', opener),
    show: (released, opener) => {
      showToken(released, opener);
      loadPolicy(); // the grace period of the old token, if any
    },
  },
  // A session alone never adds a phone (issue 12): a phone the person has already must agree.
  enroll: {
    title: 'Approve the new phone on a phone you already have',
    intro: 'To add a phone to your account, pick this number on a phone you already have:',
    waiting: 'Waiting for your approval on a phone you already have…',
    result: 'the enrollment code',
    restart: startEnrollment,
    show: showEnrollment,
  },
};

// The challenge the dialog follows: {id, kind, number, opener, expiresAt, source, timer, ended}.
let challenge = null;
let retryAction = null;

async function requestToken(kind, opener) {
  if (kind === 'rotate') {
    if (!canManage()) return;
    const grace = policy ? policy.rotation_grace_minutes : 0;
    const confirmed = await confirmAction({
      title: 'Regenerate the token?',
      paragraphs: [
        grace > 0
          ? `The current token keeps working for ${grace} minutes (this workspace's grace period), then stops. Paste the new token into Microsoft Entra ID's provisioning configuration before then.`
          : 'The current token stops working at once. Microsoft Entra ID cannot provision users until you paste the new token into its provisioning configuration.',
        policy && policy.two_person_rotation
          ? 'You approve this on your phone, then a second owner or admin approves on theirs; then you see the new token.'
          : 'You approve this on your phone, then see the new token.',
      ],
      confirmLabel: 'Regenerate token',
    });
    if (!confirmed) return;
  }
  await busy(opener, () => startTokenChallenge(kind, opener));
}

async function startTokenChallenge(kind, opener) {
  stopChallenge();
  let answer;
  try {
    answer = await api('POST', `/v1/console/scim-token/${kind}`);
  } catch (err) {
    startFailed(kind, opener, $('dirsync-message'), tokenChallengeError(err));
    return;
  }
  notify($('dirsync-message'), '');
  showChallenge(answer, kind, opener);
}

function tokenChallengeError(err) {
  switch (err.status) {
    case 403:
      return 'Only the workspace’s owners and admins can view or regenerate the token.';
    case 409:
      return 'You have no enrolled device yet. Add a device first (under “Your devices”), then try again.';
    case 429:
      return throttledText(err, 'Too many requests.');
    default:
      return `The request could not be started. ${describe(err)}`;
  }
}

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
  const source = new EventSource(`/v1/console/challenges/${encodeURIComponent(c.id)}/events`);
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
    s = await api('GET', `/v1/console/challenges/${encodeURIComponent(c.id)}`);
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
    released = await api('POST', `/v1/console/challenges/${encodeURIComponent(c.id)}/release`);
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
  if (canManage()) loadActivity(true);
}

// The token lives only in the #token-value field, and only while the Show Token dialog is open:
// never in a variable that outlives this call, the URL, storage, cookies or the console.
function showToken(released, opener) {
  $('token-value').value = released.token;
  const rotated = released.action === 'scim_token.rotate';
  $('token-title').textContent = rotated ? 'New Directory Sync token' : 'Directory Sync token';
  $('token-rotated').hidden = !rotated;
  $('token-created').replaceChildren(...(released.token_created_at ? ['Created ', timeEl(released.token_created_at), '.'] : []));
  resetCopy($('copy-token'), $('token-copied'));
  openDialog($('token-dialog'), opener);
}

function onTokenDialogClosed() {
  $('token-value').value = '';
  $('token-created').replaceChildren();
  resetCopy($('copy-token'), $('token-copied'));
  restoreFocus($('token-dialog'));
}

// ---------------------------------------------------------------------------------------------
// Devices

const PLATFORMS = { apns: 'iOS (APNs)', fcm: 'Android (FCM)' };
const PUSH_STATES = {
  ok: 'push notifications on',
  invalid: 'push token invalid — it is renewed when the app next starts',
  none: 'no push token: requests show when the app checks for them',
};

async function loadDevices() {
  let devices;
  try {
    ({ devices } = await api('GET', '/v1/console/devices'));
  } catch (err) {
    notify($('devices-message'), `Could not load your devices. ${describe(err)}`, 'error');
    return;
  }
  $('device-list').replaceChildren(...devices.map(deviceItem));
  $('devices-empty').hidden = devices.length > 0;
}

function deviceItem(device) {
  const name = device.name || 'Unnamed device';
  const push = PUSH_STATES[device.push_token_state];
  return h('li', { class: 'device' },
    h('div', { class: 'device-text' },
      h('p', { class: 'device-name' }, name, ' ', h('span', { class: 'device-platform' }, PLATFORMS[device.platform] || device.platform || '')),
      h('p', { class: 'device-meta' },
        'Enrolled ', timeEl(device.created_at),
        ' · last seen ', device.last_seen_at ? timeEl(device.last_seen_at) : 'never'),
      push && h('p', { class: `device-push push-${device.push_token_state}` }, push)),
    h('button', {
      type: 'button',
      class: 'button button-quiet',
      'aria-label': `Remove ${name}`,
      onclick: (event) => removeDevice(device, name, event.currentTarget),
    }, 'Remove'));
}

async function removeDevice(device, name, button) {
  const confirmed = await confirmAction({
    title: `Remove ${name}?`,
    paragraphs: ['This device will no longer be able to approve your requests. You can enroll it again later.'],
    confirmLabel: 'Remove device',
  });
  if (!confirmed) return;
  await busy(button, async () => {
    try {
      await api('DELETE', `/v1/console/devices/${encodeURIComponent(device.id)}`);
    } catch (err) {
      notify($('devices-message'), `Could not remove ${name}. ${describe(err)}`, 'error');
      return;
    }
    notify($('devices-message'), `${name} was removed.`, 'success');
    await loadDevices();
    $('add-device').focus(); // its Remove button is gone
  });
}

async function addDevice(event) {
  const button = event.currentTarget;
  await busy(button, () => startEnrollment(button));
}

/**
 * Asks for an enrollment code (CONTRACT.md section 3). A first phone: the code at once (201), or 403
 * `reauth_required` when the sign-in is too old. Another phone: a `device.enroll` step-up on the
 * phones the person has (202), whose release hands the code.
 */
async function startEnrollment(opener) {
  stopChallenge();
  let answer;
  try {
    answer = await api('POST', ENROLLMENTS);
  } catch (err) {
    if (err.problem.reauth_required) {
      closeIfOpen($('challenge-dialog'));
      askReauth(err.problem, opener);
    } else {
      startFailed('enroll', opener, $('devices-message'), enrollmentError(err));
    }
    return;
  }
  notify($('devices-message'), '');
  if (answer.challenge_id) {
    showChallenge(answer, 'enroll', opener);
  } else {
    // A retry from the challenge dialog can find no phone left (all removed meanwhile): a first phone.
    closeIfOpen($('challenge-dialog'));
    showEnrollment(answer, opener);
  }
}

function enrollmentError(err) {
  if (err.status === 429) return throttledText(err, 'Too many requests.');
  return `Could not start adding a device. ${describe(err)}`;
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

function onEnrollDialogClosed() {
  $('enrollment-qr').replaceChildren();
  $('enrollment-code').textContent = '';
  $('enrollment-command').value = '';
  restoreFocus($('enroll-dialog'));
  // The phone may have enrolled meanwhile.
  if (session) loadDevices();
}

// ---------------------------------------------------------------------------------------------
// Re-authentication (issue 12): a first phone is added only soon after its person proved who they
// are, so that a stolen session cookie alone cannot add one.

// The Add device button to retry from once the password is accepted; where the SSO button goes.
let reauthOpener = null;
let reauthSsoUrl = null;

/** The 403 `reauth_required` answer: the password dialog, or the way through single sign-on. */
function askReauth(problem, opener) {
  reauthOpener = opener;
  setReauthMode(problem.reauth === 'sso' ? 'sso' : 'password', problem.reauth_url);
  notify($('reauth-message'), '');
  openDialog($('reauth-dialog'), opener);
  focusReauth();
}

function setReauthMode(mode, ssoUrl) {
  const sso = mode === 'sso';
  $('reauth-password-part').hidden = sso;
  $('reauth-submit').hidden = sso;
  $('reauth-sso-part').hidden = !sso;
  $('reauth-sso-go').hidden = !sso;
  reauthSsoUrl = sso ? ssoReauthUrl(ssoUrl) : null;
}

function focusReauth() {
  ($('reauth-password-part').hidden ? $('reauth-sso-go') : $('reauth-password')).focus();
}

/** The server's reauth_url when it stays on this origin's SSO routes; else the contract's route. */
function ssoReauthUrl(url) {
  try {
    const u = new URL(url, location.origin);
    if (u.origin === location.origin && u.pathname.startsWith('/v1/sso/')) return `${u.pathname}${u.search}`;
  } catch {
    // not a URL: use the contract's route below
  }
  return `/v1/sso/${encodeURIComponent(session.workspace)}/start?reauth=1`;
}

async function submitReauth(event) {
  event.preventDefault();
  const field = $('reauth-password');
  if (!field.value) {
    notify($('reauth-message'), 'Enter your password.', 'error');
    field.focus();
    return;
  }
  await busy($('reauth-submit'), async () => {
    notify($('reauth-message'), '');
    const password = field.value;
    field.value = ''; // not kept in the page, right or wrong
    try {
      await api('POST', REAUTH, { password });
    } catch (err) {
      await reauthFailed(err);
      return;
    }
    const opener = reauthOpener;
    $('reauth-dialog').close();
    // The window is open again: what the person asked for in the first place.
    await busy(opener, () => startEnrollment(opener));
  });
}

async function reauthFailed(err) {
  switch (err.status) {
    case 401:
      // A wrong password and an ended session get the same 401: ask which it was.
      if (!(await sessionAlive())) {
        sessionEnded();
        return;
      }
      notify($('reauth-message'), 'That password is not right. Try again.', 'error');
      break;
    case 403:
      // The workspace has people sign in through single sign-on: they confirm who they are there too.
      setReauthMode('sso', null);
      notify($('reauth-message'), 'This workspace does not accept your password here.', 'warning');
      break;
    case 429:
      notify($('reauth-message'), throttledText(err, 'Too many attempts.'), 'error');
      break;
    default:
      notify($('reauth-message'), `Could not check your password. ${describe(err)}`, 'error');
  }
  focusReauth();
}

async function sessionAlive() {
  try {
    await api('GET', SESSION);
    return true;
  } catch (err) {
    return err.status !== 401;
  }
}

function onReauthDialogClosed() {
  $('reauth-password').value = '';
  notify($('reauth-message'), '');
  reauthOpener = null;
  reauthSsoUrl = null;
  restoreFocus($('reauth-dialog'));
}

// ---------------------------------------------------------------------------------------------
// Activity (the audit log; owners and admins)

let activityBefore = null; // the cursor of the next page, or null at the end

async function loadActivity(fromStart) {
  const params = new URLSearchParams({ limit: '50' });
  if (!fromStart && activityBefore !== null) params.set('before', String(activityBefore));
  let page;
  try {
    page = await api('GET', `/v1/console/audit?${params}`);
  } catch (err) {
    notify($('activity-message'), `Could not load the activity. ${describe(err)}`, 'error');
    return;
  }
  notify($('activity-message'), '');
  const rows = page.entries.map(activityRow);
  if (fromStart) $('activity-rows').replaceChildren(...rows);
  else $('activity-rows').append(...rows);
  activityBefore = page.next_before ?? null;
  $('activity-more').hidden = activityBefore === null;
  $('activity-empty').hidden = $('activity-rows').childElementCount > 0;
}

function activityRow(entry) {
  return h('tr', {},
    h('td', { class: 'nowrap' }, timeEl(entry.at)),
    h('td', {}, h('code', {}, plain(entry.kind))),
    h('td', {}, plain(entry.actor)),
    h('td', { class: 'nowrap' }, plain(entry.ip)),
    h('td', { class: 'detail' }, plain(entry.detail)));
}

/** Audit fields are strings or small objects; show either as one line of text. */
function plain(value) {
  if (value === null || value === undefined || value === '') return '—';
  if (typeof value !== 'object') return String(value);
  return Object.entries(value)
    .filter(([, v]) => v !== null && v !== undefined)
    .map(([k, v]) => `${k}: ${v !== null && typeof v === 'object' ? JSON.stringify(v) : v}`)
    .join(', ');
}

async function loadMoreActivity(event) {
  const button = event.currentTarget;
  await busy(button, () => loadActivity(false));
  // The button hides on the last page; keep the keyboard focus in the section.
  if (button.hidden) $('activity-refresh').focus();
}

// ---------------------------------------------------------------------------------------------
// Token policy (owners change it; admins read it) and the grace period of the last rotation

async function loadPolicy() {
  let loaded;
  try {
    loaded = await api('GET', '/v1/console/policy');
  } catch (err) {
    notify($('policy-message'), `Could not load the policy. ${describe(err)}`, 'error');
    return;
  }
  showPolicy(loaded);
}

function showPolicy(p) {
  policy = p;
  const owner = session !== null && session.role === 'owner';
  $('policy-two-person').checked = policy.two_person_rotation;
  $('policy-grace').value = String(policy.rotation_grace_minutes);
  $('policy-viewers').value = policy.token_viewers;
  for (const id of ['policy-two-person', 'policy-grace', 'policy-viewers']) $(id).disabled = !owner;
  $('policy-save').hidden = !owner;
  $('policy-hint').textContent = owner
    ? 'Rules for this workspace\'s token. Every change is in the activity log.'
    : 'Set by the workspace\'s owners.';
  const notice = $('grace-notice');
  if (policy.old_token_valid_until) {
    notice.replaceChildren('The previous token keeps working until ', timeEl(policy.old_token_valid_until),
      ' (grace period), so your identity provider can switch to the new one.');
    notice.hidden = false;
  } else {
    notice.replaceChildren();
    notice.hidden = true;
  }
}

async function savePolicy(event) {
  event.preventDefault();
  const grace = Number($('policy-grace').value);
  if (!Number.isInteger(grace) || grace < 0 || grace > 10080) {
    notify($('policy-message'), 'The grace period is a whole number of minutes from 0 to 10080 (a week).', 'error');
    $('policy-grace').focus();
    return;
  }
  await busy($('policy-save'), async () => {
    try {
      const saved = await api('PUT', '/v1/console/policy', {
        two_person_rotation: $('policy-two-person').checked,
        rotation_grace_minutes: grace,
        token_viewers: $('policy-viewers').value,
      });
      showPolicy(saved);
      notify($('policy-message'), 'Policy saved.', 'success');
      loadActivity(true);
    } catch (err) {
      notify($('policy-message'), `The policy was not saved. ${describe(err)}`, 'error');
    }
  });
}

// ---------------------------------------------------------------------------------------------
// SCIM extension schemas (owners declare them; admins read them): RFC 7643 §7 definitions, edited as
// JSON. The server checks them and names what is wrong.

async function loadSchemas() {
  let loaded;
  try {
    loaded = await api('GET', '/v1/console/scim/schemas');
  } catch (err) {
    notify($('schemas-message'), `Could not load the SCIM schemas. ${describe(err)}`, 'error');
    return;
  }
  showSchemas(loaded);
}

function showSchemas(declared) {
  const owner = session !== null && session.role === 'owner';
  $('schemas-json').value = JSON.stringify(declared, null, 2);
  $('schemas-json').readOnly = !owner;
  $('schemas-save').hidden = !owner;
  $('schemas-hint').textContent = owner
    ? 'Attributes under these schemas are checked on every SCIM write and announced in /Schemas.'
    : 'Declared by the workspace\'s owners.';
}

async function saveSchemas(event) {
  event.preventDefault();
  let body;
  try {
    body = JSON.parse($('schemas-json').value);
  } catch {
    notify($('schemas-message'), 'This is not valid JSON.', 'error');
    $('schemas-json').focus();
    return;
  }
  await busy($('schemas-save'), async () => {
    try {
      showSchemas(await api('PUT', '/v1/console/scim/schemas', body));
      notify($('schemas-message'), 'Schemas saved.', 'success');
    } catch (err) {
      notify($('schemas-message'), `The schemas were not saved. ${describe(err)}`, 'error');
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Wiring

function on(id, type, handler) {
  $(id).addEventListener(type, handler);
}

function start() {
  on('signin-form', 'submit', signIn);
  on('login-sso', 'click', ssoSignIn);
  on('sign-out', 'click', signOut);

  on('copy-tenant-url', 'click', (e) => copyText($('tenant-url').value, e.currentTarget, $('tenant-url-copied'), $('tenant-url')));
  on('view-token', 'click', (e) => requestToken('reveal', e.currentTarget));
  on('regenerate-token', 'click', (e) => requestToken('rotate', e.currentTarget));

  on('challenge-retry', 'click', () => retryAction && retryAction());
  on('challenge-close', 'click', () => $('challenge-dialog').close());
  on('challenge-dialog', 'close', onChallengeDialogClosed);

  on('copy-token', 'click', (e) => copyText($('token-value').value, e.currentTarget, $('token-copied'), $('token-value')));
  on('token-close', 'click', () => $('token-dialog').close());
  on('token-dialog', 'close', onTokenDialogClosed);

  on('add-device', 'click', addDevice);
  on('copy-enrollment-command', 'click', (e) => copyText($('enrollment-command').value, e.currentTarget, $('enrollment-copied'), $('enrollment-command')));
  on('enroll-close', 'click', () => $('enroll-dialog').close());
  on('enroll-dialog', 'close', onEnrollDialogClosed);
  on('reauth-form', 'submit', submitReauth);
  on('reauth-sso-go', 'click', () => location.assign(reauthSsoUrl));
  on('reauth-cancel', 'click', () => $('reauth-dialog').close());
  on('reauth-dialog', 'close', onReauthDialogClosed);
  on('confirm-dialog', 'close', () => restoreFocus($('confirm-dialog')));

  on('policy-form', 'submit', savePolicy);
  on('schemas-form', 'submit', saveSchemas);
  on('activity-more', 'click', loadMoreActivity);
  on('activity-refresh', 'click', (e) => busy(e.currentTarget, () => loadActivity(true)));

  // Read-only fields select their whole value when focused, ready to copy by hand.
  for (const id of ['tenant-url', 'token-value', 'enrollment-command']) on(id, 'focus', (e) => e.target.select());

  // Leaving the page closes the Show Token dialog, so a page kept in the back/forward cache holds no token.
  window.addEventListener('pagehide', () => {
    if ($('token-dialog').open) $('token-dialog').close();
  });

  loadSession({ signedOutMessage: takeSsoError(), devicesMessage: takeReauthResult() });
}

start();
