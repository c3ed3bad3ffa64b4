/**
 * Tollgate test rig: a real OpenID Provider (panva/oidc-provider 9.13.3) on 127.0.0.1.
 *
 *   node server.mjs --port P --state-dir DIR
 *
 * Issuer http://127.0.0.1:P. Signing keys (RSA-2048 for RS256/PS256, EC P-256 for ES256,
 * Ed25519 for EdDSA) are generated on first start and kept in DIR/jwks.json, newest first,
 * so a restart with the same DIR publishes the same keys.
 *
 * Clients (static, re-created at every start):
 *   demo-client / demo-secret   client_secret_basic; client_credentials, authorization_code,
 *                               refresh_token; redirect_uri http://127.0.0.1/cb;
 *                               scope "openid offline_access read write admin"
 *   admin-client / admin-secret client_secret_basic; client_credentials; scope "read write admin";
 *                               its access tokens carry `roles: ["admin"]` (extraTokenClaims)
 *   post-client / post-secret   client_secret_post; client_credentials; scope "read write admin"
 *   rs-client / rs-secret       client_secret_basic; client_credentials; meant for a resource
 *                               server calling introspection / revocation
 *   rs-post-client / rs-post-secret  the same, registered as client_secret_post
 *   rs:client@2 / s3cr3t+/=%&   the same (basic), with characters that RFC 6749 2.3.1
 *                               form-urlencoding must escape in the Authorization header
 *   short-opaque-client / short-opaque-secret  client_secret_basic; client_credentials; its
 *                               access tokens (opaque, or JWT for a resource without its own
 *                               TTL) expire after 2 s
 *   mtls-client / mtls-secret   client_secret_basic; client_credentials; scope "read write admin";
 *                               tls_client_certificate_bound_access_tokens: every access token
 *                               is bound to the TLS client certificate of its token request
 *                               (RFC 8705 §3, cnf.x5t#S256), which it reads from the
 *                               x-forwarded-client-cert header Envoy's TLS listener sets; a
 *                               request without one is refused (invalid_grant)
 *   as1-device / as1-device-secret  client_secret_basic; RFC 8628 device_code + refresh_token
 *   as1-ciba / as1-ciba-secret  client_secret_basic; OpenID CIBA, poll mode
 *   tollgate-exchanger / tollgate-exchanger-secret  client_secret_basic; RFC 8693 token exchange
 *                               and client_credentials; scope "read write admin"
 * (demo-client also has post_logout_redirect_uri http://127.0.0.1/logged-out.)
 * Dynamically registered clients (POST /reg) get ids `--client-id-prefix` (default "as1-") +
 * nanoid; RFC 7592 GET/PUT/DELETE at /reg/<client_id>. PAR at /request, device flow at
 * /device/auth (user page /device), CIBA at /backchannel, RP-initiated logout at /session/end
 * (GET and POST).
 * (oidc-provider accepts client_secret_basic and client_secret_post interchangeably for a client
 * registered with either.)
 *
 * Login (authorization code, device flow): devInteractions' pages, any login and password, plus
 * an `acr` select on the login page: urn:tollgate:loa:1 (the default) or urn:tollgate:loa:2
 * (acr_values_supported). Access tokens from a user's login (JWT claims, and members of the
 * introspection answer for opaque ones) carry that `acr` and the login's `auth_time`
 * (extraTokenClaims, RFC 9068 §2.2.1 / RFC 9470); client_credentials tokens carry neither.
 *
 * Resource indicators (all RFC 9068 JWT access tokens, scope "read write admin"):
 *   https://api.test/jwt    RS256, aud https://api.test
 *   https://api.test/ps256  PS256, aud https://api.test
 *   https://api.test/es256  ES256, aud https://api.test
 *   https://api.test/eddsa  EdDSA, aud https://api.test
 *   https://api.test/short  RS256, aud https://api.test, expires after 2 s
 *   https://other.test/jwt  RS256, aud https://other.test
 *   https://next.test/api   ES256, aud https://next.test (the "next" API of a token exchange)
 *   https://next.test/short ES256, aud https://next.test, expires after 2 s
 *   https://next.test/opaque  opaque tokens (introspectable, with aud https://next.test)
 * Without `resource=` the access token is opaque: 43 characters of [A-Za-z0-9_-] (nanoid, 256
 * bits); it introspects at /token/introspection (JWT access tokens do not).
 *
 * Token exchange (RFC 8693 §2; oidc-provider has none, so registerGrantType adds it): POST /token
 * grant_type=urn:ietf:params:oauth:grant-type:token-exchange, by a client allowed that grant
 * (tollgate-exchanger; any other authenticated client gets unauthorized_client), with
 *   subject_token + subject_token_type=urn:ietf:params:oauth:token-type:access_token  required:
 *       an access token this AS issued and still honours (a JWT verified against its current
 *       keys with typ at+jwt, iss and exp; an opaque one found in its store, unexpired, not
 *       revoked); sender-constrained subject tokens are taken as they are (no proof asked)
 *   actor_token + actor_token_type (access_token)  optional, the same kind of token
 *   resource and/or audience  required, one target: a resource indicator above, or an audience
 *       naming one (the indicator, or an aud: the first indicator with it)
 *   scope  optional; each must be the subject token's and the target's (default: the subject's
 *       scopes the target grants)
 *   requested_token_type  optional, access_token only
 * answers {access_token, issued_token_type (access_token), token_type "Bearer", expires_in,
 * scope}: an AccessToken for the target (JWT or opaque as the target says; it lives 3600 s, or
 * the target's TTL, but not past the subject token) with the subject's sub (and acr,
 * auth_time), client_id the requesting client, and act {"sub": actor} (§4.1) where the actor
 * is the actor token's sub, else the requesting client; a subject token's own act nests inside.
 * Errors (400 unless said): invalid_request (missing or unsupported parameters, no target, and,
 * as §2.2.2 requires, a subject or actor token the AS does not honour), invalid_target (unknown
 * or several targets), invalid_scope (not a down-scoping), unauthorized_client, and 401
 * invalid_client for failed client authentication.
 *
 * Rig control (test use only, loopback only):
 *   POST /__rig/rotate[?kty=RSA|EC|OKP]  new key of that type (default RSA) becomes the signing
 *                                       key; old keys stay published
 *   POST /__rig/drop-old                keep only the newest key of each type
 *   GET  /__rig/stats                   {"requests": {path: count}, "exchanges": {"requests": N,
 *                                       "issued": M}, "keys": [{kid, kty, alg}]}: exchanges
 *                                       counts token exchange requests at /token, and the
 *                                       tokens they issued
 *   POST /__rig/reset-stats             zero the counters
 *   POST /__rig/ciba?auth_req_id=ID&action=approve|deny  the CIBA user's decision on a pending
 *                                       backchannel authentication request
 *   POST /__rig/delay?ms=N              hold every later non-rig request N ms before handling
 *                                       it (0 turns it off; at most 60000), e.g. to make a
 *                                       JWKS fetch slow enough to observe
 *
 * Logs one line per request (method, path without query, status); never tokens or secrets.
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

import * as jose from 'jose'; // oidc-provider's own JOSE library (its dependency, pinned by the lockfile)
import Provider, { errors } from 'oidc-provider';
import MemoryAdapter from 'oidc-provider/lib/adapters/memory_adapter.js';
import nanoid from 'oidc-provider/lib/helpers/nanoid.js';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'state-dir': { type: 'string' },
    'client-id-prefix': { type: 'string', default: 'as1-' },
  },
});
if (!args.port || !args['state-dir']) {
  console.error('usage: node server.mjs --port P --state-dir DIR [--client-id-prefix PREFIX]');
  process.exit(2);
}
// Dynamically registered clients get ids PREFIX + nanoid, so a gateway can tell them by prefix.
const CLIENT_ID_PREFIX = args['client-id-prefix'];
const PORT = Number(args.port);
const STATE_DIR = path.resolve(args['state-dir']);
const ISSUER = `http://127.0.0.1:${PORT}`;
const JWKS_FILE = path.join(STATE_DIR, 'jwks.json');

// ---------------------------------------------------------------- keys

function newKey(kty) {
  const [type, options, alg] = {
    RSA: ['rsa', { modulusLength: 2048 }, undefined], // no alg: signs both RS256 and PS256
    EC: ['ec', { namedCurve: 'P-256' }, 'ES256'],
    OKP: ['ed25519', {}, 'EdDSA'],
  }[kty] ?? [];
  if (!type) throw new Error(`unknown kty ${kty}`);
  // The key comes out of the generation itself as a JWK. Exporting the KeyObject afterwards
  // (privateKey.export({ format: 'jwk' })) can deadlock Node 20: the export holds the key's
  // mutex while it allocates, a garbage collection then finalises the finished key-generation
  // job, whose destructor takes the same mutex (seen under load with gdb: ExportJWKEdKey ->
  // GC -> ~KeyGenJob -> uv_mutex_lock; the rig's start then hung for good).
  const { privateKey: jwk } = crypto.generateKeyPairSync(type, {
    ...options,
    publicKeyEncoding: { format: 'jwk' },
    privateKeyEncoding: { format: 'jwk' },
  });
  const kid = `${kty.toLowerCase()}-${new Date().toISOString().slice(0, 10)}-${crypto.randomBytes(4).toString('hex')}`;
  return { ...jwk, kid, use: 'sig', ...(alg ? { alg } : {}) };
}

function loadOrCreateKeys() {
  if (fs.existsSync(JWKS_FILE)) return JSON.parse(fs.readFileSync(JWKS_FILE, 'utf8')).keys;
  const keys = ['RSA', 'EC', 'OKP'].map(newKey);
  saveKeys(keys);
  return keys;
}

function saveKeys(keys) {
  fs.mkdirSync(STATE_DIR, { recursive: true });
  const tmp = `${JWKS_FILE}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ keys }, null, 2), { mode: 0o600 });
  fs.renameSync(tmp, JWKS_FILE);
}

// ---------------------------------------------------------------- storage

/**
 * One unbounded, expiring key-value store shared by every Provider instance this process
 * builds, so grants, sessions, opaque tokens and registered clients survive key rotation.
 * (oidc-provider's own default store is an LRU of 1000 entries, private to one instance.)
 */
class ExpiringMap {
  #map = new Map();

  get(key) {
    const entry = this.#map.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
      this.#map.delete(key);
      return undefined;
    }
    return entry.value;
  }

  set(key, value, { maxAge } = {}) {
    this.#map.set(key, { value, expiresAt: maxAge === undefined ? undefined : Date.now() + maxAge });
  }

  delete(key) {
    this.#map.delete(key);
  }
}
const store = new ExpiringMap();
const adapter = (model) => new MemoryAdapter(model, store);

// ---------------------------------------------------------------- provider

const API = 'https://api.test';
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const RESOURCE_SERVERS = {
  'https://api.test/jwt': { audience: API, alg: 'RS256' },
  'https://api.test/ps256': { audience: API, alg: 'PS256' },
  'https://api.test/es256': { audience: API, alg: 'ES256' },
  'https://api.test/eddsa': { audience: API, alg: 'EdDSA' },
  'https://api.test/short': { audience: API, alg: 'RS256', accessTokenTTL: 2 },
  'https://other.test/jwt': { audience: 'https://other.test', alg: 'RS256' },
  // the "next" API of a token exchange chain (RFC 8693); next.test/opaque gets opaque tokens
  // that introspect (with `aud`), next.test/short JWTs that expire after 2 s
  'https://next.test/api': { audience: 'https://next.test', alg: 'ES256' },
  'https://next.test/short': { audience: 'https://next.test', alg: 'ES256', accessTokenTTL: 2 },
  'https://next.test/opaque': { audience: 'https://next.test', format: 'opaque' },
};

/** features.resourceIndicators.getResourceServerInfo, also what a token exchange's target gets. */
function resourceServerInfo(indicator) {
  const rs = RESOURCE_SERVERS[indicator];
  if (!rs) throw new errors.InvalidTarget();
  return {
    scope: 'read write admin',
    audience: rs.audience,
    accessTokenFormat: rs.format ?? 'jwt',
    ...(rs.accessTokenTTL ? { accessTokenTTL: rs.accessTokenTTL } : {}),
    ...(rs.alg ? { jwt: { sign: { alg: rs.alg } } } : {}),
  };
}

const CLIENTS = [
  {
    client_id: 'demo-client',
    client_secret: 'demo-secret',
    grant_types: ['client_credentials', 'authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/cb'],
    scope: 'openid offline_access read write admin',
    token_endpoint_auth_method: 'client_secret_basic',
    post_logout_redirect_uris: ['http://127.0.0.1/logged-out'],
  },
  {
    client_id: 'admin-client',
    client_secret: 'admin-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'read write admin',
  },
  {
    client_id: 'post-client',
    client_secret: 'post-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'read write admin',
    token_endpoint_auth_method: 'client_secret_post',
  },
  {
    client_id: 'rs-client',
    client_secret: 'rs-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'read write admin',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    client_id: 'rs-post-client',
    client_secret: 'rs-post-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'read write admin',
    token_endpoint_auth_method: 'client_secret_post',
  },
  {
    client_id: 'rs:client@2',
    client_secret: 's3cr3t+/=%&',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'read write admin',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    client_id: 'short-opaque-client',
    client_secret: 'short-opaque-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'read write admin',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    // RFC 9449: every access token it gets is DPoP-bound (cnf.jkt), JWT or opaque
    client_id: 'dpop-client',
    client_secret: 'dpop-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'read write admin',
    token_endpoint_auth_method: 'client_secret_basic',
    dpop_bound_access_tokens: true,
  },
  {
    // RFC 8705 §3: every access token it gets is bound to its TLS client certificate
    // (cnf.x5t#S256), JWT or opaque; the certificate comes from Envoy's XFCC (getCertificate)
    client_id: 'mtls-client',
    client_secret: 'mtls-secret',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'read write admin',
    token_endpoint_auth_method: 'client_secret_basic',
    tls_client_certificate_bound_access_tokens: true,
  },
  {
    // RFC 8628 device authorization grant (the user confirms the code at /device)
    client_id: 'as1-device',
    client_secret: 'as1-device-secret',
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token'],
    response_types: [],
    redirect_uris: [],
    scope: 'openid offline_access read write admin',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    // OpenID CIBA, poll mode (the "authentication device" is POST /__rig/ciba)
    client_id: 'as1-ciba',
    client_secret: 'as1-ciba-secret',
    grant_types: ['urn:openid:params:grant-type:ciba'],
    response_types: [],
    redirect_uris: [],
    scope: 'openid read write admin',
    token_endpoint_auth_method: 'client_secret_basic',
    backchannel_token_delivery_mode: 'poll',
  },
  {
    // RFC 8693 token exchange (a gateway exchanging its callers' tokens), and client_credentials
    // for an actor token of its own
    client_id: 'tollgate-exchanger',
    client_secret: 'tollgate-exchanger-secret',
    grant_types: [TOKEN_EXCHANGE, 'client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'read write admin',
    token_endpoint_auth_method: 'client_secret_basic',
  },
];
const SHORT_OPAQUE_TTL = { 'short-opaque-client': 2 }; // seconds, opaque client_credentials tokens

// Authentication context classes a login can reach (OIDC Core §2 acr; acr_values_supported):
// the login page offers them, the first is what a login that names none gets.
const ACR_VALUES = ['urn:tollgate:loa:1', 'urn:tollgate:loa:2'];

/**
 * extraTokenClaims: RFC 9068 §2.2.1 `acr` and `auth_time` in access tokens (JWT claims; for
 * opaque tokens, members of the introspection answer), from the user authentication the token
 * comes from: the authorization code, refresh token, device code or CIBA request the token
 * endpoint is redeeming (oidc-provider copies the session's acr and login time into each). A
 * client_credentials token involves no user and gets neither.
 */
async function userAuthenticationClaims(ctx, token) {
  if (exchangeClaims.has(token)) return exchangeClaims.get(token);
  if (token.kind === 'ClientCredentials') {
    // Roles the AS grants a client (a `roles` claim, as Keycloak-style servers add), for
    // policy decision points that read them (tests/e2e/test_authorize.py).
    const roles = CLIENT_ROLES[token.clientId];
    return roles ? { roles } : undefined;
  }
  if (token.kind !== 'AccessToken') return undefined;
  const e = ctx?.oidc?.entities ?? {};
  const source = e.AuthorizationCode ?? e.RefreshToken ?? e.DeviceCode
    ?? e.BackchannelAuthenticationRequest;
  if (!source) return undefined;
  const claims = {};
  if (source.acr) claims.acr = source.acr;
  if (source.authTime) claims.auth_time = source.authTime;
  return claims;
}

/** Roles in the access tokens (JWT claim, introspection member) of these clients' client_credentials grants. */
const CLIENT_ROLES = { 'admin-client': ['admin'] };

const INTERACTION_PATH = /^\/interaction\/[^/]+$/;

/** The request's urlencoded body (at most 16 KiB). */
async function formBody(req) {
  let text = '';
  for await (const chunk of req) {
    text += chunk;
    if (text.length > 16384) throw new errors.InvalidRequest('body too large');
  }
  return new URLSearchParams(text);
}

/**
 * The login step of devInteractions, with an authentication context class: the login page
 * gets an `acr` select (ACR_VALUES, the first preselected), and a login POST is finished here
 * with oidc-provider's own interactionResult, carrying the chosen `acr` (and amr ["pwd"])
 * into the session, as a real login page would. A value not in ACR_VALUES is refused; no
 * field means the first. Consent and every other page stay devInteractions'.
 */
function loginWithAcr(provider) {
  return async (ctx, next) => {
    if (ctx.method === 'POST' && INTERACTION_PATH.test(ctx.path)) {
      const details = await provider.interactionDetails(ctx.req, ctx.res).catch(() => undefined);
      if (details?.prompt?.name === 'login') {
        const body = await formBody(ctx.req);
        const login = body.get('login');
        const acr = body.get('acr') ?? ACR_VALUES[0];
        if (!login || !ACR_VALUES.includes(acr)) {
          throw new errors.InvalidRequest('login and an acr of acr_values_supported are required');
        }
        const to = await provider.interactionResult(ctx.req, ctx.res, {
          login: { accountId: login, acr, amr: ['pwd'] },
        }, { mergeWithLastSubmission: false });
        ctx.set('cache-control', 'no-store');
        ctx.redirect(to);
        ctx.status = 303;
        return;
      }
    }
    await next();
    if (ctx.method === 'GET' && INTERACTION_PATH.test(ctx.path) && typeof ctx.body === 'string'
      && ctx.body.includes('name="prompt" value="login"')) {
      const options = ACR_VALUES.map((v, i) => `<option value="${v}"${i ? '' : ' selected'}>${v}</option>`).join('');
      ctx.body = ctx.body.replace('<button type="submit" class="login',
        `<select name="acr">${options}</select>\n  $&`);
    }
  };
}

const cookieKeys = [crypto.randomBytes(32).toString('base64url')];

/**
 * `text` split at `sep` where it is not inside double quotes (XFCC values quote `,` and `;`).
 */
function splitOutsideQuotes(text, sep) {
  const parts = [];
  let quoted = false;
  let start = 0;
  for (let i = 0; i < text.length; i += 1) {
    if (text[i] === '"') quoted = !quoted;
    else if (text[i] === sep && !quoted) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts;
}

/**
 * features.mTLS.getCertificate: the PEM of the client certificate of the TLS connection the
 * token request came in on. TLS ends at Envoy's `ingress_tls` listener (tests/rig/envoy.py),
 * which sanitises x-forwarded-client-cert and sets exactly one element
 * `Hash=<hex>;Cert="<URL-encoded PEM>"` when the client sent a certificate
 * (forward_client_cert_details SANITIZE_SET, set_current_client_cert_details.cert). Anything
 * else (no header, several elements, no Cert=) is no certificate. oidc-provider cannot tell who
 * set the header: the rig's trust is that only Envoy reaches this server (a process on
 * 127.0.0.1 that connects here directly can claim any certificate, as the rig itself does in
 * stack.as1_bound_token).
 */
function certificateFromXfcc(ctx) {
  const header = ctx.get('x-forwarded-client-cert');
  if (!header) return undefined;
  const elements = splitOutsideQuotes(header, ',');
  if (elements.length !== 1) return undefined;
  for (const pair of splitOutsideQuotes(elements[0], ';')) {
    const eq = pair.indexOf('=');
    if (eq > 0 && pair.slice(0, eq).trim().toLowerCase() === 'cert') {
      let value = pair.slice(eq + 1).trim();
      if (value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
      try {
        const pem = decodeURIComponent(value);
        return pem.includes('-----BEGIN CERTIFICATE-----') ? pem : undefined;
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

// ---------------------------------------------------------------- token exchange (RFC 8693)

/** Claims an exchanged access token carries beyond oidc-provider's own (read by extraTokenClaims). */
const exchangeClaims = new WeakMap();

/** Token exchange requests at the token endpoint since start or reset (GET /__rig/stats). */
const exchanges = { requests: 0, issued: 0 };

const PRIVATE_JWK_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'];
const publicJwk = (jwk) => Object.fromEntries(
  Object.entries(jwk).filter(([name]) => !PRIVATE_JWK_MEMBERS.includes(name)),
);

/** The one value of a parameter that may repeat (resource, audience), or undefined. */
function single(value, name) {
  const values = [...new Set([value ?? []].flat())];
  if (values.length > 1) throw new errors.InvalidTarget(`only one ${name} per token exchange is supported`);
  return values[0];
}

/**
 * What an access token this AS issued and still honours says about whom it represents:
 * {sub, scope (a Set), exp, act, acr, auth_time}, or undefined for anything else. A JWT is
 * verified against the provider's current keys (`typ` at+jwt, `iss` this issuer, not expired:
 * RFC 9068 §4); an opaque token is looked up in oidc-provider's store as the introspection
 * endpoint does (AccessToken or ClientCredentials, not expired, not revoked, its grant alive).
 */
async function accessTokenSubject(provider, verifyKeys, value) {
  if (typeof value !== 'string' || !value) return undefined;
  let isJwt = false;
  try {
    isJwt = !!jose.decodeProtectedHeader(value);
  } catch {}
  if (isJwt) {
    try {
      const { payload } = await jose.jwtVerify(value, verifyKeys, {
        issuer: ISSUER, typ: 'at+jwt', requiredClaims: ['sub', 'exp'],
      });
      return {
        sub: payload.sub,
        scope: new Set(payload.scope?.split(' ').filter(Boolean)),
        exp: payload.exp,
        act: payload.act,
        acr: payload.acr,
        auth_time: payload.auth_time,
      };
    } catch {
      return undefined;
    }
  }
  const token = await provider.AccessToken.find(value) ?? await provider.ClientCredentials.find(value);
  if (!token?.isValid) return undefined;
  if (token.grantId) {
    const grant = await provider.Grant.find(token.grantId);
    if (!grant || grant.clientId !== token.clientId || grant.accountId !== token.accountId) return undefined;
  }
  return {
    sub: token.accountId ?? token.clientId,
    scope: token.scopes,
    exp: token.exp,
    act: token.extra?.act,
    acr: token.extra?.acr,
    auth_time: token.extra?.auth_time,
  };
}

/**
 * The target of an exchange: a `resource` indicator of RESOURCE_SERVERS, or an `audience`
 * naming one (its indicator, or its `aud`: the first indicator with that aud). With both, the
 * audience must name the resource's own aud or the indicator. Anything else is invalid_target.
 */
function exchangeTarget(params) {
  const resource = single(params.resource, 'resource');
  const audience = single(params.audience, 'audience');
  if (resource === undefined && audience === undefined) {
    throw new errors.InvalidRequest('resource or audience is required');
  }
  if (resource !== undefined) {
    const rs = RESOURCE_SERVERS[resource];
    if (!rs) throw new errors.InvalidTarget('unknown resource');
    if (audience !== undefined && audience !== rs.audience && audience !== resource) {
      throw new errors.InvalidTarget('audience and resource name different targets');
    }
    return resource;
  }
  if (RESOURCE_SERVERS[audience]) return audience;
  const indicator = Object.keys(RESOURCE_SERVERS).find((i) => RESOURCE_SERVERS[i].audience === audience);
  if (!indicator) throw new errors.InvalidTarget('unknown audience');
  return indicator;
}

/**
 * The token endpoint's handler of grant_type urn:ietf:params:oauth:grant-type:token-exchange
 * (RFC 8693 §2). oidc-provider has already authenticated the client and checked that it may use
 * this grant. The subject (and actor) token must be an access token this AS issued and still
 * honours; the new token is an oidc-provider AccessToken for the target resource server, for the
 * subject's `sub`, issued to the requesting client, with `act` (§4.1) naming the actor: the
 * actor token's subject, else the requesting client; an `act` the subject token already has is
 * nested inside. It lives as long as the target's tokens do, but not past the subject token.
 */
function tokenExchangeHandler(verifyKeys) {
  return async function tokenExchange(ctx) {
    const { provider, params, client } = ctx.oidc;
    const badToken = (which) => new errors.InvalidRequest(
      `${which} is not an active access token of this authorization server`,
    );

    if (params.subject_token === undefined || params.subject_token_type === undefined) {
      throw new errors.InvalidRequest('subject_token and subject_token_type are required');
    }
    if (params.subject_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('subject_token_type must be urn:ietf:params:oauth:token-type:access_token');
    }
    if ((params.actor_token === undefined) !== (params.actor_token_type === undefined)) {
      throw new errors.InvalidRequest('actor_token and actor_token_type go together');
    }
    if (params.actor_token_type !== undefined && params.actor_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('actor_token_type must be urn:ietf:params:oauth:token-type:access_token');
    }
    if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest('only requested_token_type urn:ietf:params:oauth:token-type:access_token is supported');
    }
    const indicator = exchangeTarget(params);
    const resourceServer = new provider.ResourceServer(indicator, resourceServerInfo(indicator));

    const subject = await accessTokenSubject(provider, verifyKeys, params.subject_token);
    if (!subject) throw badToken('subject_token');
    let actor = client.clientId;
    if (params.actor_token !== undefined) {
      const actorToken = await accessTokenSubject(provider, verifyKeys, params.actor_token);
      if (!actorToken) throw badToken('actor_token');
      actor = actorToken.sub;
    }

    // scope: the requested one, each a scope of the subject token and of the target; without
    // scope=, what the subject token has that the target grants (down-scoping only, never up)
    const targetScopes = resourceServer.scopes;
    let scopes;
    if (params.scope !== undefined) {
      scopes = params.scope.split(' ').filter(Boolean);
      const missing = scopes.filter((s) => !subject.scope.has(s) || !targetScopes.has(s));
      if (missing.length) {
        throw new errors.InvalidScope('requested scope is not a subset of the subject token\'s scope for this target', missing.join(' '));
      }
    } else {
      scopes = [...subject.scope].filter((s) => targetScopes.has(s));
    }

    const token = new provider.AccessToken({
      accountId: subject.sub,
      client,
      gty: TOKEN_EXCHANGE,
      scope: scopes.join(' ') || undefined,
      resourceServer,
    });
    token.expiresIn = Math.min(token.expiration, subject.exp - Math.floor(Date.now() / 1000));
    if (token.expiresIn <= 0) throw badToken('subject_token');
    exchangeClaims.set(token, {
      act: { sub: actor, ...(subject.act ? { act: subject.act } : {}) },
      ...(subject.acr ? { acr: subject.acr } : {}),
      ...(subject.auth_time ? { auth_time: subject.auth_time } : {}),
    });
    ctx.oidc.entity('AccessToken', token);
    const value = await token.save();

    ctx.body = {
      access_token: value,
      issued_token_type: ACCESS_TOKEN_TYPE,
      token_type: token.tokenType,
      expires_in: token.expiresIn,
      ...(token.scope ? { scope: token.scope } : {}),
    };
  };
}

/**
 * Around the token endpoint, for token exchange requests only: counts them (and the tokens
 * issued) for /__rig/stats, and answers a client that may not use the grant with RFC 6749 §5.2
 * `unauthorized_client` (oidc-provider's allowedGrantTypeCheck says invalid_request "requested
 * grant type is not allowed for this client", for every grant type).
 */
async function tokenExchangeAccounting(ctx, next) {
  await next();
  if (ctx.oidc?.route !== 'token' || ctx.oidc.params?.grant_type !== TOKEN_EXCHANGE) return;
  exchanges.requests += 1;
  if (ctx.status === 200) exchanges.issued += 1;
  if (ctx.body?.error === 'invalid_request'
    && ctx.body.error_description === 'requested grant type is not allowed for this client') {
    ctx.body = { error: 'unauthorized_client', error_description: 'the client is not allowed the token exchange grant' };
  }
}

function buildProvider(keys) {
  const provider = new Provider(ISSUER, {
    adapter,
    clients: CLIENTS,
    jwks: { keys },
    // SameSite=None on the session cookie: oidc-provider requires it with enableHttpPostMethods
    // (a cross-site form POST must carry the session). Over plain http a real browser would
    // drop such a cookie; the rig's Python "browser" does not look at SameSite.
    cookies: { keys: cookieKeys, long: { sameSite: 'none' } },
    scopes: ['openid', 'offline_access', 'read', 'write', 'admin'],
    claims: { openid: ['sub'] },
    acrValues: ACR_VALUES,
    extraTokenClaims: userAuthenticationClaims,
    // OpenID RP-Initiated Logout 1.0 §2 and OIDC Core §3.1.2.1: the AS accepts POST (form) as
    // well as GET at the end-session and authorization endpoints (the gateway answers a POST to
    // its end_session with a 307, which the browser re-POSTs here).
    enableHttpPostMethods: true,
    async findAccount(ctx, sub) {
      return { accountId: sub, async claims() { return { sub }; } };
    },
    features: {
      clientCredentials: { enabled: true },
      // oidc-provider's default policies, spelled out (which also silences its start-up notices):
      // any authenticated client may introspect any token; a client may revoke only its own
      introspection: {
        enabled: true,
        async allowedPolicy(ctx, client, token) {
          return client.clientAuthMethod !== 'none' || token.clientId === client.clientId;
        },
      },
      revocation: {
        enabled: true,
        async allowedPolicy(ctx, client, token) {
          if (token.clientId === client.clientId) return true;
          if (client.clientAuthMethod === 'none') return false;
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        },
      },
      registration: {
        enabled: true,
        initialAccessToken: false,
        idFactory: () => `${CLIENT_ID_PREFIX}${nanoid()}`,
      },
      // RFC 7592 read (GET), update (PUT: the whole metadata, with the same client_id; the
      // answer carries a new registration_access_token) and delete (DELETE) at /reg/<client_id>
      registrationManagement: { enabled: true, rotateRegistrationAccessToken: true },
      // RFC 9126 PAR (/request, on by default in 9.x), spelled out
      pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: false },
      // RFC 8628 device flow: POST /device/auth; the user confirms the user_code at /device
      deviceFlow: { enabled: true },
      // RP-initiated logout (/session/end, a confirm form with xsrf; on by default), spelled out
      rpInitiatedLogout: { enabled: true },
      // OpenID CIBA 1.0, poll mode: any login_hint names the account (as devInteractions takes
      // any login); approval comes from the rig's "authentication device", POST /__rig/ciba
      ciba: {
        enabled: true,
        deliveryModes: ['poll'],
        async processLoginHint(ctx, loginHint) { return loginHint; },
        async processLoginHintToken() {
          throw new errors.InvalidRequest('login_hint_token is not supported here');
        },
        async verifyUserCode(ctx, account, userCode) {
          if (userCode) throw new errors.InvalidRequest('user_code is not supported here');
        },
        async validateRequestContext() {},
        async validateBindingMessage(ctx, bindingMessage) {
          if (bindingMessage !== undefined && !/^[a-zA-Z0-9-._+/!?#]{1,20}$/.test(bindingMessage)) {
            throw new errors.InvalidBindingMessage('binding_message: 1-20 of [a-zA-Z0-9-._+/!?#]');
          }
        },
        async triggerAuthenticationDevice() {}, // the test plays the device: POST /__rig/ciba
      },
      devInteractions: { enabled: true },
      // RFC 8705 §3 certificate-bound access tokens (for clients registered with
      // tls_client_certificate_bound_access_tokens: mtls-client); client authentication stays
      // client_secret_* (tlsClientAuth and selfSignedTlsClientAuth are off)
      mTLS: {
        enabled: true,
        certificateBoundAccessTokens: true,
        getCertificate: certificateFromXfcc,
      },
      resourceIndicators: {
        enabled: true,
        // a refresh / code exchange without resource= uses the one resource granted at /auth
        useGrantedResource: async () => true,
        async getResourceServerInfo(ctx, indicator) {
          return resourceServerInfo(indicator);
        },
      },
    },
    ttl: {
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL ?? 3600,
      ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL
        ?? SHORT_OPAQUE_TTL[token.clientId] ?? 600,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: 14 * 24 * 3600,
      Interaction: 3600,
      Session: 14 * 24 * 3600,
      Grant: 14 * 24 * 3600,
    },
  });
  provider.use(loginWithAcr(provider));
  // RFC 8693 token exchange: its parameters (resource and audience may repeat; more than one
  // distinct target is refused) and the handler, checking JWT subject tokens against these keys
  const verifyKeys = jose.createLocalJWKSet({ keys: keys.map(publicJwk) });
  provider.registerGrantType(TOKEN_EXCHANGE, tokenExchangeHandler(verifyKeys), [
    'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type',
    'requested_token_type', 'audience', 'resource', 'scope',
  ], ['audience', 'resource']);
  provider.use(tokenExchangeAccounting);
  return provider;
}

let keys = loadOrCreateKeys();
let provider = buildProvider(keys);
let handler = provider.callback();

function installKeys(next) {
  const nextProvider = buildProvider(next); // throws (and changes nothing) if the set is bad
  saveKeys(next);
  keys = next;
  provider = nextProvider;
  handler = provider.callback();
}

// ---------------------------------------------------------------- rig control + http

const counts = {};
let delayMs = 0; // POST /__rig/delay

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

const publicKids = () => keys.map(({ kid, kty, alg }) => ({ kid, kty, alg }));

function rig(req, res, url) {
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'POST /__rig/rotate': {
      const kty = (url.searchParams.get('kty') || 'RSA').toUpperCase();
      let key;
      try {
        key = newKey(kty);
      } catch (err) {
        return json(res, 400, { error: err.message });
      }
      installKeys([key, ...keys]);
      return json(res, 200, { added: key.kid, keys: publicKids() });
    }
    case 'POST /__rig/drop-old': {
      const seen = new Set();
      const kept = keys.filter((k) => !seen.has(k.kty) && seen.add(k.kty));
      const dropped = keys.length - kept.length;
      installKeys(kept);
      return json(res, 200, { dropped, keys: publicKids() });
    }
    case 'GET /__rig/stats':
      return json(res, 200, { requests: counts, exchanges, keys: publicKids() });
    case 'POST /__rig/reset-stats':
      for (const k of Object.keys(counts)) delete counts[k];
      Object.assign(exchanges, { requests: 0, issued: 0 });
      return json(res, 200, { requests: counts, exchanges });
    case 'POST /__rig/ciba':
      return cibaDecide(url.searchParams.get('auth_req_id'), url.searchParams.get('action'))
        .then(([status, body]) => json(res, status, body))
        .catch((err) => json(res, 500, { error: String(err?.message ?? err) }));
    case 'POST /__rig/delay': {
      const ms = Number(url.searchParams.get('ms') ?? '0');
      if (!Number.isInteger(ms) || ms < 0 || ms > 60000) {
        return json(res, 400, { error: 'ms must be an integer from 0 to 60000' });
      }
      delayMs = ms;
      return json(res, 200, { delay_ms: delayMs });
    }
    default:
      return json(res, 404, { error: 'no such rig endpoint' });
  }
}

/**
 * The CIBA "authentication device": the user approves (or denies) a pending backchannel
 * authentication request. Approval is what a real device's consent would store: a Grant for
 * the request's account, client and scope, whose id the request then carries (oidc-provider's
 * own models; its token endpoint answers authorization_pending until then).
 */
async function cibaDecide(authReqId, action) {
  if (!authReqId || !['approve', 'deny'].includes(action)) {
    return [400, { error: 'auth_req_id and action=approve|deny are required' }];
  }
  const request = await provider.BackchannelAuthenticationRequest.find(authReqId);
  if (!request) return [404, { error: 'no such backchannel authentication request' }];
  if (request.grantId || request.error) return [409, { error: 'already decided' }];
  if (action === 'deny') {
    Object.assign(request, { error: 'access_denied', errorDescription: 'end-user denied the request' });
  } else {
    const grant = new provider.Grant({ accountId: request.accountId, clientId: request.clientId });
    grant.addOIDCScope(request.scope);
    if (request.claims) grant.addOIDCClaims(Object.keys(request.claims.id_token ?? {}));
    request.grantId = await grant.save();
    request.authTime = Math.floor(Date.now() / 1000);
  }
  await request.save();
  return [200, { decided: action }];
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, ISSUER);
  res.on('finish', () => console.log(`${req.method} ${url.pathname} ${res.statusCode}`));
  if (url.pathname.startsWith('/__rig/')) return rig(req, res, url);
  counts[url.pathname] = (counts[url.pathname] ?? 0) + 1;
  if (delayMs > 0) {
    const ms = delayMs; // the setting when the request arrived
    return setTimeout(() => handler(req, res), ms);
  }
  return handler(req, res);
});

server.listen(PORT, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${ISSUER} (keys: ${keys.map((k) => k.kid).join(', ')})`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
