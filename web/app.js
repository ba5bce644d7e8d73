// The Assent console: a small single-page app over the console API (CONTRACT.md §3).
// No framework, no inline code, nothing from another origin: the page is served under a strict
// Content-Security-Policy. Text from the server is only ever set with textContent / append, never as HTML.
'use strict';

const SESSION = '/v1/console/session';
const REAUTH = '/v1/console/session/reauth';
const ENROLLMENTS = '/v1/console/devices/enrollments';

Object.assign(page, {
  sessionPaths: [SESSION, REAUTH],
  signedIn: () => session !== null,
  sessionEnded: () => sessionEnded(),
  challenges: '/v1/console/challenges',
  afterChallenge: () => {
    if (canManage()) loadActivity(true);
  },
});

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
  clearAdminSections();
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
  for (const id of ['members-section', 'provisioning-section', 'sso-section']) $(id).hidden = !manage;
  $('schemas-section').hidden = !manage;
  loadDevices();
  if (manage) {
    loadActivity(true);
    loadPolicy();
    enterAdminSections();
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
      signInRefused(err, 'workspace, e-mail and password', passwordField);
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
// Step-up challenges approved on a phone (the dialog and its follower are in common.js): View Token,
// Regenerate token, adding a phone for a person who has one already, a member's promotion and the reset
// of a member's phones.

Object.assign(STEP_UPS, {
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
});

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


async function loadDevices() {
  let devices;
  try {
    ({ devices } = await api('GET', '/v1/console/devices'));
  } catch (err) {
    notify($('devices-message'), `Could not load your devices. ${describe(err)}`, 'error');
    return;
  }
  $('device-list').replaceChildren(...devices.map((d) => deviceItem(d, removeDevice)));
  $('devices-empty').hidden = devices.length > 0;
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



function onEnrollDialogClosed() {
  $('enrollment-qr').replaceChildren();
  $('enrollment-code').textContent = '';
  $('enrollment-command').value = '';
  restoreFocus($('enroll-dialog'));
  // The phone may have enrolled meanwhile.
  if (session) loadDevices();
}

// ---------------------------------------------------------------------------------------------
// Re-authentication (issue 12): a first phone is added, and an admin or owner invited, only soon after
// its person proved who they are, so that a stolen session cookie alone cannot do either.

// The button to retry from once the password is accepted, what retrying does, and where the SSO
// button goes.
let reauthOpener = null;
let reauthRetry = null;
let reauthSsoUrl = null;

/** The 403 `reauth_required` answer: the password dialog, or the way through single sign-on. */
function askReauth(problem, opener, retry = startEnrollment) {
  reauthOpener = opener;
  reauthRetry = retry;
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
    const retry = reauthRetry;
    $('reauth-dialog').close();
    // The window is open again: what the person asked for in the first place.
    await busy(opener, () => retry(opener));
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
  reauthRetry = null;
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
// Members, provisioning and single sign-on (issue 16): the sections of owners and admins

const ROLE_NAMES = { member: 'Member', admin: 'Admin', owner: 'Owner' };
const isOwner = () => session !== null && session.role === 'owner';

function enterAdminSections() {
  const owner = isOwner();
  $('members-hint').textContent = owner
    ? 'Invite people, change their roles (promotions are approved on your phone), reset lost phones, remove people.'
    : 'Owners change roles and remove people; admins invite members and reset lost phones.';
  // Admins invite members only (CONTRACT.md section 3a).
  for (const option of $('invite-role').options) option.disabled = !owner && option.value !== 'member';
  $('invite-role').value = 'member';
  $('sso-redirect-uri').value = session.sso_redirect_uri || `${location.origin}/v1/sso/callback`;
  $('checklist-tenant-url').value = $('tenant-url').value;
  renderChecklist();
  loadMembers();
  loadProvisioning();
  loadSso();
}

function clearAdminSections() {
  for (const id of ['members-rows', 'provisioning-rows', 'checklist']) $(id).replaceChildren();
  hideInvitePassword();
  $('invite-email').value = '';
  $('sso-client-secret').value = '';
  for (const id of ['members-message', 'invite-message', 'provisioning-message', 'sso-message']) notify($(id), '');
}

// --- Members (CONTRACT.md section 3a)

async function loadMembers() {
  let members;
  try {
    ({ members } = await api('GET', '/v1/console/members'));
  } catch (err) {
    notify($('members-message'), `Could not load the members. ${describe(err)}`, 'error');
    return;
  }
  $('members-rows').replaceChildren(...members.map(memberRow));
}

function memberRow(m) {
  const phones = m.devices > 0
    ? [`${m.devices} · last seen `, m.devices_last_seen_at ? timeEl(m.devices_last_seen_at) : 'never']
    : ['None'];
  const actions = [];
  if (isOwner()) {
    const select = h('select', { id: `member-${m.id}-role`, 'aria-label': `New role for ${m.email}` },
      Object.entries(ROLE_NAMES).map(([value, name]) => h('option', { value, selected: value === m.role }, name)));
    actions.push(select,
      h('button', { id: `member-${m.id}-change`, type: 'button', class: 'button', onclick: (e) => changeRole(m, select.value, e.currentTarget) },
        'Change role', h('span', { class: 'visually-hidden' }, ` of ${m.email}`)));
  }
  if (m.devices > 0 && (m.role !== 'owner' || isOwner())) {
    actions.push(h('button', { id: `member-${m.id}-reset`, type: 'button', class: 'button', onclick: (e) => resetPhones(m, e.currentTarget) },
      'Reset phones', h('span', { class: 'visually-hidden' }, ` of ${m.email}`)));
  }
  if (isOwner()) {
    actions.push(h('button', { id: `member-${m.id}-remove`, type: 'button', class: 'button button-danger', onclick: (e) => removeMember(m, e.currentTarget) },
      'Remove', h('span', { class: 'visually-hidden' }, ` ${m.email}`)));
  }
  return h('tr', { 'data-member-id': String(m.id) },
    h('th', { scope: 'row', class: 'member-email' }, m.email),
    h('td', {}, ROLE_NAMES[m.role] || m.role),
    h('td', {}, phones),
    h('td', {}, m.last_sign_in_at ? timeEl(m.last_sign_in_at) : 'Never'),
    h('td', {}, m.sso_linked ? 'Linked' : 'No'),
    h('td', {}, h('div', { class: 'member-actions' }, actions)));
}

// The member and role a step-up is about, for its Try again.
let memberStepUp = null;

async function changeRole(m, role, button) {
  if (role === m.role) {
    notify($('members-message'), `${m.email} is already ${ROLE_NAMES[role].toLowerCase()}.`, 'info');
    return;
  }
  memberStepUp = { member: m, role };
  await busy(button, () => startRoleChange(button));
}

async function startRoleChange(opener) {
  const { member, role } = memberStepUp;
  stopChallenge();
  let answer;
  try {
    answer = await api('PATCH', `/v1/console/members/${encodeURIComponent(member.id)}`, { role });
  } catch (err) {
    startFailed('promote', opener, $('members-message'), `The role of ${member.email} was not changed. ${describe(err)}`);
    return;
  }
  if (answer.challenge_id) {
    // A promotion: the owner approves it on their own phone; it takes effect at the release.
    showChallenge(answer, 'promote', opener);
    return;
  }
  notify($('members-message'), `${answer.email} is now ${ROLE_NAMES[answer.role].toLowerCase()}.`, 'success');
  await loadMembers();
  if (answer.email === session.email) await loadSession(); // an owner who demoted themself
}

async function resetPhones(m, button) {
  const confirmed = await confirmAction({
    title: `Reset the phones of ${m.email}?`,
    paragraphs: ['Every phone of theirs is removed once you approve on your own phone. They enroll a new one after signing in again.'],
    confirmLabel: 'Reset phones',
  });
  if (!confirmed) return;
  memberStepUp = { member: m, role: null };
  await busy(button, () => startReset(button));
}

async function startReset(opener) {
  const { member } = memberStepUp;
  stopChallenge();
  let answer;
  try {
    answer = await api('DELETE', `/v1/console/members/${encodeURIComponent(member.id)}/devices`);
  } catch (err) {
    startFailed('reset', opener, $('members-message'), `Could not start the reset. ${describe(err)}`);
    return;
  }
  showChallenge(answer, 'reset', opener);
}

async function removeMember(m, button) {
  const confirmed = await confirmAction({
    title: `Remove ${m.email}?`,
    paragraphs: ['Their sessions end, their phones stop approving and their password stops working, at once.'],
    confirmLabel: 'Remove member',
  });
  if (!confirmed) return;
  await busy(button, async () => {
    try {
      await api('DELETE', `/v1/console/members/${encodeURIComponent(m.id)}`);
    } catch (err) {
      notify($('members-message'), `${m.email} was not removed. ${describe(err)}`, 'error');
      return;
    }
    notify($('members-message'), `${m.email} was removed.`, 'success');
    await loadMembers();
    $('members-heading').focus();
  });
}

async function invite(event) {
  event.preventDefault();
  const field = $('invite-email');
  const email = field.value.trim();
  if (!email || !field.checkValidity()) {
    notify($('invite-message'), 'Enter the e-mail address of the person to invite.', 'error');
    field.focus();
    return;
  }
  const role = $('invite-role').value;
  const delivery = $('invite-delivery-link').checked ? 'link' : 'password';
  await busy($('invite-submit'), () => sendInvitation(email, role, delivery));
}

async function sendInvitation(email, role, delivery) {
  hideInvitePassword();
  notify($('invite-message'), '');
  let invited;
  try {
    invited = await api('POST', '/v1/console/members', { email, role, delivery });
  } catch (err) {
    if (err.problem.reauth_required) {
      // Inviting an admin or owner needs a recent sign-in: confirm it is you, then the same invitation.
      askReauth(err.problem, $('invite-submit'), () => sendInvitation(email, role, delivery));
      return;
    }
    notify($('invite-message'), err.status === 409
      ? `${email} is already a member of this workspace.`
      : `The invitation was not made. ${describe(err)}`, 'error');
    $('invite-email').focus();
    return;
  }
  $('invite-email').value = '';
  const who = `${invited.email} (${ROLE_NAMES[invited.role].toLowerCase()})`;
  notify($('invite-message'), `${invited.email} was invited.`, 'success');
  if (invited.invitation_url) {
    $('invite-link-who').textContent = who;
    $('invite-link').value = invited.invitation_url;
    $('invite-link-expiry').replaceChildren('It works once, until ', timeEl(invited.expires_at), '. Shown only now.');
    $('invite-link-result').hidden = false;
    $('invite-link').focus();
  } else {
    $('invite-who').textContent = who;
    $('invite-password').value = invited.password;
    $('invite-result').hidden = false;
    $('invite-password').focus();
  }
  loadMembers();
}

// The one-time password (or link) lives only in its field, until the next invitation or sign-out.
function hideInvitePassword() {
  $('invite-password').value = '';
  $('invite-link').value = '';
  $('invite-result').hidden = true;
  $('invite-link-result').hidden = true;
  resetCopy($('copy-invite-password'), $('invite-password-copied'));
  resetCopy($('copy-invite-link'), $('invite-link-copied'));
}

// --- An invitation link: /#invitation=<token>. The token never leaves this page but to the server's
// acceptance; it is taken out of the address at once.

let invitationToken = null;

function takeInvitation() {
  const match = /^#invitation=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (!match) return false;
  invitationToken = match[1];
  history.replaceState(history.state, '', `${location.pathname}${location.search}`);
  $('loading').hidden = true;
  $('signin-view').hidden = true;
  $('invitation-view').hidden = false;
  document.title = 'Welcome · Assent';
  $('invitation-password').focus();
  return true;
}

async function acceptInvitation(event) {
  event.preventDefault();
  const password = $('invitation-password');
  const confirm = $('invitation-confirm');
  let problem = '';
  if (password.value.length < 12) problem = 'Choose a password of at least 12 characters.';
  else if (password.value !== confirm.value) problem = 'The two passwords differ.';
  if (problem) {
    notify($('invitation-message'), problem, 'error');
    password.focus();
    return;
  }
  await busy($('invitation-submit'), async () => {
    try {
      await api('POST', '/v1/console/invitations/accept', { token: invitationToken, password: password.value });
    } catch (err) {
      const text = err.status === 410 || err.status === 404
        ? 'This invitation link was used or has expired. Ask whoever invited you for a new one.'
        : `Your password was not set. ${describe(err)}`;
      notify($('invitation-message'), text, 'error');
      return;
    } finally {
      password.value = '';
      confirm.value = '';
    }
    invitationToken = null;
    $('invitation-view').hidden = true;
    await loadSession({ afterSignIn: true });
  });
}

Object.assign(STEP_UPS, {
  promote: {
    title: 'Approve the promotion on your phone',
    intro: PICK_THE_NUMBER,
    waiting: WAITING_ON_PHONE,
    result: 'the promotion',
    restart: startRoleChange,
    show: (released) => {
      const { member } = memberStepUp;
      notify($('members-message'), `${member.email} is now ${ROLE_NAMES[released.role].toLowerCase()}.`, 'success');
      loadMembers();
    },
  },
  reset: {
    title: 'Approve the reset on your phone',
    intro: PICK_THE_NUMBER,
    waiting: WAITING_ON_PHONE,
    result: 'the reset',
    restart: startReset,
    show: (released) => {
      const { member } = memberStepUp;
      const n = released.devices_removed;
      notify($('members-message'), `${n === 1 ? '1 phone' : `${n} phones`} of ${member.email} removed.`, 'success');
      loadMembers();
    },
  },
});

// --- Provisioning: the log of SCIM requests, its figures and the setup checklist

async function loadProvisioning() {
  const failuresFirst = $('provisioning-failures-first').checked;
  let summary;
  let entries;
  try {
    [summary, entries] = await Promise.all([
      api('GET', '/v1/console/provisioning-summary'),
      provisioningEntries(failuresFirst),
    ]);
  } catch (err) {
    notify($('provisioning-message'), `Could not load the provisioning log. ${describe(err)}`, 'error');
    return;
  }
  notify($('provisioning-message'), '');
  $('provisioning-requests').textContent = String(summary.requests_24h);
  $('provisioning-failures').textContent = String(summary.failures_24h);
  $('provisioning-last-call').replaceChildren(summary.last_request_at ? timeEl(summary.last_request_at) : 'Never');
  $('provisioning-rows').replaceChildren(...entries.map(provisioningRow));
  $('provisioning-empty').hidden = entries.length > 0;
}

/** The newest 50 requests; with failures first, the newest 50 failures, then the newest 50 successes. */
async function provisioningEntries(failuresFirst) {
  if (!failuresFirst) return (await api('GET', '/v1/console/provisioning-log?limit=50')).entries;
  const [failed, succeeded] = await Promise.all([
    api('GET', '/v1/console/provisioning-log?limit=50&status=failure'),
    api('GET', '/v1/console/provisioning-log?limit=50&status=success'),
  ]);
  return [...failed.entries, ...succeeded.entries];
}

function provisioningRow(e) {
  const failed = e.status >= 400;
  const resource = [e.resource_type, e.resource_id].filter(Boolean).join(' ') || e.path;
  return h('tr', { class: failed ? 'is-failure' : null },
    h('td', { class: 'nowrap' }, timeEl(e.at)),
    h('td', { class: 'nowrap' }, String(e.status), failed ? h('span', { class: 'badge badge-error' }, 'failed') : null),
    h('td', {}, h('code', {}, e.method)),
    h('td', { class: 'detail' }, resource),
    h('td', { class: 'detail' }, [e.scim_type, e.detail].filter(Boolean).join(': ') || '—'));
}

// What to set where, per identity provider. The Tenant URL is in the field below the list; the token is
// behind View Token (Directory Sync, above).
const CHECKLISTS = {
  entra: [
    'Entra admin center › Enterprise applications › New application › Create your own application (non-gallery).',
    'Provisioning › Provisioning Mode: Automatic.',
    'Admin Credentials › Tenant URL: the Tenant URL below.',
    'Admin Credentials › Secret Token: View Token under Directory Sync, approve on your phone, paste it.',
    'Test Connection, then Save.',
    'Mappings › Users: userName ← userPrincipalName, active ← Switch([IsSoftDeleted]…), emails[type eq "work"].value ← mail, name.givenName ← givenName, name.familyName ← surname, externalId ← objectId.',
    'Mappings › Groups: displayName ← displayName, externalId ← objectId, members ← members.',
    'Start provisioning; its requests appear in the table above within seconds.',
  ],
  okta: [
    'Okta admin › Applications › Create App Integration › SAML 2.0 or SWA, then Provisioning: SCIM.',
    'SCIM connector base URL: the Tenant URL below; unique identifier field for users: userName.',
    'Supported actions: Push New Users, Push Profile Updates, Push Groups.',
    'Authentication Mode: HTTP Header; Bearer token: View Token under Directory Sync, approved on your phone.',
    'Mappings: userName ← login, name.givenName ← firstName, name.familyName ← lastName, emails ← email.',
    'Test Connector Configuration, then assign people and push groups.',
  ],
  other: [
    'Base URL: the Tenant URL below (SCIM 2.0, RFC 7644; Users and Groups).',
    'Every request: Authorization: Bearer <the token from View Token>, Content-Type: application/scim+json.',
    'Users are matched by userName (unique per workspace) and externalId; filters: eq on both.',
    'Deactivate with PATCH active=false rather than DELETE, so that history stays.',
  ],
};

function renderChecklist() {
  const steps = CHECKLISTS[$('checklist-idp').value] || CHECKLISTS.other;
  $('checklist').replaceChildren(...steps.map((step) => h('li', {}, step)));
}

// --- Single sign-on settings (CONTRACT.md section 11)

async function loadSso() {
  const owner = isOwner();
  for (const id of ['sso-issuer', 'sso-client-id', 'sso-client-secret', 'sso-domains', 'sso-default-role', 'sso-enforce']) {
    $(id).disabled = !owner;
  }
  $('sso-save').hidden = !owner;
  let config = null;
  try {
    config = await api('GET', '/v1/console/sso');
  } catch (err) {
    if (err.status !== 404) {
      notify($('sso-message'), `Could not load the single sign-on settings. ${describe(err)}`, 'error');
      return;
    }
  }
  showSso(config);
}

function showSso(config) {
  const owner = isOwner();
  $('sso-issuer').value = config ? config.issuer : '';
  $('sso-client-id').value = config ? config.client_id : '';
  $('sso-client-secret').value = '';
  $('sso-client-secret').placeholder = config ? 'Stored (leave empty to keep it)' : '';
  $('sso-domains').value = config ? config.allowed_email_domains.join(', ') : '';
  $('sso-default-role').value = config ? config.default_role : 'member';
  $('sso-enforce').checked = Boolean(config && config.enforce);
  const state = config ? 'Set up.' : 'Not set up yet.';
  $('sso-hint').textContent = owner
    ? `${state} The provider's discovery document is fetched and checked before the settings are saved.`
    : `${state} Set by the workspace's owners.`;
}

async function saveSso(event) {
  event.preventDefault();
  if (!isOwner()) return;
  const issuer = $('sso-issuer').value.trim();
  const clientId = $('sso-client-id').value.trim();
  const missing = [[issuer, 'sso-issuer'], [clientId, 'sso-client-id']].find(([v]) => !v);
  if (missing) {
    notify($('sso-message'), 'Enter the issuer URL and the client ID.', 'error');
    $(missing[1]).focus();
    return;
  }
  const body = {
    issuer,
    client_id: clientId,
    allowed_email_domains: $('sso-domains').value.split(/[\s,]+/).filter(Boolean),
    default_role: $('sso-default-role').value,
    enforce: $('sso-enforce').checked,
  };
  const secret = $('sso-client-secret').value;
  if (secret) body.client_secret = secret;
  await busy($('sso-save'), () => putSso(body));
}

async function putSso(body) {
  notify($('sso-message'), 'Checking the provider…', 'info');
  let saved;
  try {
    saved = await api('PUT', '/v1/console/sso', body);
  } catch (err) {
    if (err.problem.reauth_required) {
      // Another provider signs people in: confirm it is you, then the same settings.
      notify($('sso-message'), '');
      askReauth(err.problem, $('sso-save'), () => putSso(body));
      return;
    }
    notify($('sso-message'), `Not saved. ${describe(err)}`, 'error');
    return;
  }
  $('sso-client-secret').value = ''; // write-only: not kept in the page
  showSso(saved);
  notify($('sso-message'), 'Saved: the provider answered and its keys were checked.', 'success');
  loadActivity(true);
}

// ---------------------------------------------------------------------------------------------
// Wiring

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
  on('invite-form', 'submit', invite);
  on('invitation-form', 'submit', acceptInvitation);
  on('copy-invite-link', 'click', (e) => copyText($('invite-link').value, e.currentTarget, $('invite-link-copied'), $('invite-link')));
  on('members-refresh', 'click', (e) => busy(e.currentTarget, loadMembers));
  on('copy-invite-password', 'click', (e) => copyText($('invite-password').value, e.currentTarget, $('invite-password-copied'), $('invite-password')));
  on('provisioning-refresh', 'click', (e) => busy(e.currentTarget, loadProvisioning));
  on('provisioning-failures-first', 'change', loadProvisioning);
  on('checklist-idp', 'change', renderChecklist);
  on('copy-checklist-tenant-url', 'click', (e) => copyText($('checklist-tenant-url').value, e.currentTarget, $('checklist-tenant-url-copied'), $('checklist-tenant-url')));
  on('sso-form', 'submit', saveSso);
  on('copy-sso-redirect-uri', 'click', (e) => copyText($('sso-redirect-uri').value, e.currentTarget, $('sso-redirect-uri-copied'), $('sso-redirect-uri')));
  on('schemas-form', 'submit', saveSchemas);
  on('activity-more', 'click', loadMoreActivity);
  on('activity-refresh', 'click', (e) => busy(e.currentTarget, () => loadActivity(true)));

  // Read-only fields select their whole value when focused, ready to copy by hand.
  for (const id of ['tenant-url', 'token-value', 'enrollment-command', 'invite-password', 'invite-link', 'sso-redirect-uri', 'checklist-tenant-url']) {
    on(id, 'focus', (e) => e.target.select());
  }

  // Leaving the page closes the Show Token dialog, so a page kept in the back/forward cache holds no token.
  window.addEventListener('pagehide', () => {
    if ($('token-dialog').open) $('token-dialog').close();
  });

  if (takeInvitation()) return;
  loadSession({ signedOutMessage: takeSsoError(), devicesMessage: takeReauthResult() });
}

start();
