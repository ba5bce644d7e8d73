// The Assent support page (/support): staff sign in with their own cookie, enroll their phones, look
// up a workspace (CONTRACT.md section 8: nothing secret) and rotate its SCIM token with a ticket and a
// reason, approved on their own phone. The token is never shown here. Shared pieces are in common.js.
'use strict';

const STAFF_SESSION = '/v1/support/session';

let staff = null; // {email} while signed in
let workspace = null; // the summary last looked up

Object.assign(page, {
  sessionPaths: [STAFF_SESSION],
  signedIn: () => staff !== null,
  sessionEnded: () => showSignIn('Your session has ended. Sign in again.'),
  challenges: '/v1/support/challenges',
  afterChallenge: () => {},
});

// ---------------------------------------------------------------------------------------------
// Session

async function loadSession({ afterSignIn = false } = {}) {
  let me;
  try {
    me = await api('GET', STAFF_SESSION);
  } catch (err) {
    showSignIn(err.status === 401 ? '' : describe(err), 'error');
    return;
  }
  staff = me;
  $('account-user').textContent = me.email;
  $('loading').hidden = true;
  $('signin-view').hidden = true;
  $('account').hidden = false;
  $('support-view').hidden = false;
  document.title = 'Support · Assent';
  if (afterSignIn) $('main').focus();
  loadDevices();
}

function showSignIn(message = '', kind = 'info') {
  staff = null;
  workspace = null;
  for (const dialog of document.querySelectorAll('dialog[open]')) dialog.close();
  $('device-list').replaceChildren();
  showSummary(null);
  for (const id of ['lookup-message', 'rotate-message', 'devices-message']) notify($(id), '');
  $('loading').hidden = true;
  $('support-view').hidden = true;
  $('account').hidden = true;
  $('signin-view').hidden = false;
  document.title = 'Sign in · Assent support';
  notify($('signin-message'), message, kind);
  const first = ['support-email', 'support-password'].map($).find((f) => !f.value);
  (first || $('support-password')).focus();
}

async function signIn(event) {
  event.preventDefault();
  const email = $('support-email').value.trim();
  const passwordField = $('support-password');
  if (!email || !passwordField.value) {
    notify($('signin-message'), 'Enter your e-mail and password.', 'error');
    (email ? passwordField : $('support-email')).focus();
    return;
  }
  await busy($('support-submit'), async () => {
    notify($('signin-message'), '');
    try {
      await api('POST', STAFF_SESSION, { email, password: passwordField.value });
    } catch (err) {
      signInRefused(err, 'e-mail and password', passwordField);
      return;
    }
    passwordField.value = '';
    await loadSession({ afterSignIn: true });
  });
}

async function signOut() {
  await busy($('sign-out'), async () => {
    try {
      await api('DELETE', STAFF_SESSION);
    } catch (err) {
      if (err.status !== 401) {
        notify($('lookup-message'), `Could not sign out. ${describe(err)}`, 'error');
        return;
      }
    }
    showSignIn('You are signed out.');
  });
}

// ---------------------------------------------------------------------------------------------
// The staff member's phones

async function loadDevices() {
  let devices;
  try {
    ({ devices } = await api('GET', '/v1/support/devices'));
  } catch (err) {
    notify($('devices-message'), `Could not load your phones. ${describe(err)}`, 'error');
    return;
  }
  $('device-list').replaceChildren(...devices.map((d) => deviceItem(d)));
  $('devices-empty').hidden = devices.length > 0;
}

/** A first phone: the code at once (201); another: a `device.enroll` step-up on the phones one has (202). */
async function startEnrollment(opener) {
  stopChallenge();
  let answer;
  try {
    answer = await api('POST', '/v1/support/devices/enrollments');
  } catch (err) {
    const text = err.problem.reauth_required
      ? 'You signed in a while ago: sign out and in again, then add your first phone within ten minutes.'
      : `Could not start adding a phone. ${describe(err)}`;
    startFailed('enroll', opener, $('devices-message'), text);
    return;
  }
  notify($('devices-message'), '');
  if (answer.challenge_id) {
    showChallenge(answer, 'enroll', opener);
  } else {
    closeIfOpen($('challenge-dialog'));
    showEnrollment(answer, opener);
  }
}

function onEnrollDialogClosed() {
  $('enrollment-qr').replaceChildren();
  $('enrollment-code').textContent = '';
  $('enrollment-command').value = '';
  restoreFocus($('enroll-dialog'));
  if (staff) loadDevices();
}

// ---------------------------------------------------------------------------------------------
// A workspace: its summary, and the rotation of its token

async function lookUp(event) {
  event.preventDefault();
  const field = $('support-workspace');
  const slug = field.value.trim();
  if (!slug) {
    notify($('lookup-message'), 'Enter the workspace\'s slug.', 'error');
    field.focus();
    return;
  }
  await busy($('support-lookup'), () => showWorkspace(slug));
}

async function showWorkspace(slug) {
  let summary;
  try {
    summary = await api('GET', `/v1/support/workspaces/${encodeURIComponent(slug)}`);
  } catch (err) {
    showSummary(null);
    notify($('lookup-message'), err.status === 404 ? `No workspace ${slug}.` : `Could not look it up. ${describe(err)}`, 'error');
    return;
  }
  notify($('lookup-message'), '');
  showSummary(summary);
}

function showSummary(summary) {
  workspace = summary;
  $('support-summary').hidden = !summary;
  $('rotate-section').hidden = !summary;
  if (!summary) return;
  $('summary-slug').textContent = summary.slug;
  $('summary-name').textContent = summary.name;
  $('summary-token-created').replaceChildren(summary.token_created_at ? timeEl(summary.token_created_at) : '—');
  $('summary-rotated-by').textContent = summary.token_rotated_by || '—';
  $('summary-last-request').replaceChildren(summary.last_scim_request_at ? timeEl(summary.last_scim_request_at) : 'Never');
  $('summary-errors').textContent = String(summary.scim_errors_24h);
}

// The rotation the challenge dialog follows, for its Try again.
let rotation = null;

async function rotate(event) {
  event.preventDefault();
  if (!workspace) return;
  const ticket = $('support-ticket').value.trim();
  const reason = $('support-reason').value.trim();
  if (!ticket || !reason) {
    notify($('rotate-message'), 'Enter the ticket and the reason: the phone shows both, and both are on record.', 'error');
    (ticket ? $('support-reason') : $('support-ticket')).focus();
    return;
  }
  rotation = { slug: workspace.slug, ticket, reason };
  await busy($('support-rotate'), () => startRotation($('support-rotate')));
}

async function startRotation(opener) {
  stopChallenge();
  const { slug, ticket, reason } = rotation;
  let answer;
  try {
    answer = await api('POST', `/v1/support/workspaces/${encodeURIComponent(slug)}/scim-token/rotate`, { ticket, reason });
  } catch (err) {
    const text = err.status === 409
      ? 'You have no phone yet. Add one under “Your phones”, then try again.'
      : err.status === 429 ? throttledText(err, 'Too many requests.') : `The rotation was not started. ${describe(err)}`;
    startFailed('support_rotate', opener, $('rotate-message'), text);
    return;
  }
  notify($('rotate-message'), '');
  showChallenge(answer, 'support_rotate', opener);
}

Object.assign(STEP_UPS, {
  support_rotate: {
    title: 'Approve the rotation on your phone',
    intro: PICK_THE_NUMBER,
    waiting: WAITING_ON_PHONE,
    result: 'the rotation',
    restart: startRotation,
    show: (released) => {
      notify($('rotate-message'), ['The token of ', rotation.slug, ' was rotated at ', timeEl(released.rotated_at),
        '. The old token no longer works; the workspace\'s admins fetch the new one with View Token.'], 'success');
      $('support-ticket').value = '';
      $('support-reason').value = '';
      showWorkspace(rotation.slug);
    },
  },
  enroll: {
    title: 'Approve the new phone on a phone you already have',
    intro: 'To add a phone, pick this number on a phone you already have:',
    waiting: 'Waiting for your approval on a phone you already have…',
    result: 'the enrollment code',
    restart: startEnrollment,
    show: showEnrollment,
  },
});

// ---------------------------------------------------------------------------------------------
// Wiring

function start() {
  on('signin-form', 'submit', signIn);
  on('sign-out', 'click', signOut);
  on('lookup-form', 'submit', lookUp);
  on('rotate-form', 'submit', rotate);
  on('add-device', 'click', (e) => {
    const button = e.currentTarget;
    busy(button, () => startEnrollment(button));
  });

  on('challenge-retry', 'click', () => retryAction && retryAction());
  on('challenge-close', 'click', () => $('challenge-dialog').close());
  on('challenge-dialog', 'close', onChallengeDialogClosed);
  on('copy-enrollment-command', 'click', (e) => copyText($('enrollment-command').value, e.currentTarget, $('enrollment-copied'), $('enrollment-command')));
  on('enroll-close', 'click', () => $('enroll-dialog').close());
  on('enroll-dialog', 'close', onEnrollDialogClosed);
  on('enrollment-command', 'focus', (e) => e.target.select());

  loadSession();
}

start();
