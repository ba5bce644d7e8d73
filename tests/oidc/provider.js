// A real OpenID provider for tests/it/sso.rs: Node's oidc-provider on a free loopback port, with one
// confidential client (Assent) and accounts the test adds. Started by tests/it/support/oidc.rs.
//
//   env OIDC_CLIENT   {"client_id","client_secret","redirect_uris":[…]}
//   stdout            one line "ready <issuer>" once listening
//   stdin             the lifeline: when it closes (the test ended, however), the provider exits
//
// Test-only routes (never part of a real provider):
//   POST /__test/accounts   {"<login>": {"email","email_verified","name"}}  adds or replaces accounts;
//                           the login is the account's `sub`
//   POST /__test/rotate     replaces the signing key by a new one (new `kid`), the old one unpublished
//
// The login page is ours (oidc-provider leaves interactions to the application): a form with one
// field, `login`; posting it signs that account in. Posting to …/abort answers the client with
// error=access_denied, as a user pressing "Cancel" would.
//
// Re-authentication (Assent's `?reauth=1`) relies on oidc-provider's own behaviour, left at its
// defaults here: `prompt=login` and `max_age=0` show the login page even to a browser it remembers,
// and either puts `auth_time` (the time of that login) in the ID token.

import { createServer } from 'node:http';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import Provider from 'oidc-provider';

const client = JSON.parse(process.env.OIDC_CLIENT);
const accounts = new Map();

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), use: 'sig', alg: 'RS256' };
}

function makeProvider(issuer, key) {
  const provider = new Provider(issuer, {
    clients: [{
      ...client,
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [key] },
    claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'] },
    // Put the claims of the granted scopes in the ID token, as Entra ID does, rather than only
    // behind the userinfo endpoint.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    cookies: { keys: ['assent-tests-only-cookie-key'] },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    async findAccount(ctx, id) {
      const account = accounts.get(id);
      if (!account) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...account }) };
    },
    // Assent is a first-party client: no consent page, every requested scope granted.
    async loadExistingGrant(ctx) {
      const { client: c, session } = ctx.oidc;
      const grant = new ctx.oidc.provider.Grant({ clientId: c.clientId, accountId: session.accountId });
      grant.addOIDCScope('openid email profile');
      await grant.save();
      return grant;
    },
  });
  return provider;
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => { body += chunk; });
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

let provider;
let handler;

async function interaction(req, res, path) {
  const [, , uid, action] = path.split('/');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return send(res, 400, 'text/plain', 'interaction mismatch');
  if (req.method === 'GET') {
    const form = `<!doctype html><title>Sign in</title>
<form method="post" action="/interaction/${escapeHtml(uid)}/login">
<input name="login" autofocus><button>Sign in</button></form>
<form method="post" action="/interaction/${escapeHtml(uid)}/abort"><button>Cancel</button></form>`;
    return send(res, 200, 'text/html; charset=utf-8', form);
  }
  if (req.method === 'POST' && action === 'login') {
    const login = new URLSearchParams(await readBody(req)).get('login');
    if (!accounts.has(login)) return send(res, 403, 'text/plain', 'no such account');
    return provider.interactionFinished(req, res, { login: { accountId: login } }, { mergeWithLastSubmission: false });
  }
  if (req.method === 'POST' && action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }
  return send(res, 404, 'text/plain', 'not found');
}

async function testRoute(req, res, path, issuer) {
  if (req.method === 'POST' && path === '/__test/accounts') {
    for (const [login, account] of Object.entries(JSON.parse(await readBody(req)))) {
      accounts.set(login, account);
    }
    return send(res, 204, 'text/plain', '');
  }
  if (req.method === 'POST' && path === '/__test/rotate') {
    provider = makeProvider(issuer, signingKey());
    handler = provider.callback();
    return send(res, 204, 'text/plain', '');
  }
  return send(res, 404, 'text/plain', 'not found');
}

const server = createServer((req, res) => {
  const path = new URL(req.url, 'http://localhost').pathname;
  const done = (err) => {
    console.error(err);
    if (!res.headersSent) send(res, 500, 'text/plain', 'provider.js failed');
  };
  if (path.startsWith('/__test/')) testRoute(req, res, path, server.issuer).catch(done);
  else if (path.startsWith('/interaction/')) interaction(req, res, path).catch(done);
  else handler(req, res);
});

server.listen(0, '127.0.0.1', () => {
  server.issuer = `http://127.0.0.1:${server.address().port}`;
  provider = makeProvider(server.issuer, signingKey());
  handler = provider.callback();
  process.stdout.write(`ready ${server.issuer}\n`);
});

process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
