// A small, real OpenID Connect provider for the SSO tests, built on the npm package `oidc-provider`
// (installed in hub/node_modules by `npm ci --prefix hub`).
//
//   node tests/oidc/provider.mjs CONFIG.json
//
// CONFIG.json (written by the test):
//   {"port": 9123,
//    "client": {"client_id": "...", "client_secret": "...", "redirect_uris": ["http://127.0.0.1:8000/hub/oauth_callback"]},
//    "accounts": {"alice": {"password": "...", "groups": ["risk"], "email": "alice@example.test", "name": "Alice"}}}
//
// The issuer is http://127.0.0.1:<port>. The client is read once at start; accounts (passwords, claims and the
// `groups` claim) are read from the file at every sign-in and every claims request, so a test can change a user's
// groups between logins. Interactions are a minimal sign-in form (login + password, checked against the file) and
// a consent form; RP-initiated logout (end_session_endpoint) is on. Listens on 127.0.0.1 only and prints
// `oidc-provider ready <issuer>` on stdout once it accepts requests.

import { readFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';

const here = dirname(fileURLToPath(import.meta.url));
const moduleDir = process.env.OIDC_PROVIDER_MODULE_DIR
  || join(here, '..', '..', 'hub', 'node_modules', 'oidc-provider');
const { default: Provider } = await import(pathToFileURL(join(moduleDir, 'lib', 'index.js')).href);

const configFile = process.argv[2];
if (!configFile) {
  console.error('usage: node provider.mjs CONFIG.json');
  process.exit(2);
}
const readConfig = () => JSON.parse(readFileSync(configFile, 'utf8'));
const config = readConfig();
const issuer = `http://127.0.0.1:${config.port}`;
const accounts = () => readConfig().accounts || {};

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body><h1>${esc(title)}</h1>${body}</body></html>`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: config.client.client_id,
      client_secret: config.client.client_secret,
      redirect_uris: config.client.redirect_uris,
      post_logout_redirect_uris: config.client.post_logout_redirect_uris || [],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      // oauthenticator sends the client credentials in the form body unless `basic_auth` is set
      token_endpoint_auth_method: config.client.token_endpoint_auth_method || 'client_secret_post',
    },
  ],
  async findAccount(ctx, id) {
    const a = accounts()[id];
    if (!a) return undefined;
    return {
      accountId: id,
      // read again on every claims request: the test may have changed the file since the sign-in
      async claims() {
        const now = accounts()[id] || {};
        return {
          sub: id,
          preferred_username: id,
          name: now.name || id,
          email: now.email || `${id}@example.test`,
          email_verified: true,
          groups: now.groups || [],
        };
      },
    };
  },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'profile', 'email', 'groups'],
  cookies: { keys: [randomBytes(32).toString('hex')] },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Sign out', `${form}
<button type="submit" form="op.logoutForm" name="logout" value="yes">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Signed out', '<p id="signed-out">You are signed out of the identity provider.</p>');
      },
    },
  },
  async renderError(ctx, out) {
    ctx.type = 'html';
    ctx.body = page('Error', `<pre id="error">${esc(JSON.stringify(out))}</pre>`);
  },
});

async function readForm(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  return Object.fromEntries(new URLSearchParams(Buffer.concat(chunks).toString('utf8')));
}

function send(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(html);
}

function loginForm(uid, error = '') {
  return page('Sign in', `${error ? `<p id="error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login">
  <input name="login" autocomplete="username"> <input name="password" type="password">
  <button type="submit">Sign in</button>
</form>`);
}

function consentForm(uid, clientId, details) {
  const scopes = (details.missingOIDCScope || []).join(' ');
  return page('Authorize', `<p>${esc(clientId)} asks for: <span id="scopes">${esc(scopes)}</span></p>
<form method="post" action="/interaction/${esc(uid)}/confirm"><button type="submit">Continue</button></form>
<form method="post" action="/interaction/${esc(uid)}/abort"><button type="submit">Cancel</button></form>`);
}

// the interactions: GET shows the prompt's form, POST .../login, .../confirm, .../abort finish it
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (req.method === 'GET' && !action) {
    if (prompt.name === 'login') return send(res, 200, loginForm(uid));
    if (prompt.name === 'consent') return send(res, 200, consentForm(uid, params.client_id, prompt.details));
    return send(res, 501, page('Error', `unsupported prompt ${esc(prompt.name)}`));
  }
  if (req.method !== 'POST') return send(res, 405, page('Error', 'method not allowed'));
  const form = await readForm(req);
  if (action === 'abort') {
    return provider.interactionFinished(req, res, {
      error: 'access_denied', error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
  }
  if (action === 'login' && prompt.name === 'login') {
    const a = accounts()[form.login || ''];
    if (!a || a.password !== form.password) {
      console.log(`oidc-provider login failed for ${JSON.stringify(form.login || '')}`);
      return send(res, 401, loginForm(uid, 'Invalid login or password.'));
    }
    console.log(`oidc-provider login ${form.login}`);
    return provider.interactionFinished(req, res, { login: { accountId: form.login } }, {
      mergeWithLastSubmission: false,
    });
  }
  if (action === 'confirm' && prompt.name === 'consent') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const d = prompt.details;
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scope] of Object.entries(d.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scope.join(' '));
    }
    const grantId = await grant.save();
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  return send(res, 400, page('Error', `unexpected ${esc(action)} for prompt ${esc(prompt.name)}`));
}

const handle = provider.callback();
const server = http.createServer(async (req, res) => {
  const m = /^\/interaction\/([^/?]+)(?:\/(login|confirm|abort))?\/?(?:\?.*)?$/.exec(req.url);
  if (!m) return handle(req, res);
  try {
    return await interaction(req, res, m[1], m[2]);
  } catch (err) {
    console.error(`oidc-provider interaction error: ${err.stack || err}`);
    if (!res.headersSent) send(res, 400, page('Error', `<pre id="error">${esc(err.message)}</pre>`));
    return undefined;
  }
});

server.listen(config.port, '127.0.0.1', () => console.log(`oidc-provider ready ${issuer}`));
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
