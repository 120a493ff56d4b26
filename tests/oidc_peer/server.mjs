// A real OpenID Connect provider (panva/oidc-provider, pinned in package.json)
// used by the Python tests as an interop peer. Nothing here is project code:
// this file only configures the library.
//
// Usage: node server.mjs CONFIG_JSON        (or env OIDC_PEER_CONFIG=CONFIG_JSON)
//   CONFIG_JSON = {"port": 0,
//                  "clients": [{"client_id": "...", "client_secret": "...",
//                               "redirect_uris": ["..."],
//                               "token_endpoint_auth_method": "client_secret_basic"}],
//                  "access_token_ttl": 3600, "rotate_refresh_token": true}
// CONFIG_JSON may be the JSON text itself or a path to a JSON file.
//
// stdout carries exactly one line once listening:
//   {"ready": true, "issuer": "http://127.0.0.1:PORT"}
// Everything else (library notices and warnings) goes to stderr.

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { generateKeyPair, randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

// oidc-provider prints its NOTICEs with console.info (stdout); keep stdout for
// the ready line only.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

// The signing key is made per run; generating it off-thread while the library
// loads keeps the start short.
const keyPair = promisify(generateKeyPair)('rsa', { modulusLength: 2048 });
keyPair.catch(() => {}); // awaited (and reported) in main()

const { default: Provider } = await import('oidc-provider');

const WEB_FONT = /@import url\(https?:\/\/fonts\.googleapis\.com\/[^)]*\);?/g;

function loadConfig() {
  const raw = process.argv[2] ?? process.env.OIDC_PEER_CONFIG;
  if (!raw) {
    throw new Error('config missing: pass JSON (or a path to a JSON file) as argv[2] or OIDC_PEER_CONFIG');
  }
  const text = raw.trimStart().startsWith('{') ? raw : readFileSync(raw, 'utf8');
  return JSON.parse(text);
}

// Plain Map-based adapter: no size-based eviction (the library's own memory
// adapter is an LRU capped at 1,000 entries). Entries expire by time only.
const store = new Map(); // key -> { payload, expiresAt (ms) | undefined }
const grantMembers = new Map(); // grantId -> Set of keys
const sessionUids = new Map(); // uid -> session id
const userCodes = new Map(); // userCode -> id

function storeGet(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.payload;
}

class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    store.set(key, { payload, expiresAt });
    if (this.model === 'Session' && payload.uid) sessionUids.set(payload.uid, id);
    if (payload.userCode) userCodes.set(payload.userCode, id);
    if (payload.grantId) {
      if (!grantMembers.has(payload.grantId)) grantMembers.set(payload.grantId, new Set());
      grantMembers.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    return storeGet(this.key(id));
  }

  async findByUid(uid) {
    const id = sessionUids.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = userCodes.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = storeGet(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    const key = this.key(id);
    const payload = storeGet(key);
    store.delete(key);
    if (payload?.uid && sessionUids.get(payload.uid) === id) sessionUids.delete(payload.uid);
    if (payload?.userCode && userCodes.get(payload.userCode) === id) userCodes.delete(payload.userCode);
    if (payload?.grantId) grantMembers.get(payload.grantId)?.delete(key);
  }

  async revokeByGrantId(grantId) {
    const members = grantMembers.get(grantId);
    if (members) {
      for (const key of members) store.delete(key);
      grantMembers.delete(grantId);
    }
  }
}

function providerConfiguration(config, privateKey) {
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'peer-rs256', alg: 'RS256', use: 'sig' };

  const clients = (config.clients ?? []).map((c) => ({
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    ...c,
  }));

  const accessTokenTtl = config.access_token_ttl ?? 3600;
  const refreshTokenTtl = config.refresh_token_ttl ?? 14 * 24 * 60 * 60;

  return {
    adapter: MapAdapter,
    clients,
    jwks: { keys: [signingKey] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    // The login typed into the devInteractions form is the account id, the
    // subject and the email address.
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return { sub: id, email: id, email_verified: true };
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
    },
    scopes: ['openid', 'email', 'profile', 'offline_access'],
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
    },
    pkce: { required: () => true },
    // Same rule as the library default, stated explicitly: a refresh token
    // only when the client may use the grant and offline_access was granted
    // (the library drops offline_access unless prompt=consent was requested).
    async issueRefreshToken(ctx, client, code) {
      return client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access');
    },
    rotateRefreshToken: config.rotate_refresh_token ?? true,
    ttl: {
      AccessToken: accessTokenTtl,
      AuthorizationCode: 60,
      ClientCredentials: 600,
      DeviceCode: 600,
      BackchannelAuthenticationRequest: 600,
      PreAuthorizedCode: 600,
      IdToken: 3600,
      Interaction: 3600,
      RefreshToken: refreshTokenTtl,
      Session: 14 * 24 * 60 * 60,
      Grant: 14 * 24 * 60 * 60,
    },
  };
}

async function main() {
  const config = loadConfig();
  const server = createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port ?? 0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;

  const { privateKey } = await keyPair;
  const provider = new Provider(issuer, providerConfiguration(config, privateKey));
  provider.on('server_error', (ctx, err) => console.error('oidc-provider server_error:', err));
  // The library's own pages (sign-in, consent, errors, logout) import a web font from
  // fonts.googleapis.com. Served without that line, they fall back to the browser's
  // sans-serif, and signing in sends no request beyond loopback.
  provider.use(async (ctx, next) => {
    await next();
    if (typeof ctx.body === 'string' && ctx.response.is('html')) {
      ctx.body = ctx.body.replace(WEB_FONT, '');
    }
  });
  // Static clients are validated lazily by the library; look each one up now
  // so that bad client metadata fails the start with a clear message.
  for (const { client_id: clientId } of config.clients ?? []) {
    if (!(await provider.Client.find(String(clientId)))) {
      throw new Error(`client ${clientId} could not be loaded`);
    }
  }
  server.on('request', provider.callback());

  const shutdown = () => {
    server.close();
    server.closeAllConnections?.();
    process.exit(0);
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);

  process.stdout.write(`{"ready": true, "issuer": "${issuer}"}\n`);
}

main().catch((err) => {
  console.error('oidc peer failed to start:', err);
  process.exit(1);
});
