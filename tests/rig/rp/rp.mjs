/**
 * Tollgate test rig: a relying party built on npm openid-client 6.9.1 (panva; stateless,
 * functional API) and, for RFC 9728 resource discovery, on oauth4webapi 3.8.9 (the same
 * author's lower-level library that openid-client is built on). Each subcommand performs one
 * library operation (or one client flow) and prints one JSON line.
 *
 *   node rp.mjs <op> '<json args>'
 *
 * Common args: server (the metadata URL, see below), client_id, client_secret, auth ("basic"
 * = ClientSecretBasic, "post" = ClientSecretPost, "none").
 *
 * `server` is the full well-known URL of the document to use (e.g.
 * http://127.0.0.1:E/oauth2/as1/.well-known/openid-configuration). openid-client's discovery()
 * derives the well-known URL from an issuer identifier and then requires the document's `issuer`
 * to equal that identifier; a gateway's per-AS URL is not the AS's issuer (the document keeps
 * the AS's own `issuer`, which its ID tokens carry), so the library's documented form for this
 * case is used: discovery() given the document URL itself (it then skips only that one
 * comparison; ID tokens are still checked against the document's `issuer`). Every request is
 * plain http on loopback, so allowInsecureRequests is on (the library refuses http otherwise).
 *
 * ops (args beyond the common ones):
 *   metadata                       -> the ServerMetadata the library accepted
 *   client_credentials {scope}     -> token response
 *   introspect {token}             -> introspection response
 *   revoke {token}                 -> {"revoked": true}
 *   register {metadata}            -> the registered client's metadata (dynamicClientRegistration)
 *   auth_url {redirect_uri, scope, par?, params?}
 *                                  -> {url, state, nonce, code_verifier} (buildAuthorizationUrl,
 *                                     or buildAuthorizationUrlWithPAR when par is true)
 *   code_grant {callback_url, state, nonce, code_verifier}
 *                                  -> {token: response, claims: the validated ID token claims}
 *   userinfo {access_token, sub}   -> userinfo response (fetchUserInfo checks sub)
 *   refresh {refresh_token}        -> {token: response, claims}
 *   end_session_url {params}       -> {url} (buildEndSessionUrl)
 *   device {scope}                 -> prints the device authorization response first, then polls
 *                                     (pollDeviceAuthorizationGrant) and prints {token, claims}
 *   ciba {scope, login_hint}       -> prints the backchannel authentication response first, then
 *                                     polls (pollBackchannelAuthenticationGrant), prints {token, claims}
 *   dpop_client_credentials {scope, resource?, key_file, count?}
 *                                  -> token response of a client_credentials grant with DPoP
 *                                     (getDPoPHandle over a key pair kept as a private JWK in
 *                                     key_file, made by randomDPoPKeyPair when the file is absent);
 *                                     with count, that many grants -> {responses: [...]}
 *   dpop_fetch {url, method, access_token, key_file, body?, headers?}
 *                                  -> {status, headers, body} of fetchProtectedResource with the
 *                                     DPoP handle (the library makes the proof, retries once on
 *                                     use_dpop_nonce); `server` is still needed for the config
 *   dpop_proof {url, method, access_token, key_file, clock_skew?, nonce?}
 *                                  -> {dpop, authorization, thumbprint}: the DPoP and
 *                                     Authorization headers fetchProtectedResource would send,
 *                                     captured by a customFetch that sends nothing (so a test can
 *                                     send the library's own proof itself, replay it or send it
 *                                     elsewhere); clock_skew: the client's clock offset in
 *                                     seconds (the library's clockSkew client metadata: iat =
 *                                     now + clock_skew); nonce: a DPoP-Nonce the handle learns
 *                                     first, from a captured answer carrying it, as from a server.
 *                                     With `requests: [{url, method, access_token}, ...]`, one
 *                                     proof each, by one handle -> {proofs: [...]}
 *   resource_discovery {url, issuer, algorithm, scope?, token_params?}
 *                                  -> a client that knows only the resource's URL, with oauth4webapi
 *                                     alone: a call with a token the resource does not know (401:
 *                                     the WWW-Authenticate challenges as the library parsed them),
 *                                     the resource's metadata (resourceDiscoveryRequest at the
 *                                     RFC 9728 §3.1 well-known URL of `url`, and
 *                                     processResourceDiscoveryResponse, which requires `resource`
 *                                     to equal `url`, §3.3), `issuer` (which must be among its
 *                                     authorization_servers) discovered by discoveryRequest
 *                                     (`algorithm` "oidc" or "oauth2") and processDiscoveryResponse
 *                                     (its `issuer` must be that identifier), a client_credentials
 *                                     grant at its token_endpoint (token_params: extra form
 *                                     parameters, e.g. resource), then the call again with that
 *                                     token -> {challenge_status, challenges, metadata_url, metadata,
 *                                     as_issuer, token_endpoint, status, body}
 * Failure: {"error": {name, code, message, status, error, error_description, challenges?}} and
 * exit code 1 (challenges: a WWW-Authenticate answer as the library parsed it, [{scheme,
 * parameters}]).
 */
import * as client from 'openid-client';
import * as oauth from 'oauth4webapi';

const [op, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs ?? '{}');

function clientAuth() {
  switch (args.auth ?? 'basic') {
    case 'basic': return client.ClientSecretBasic(args.client_secret);
    case 'post': return client.ClientSecretPost(args.client_secret);
    case 'none': return client.None();
    default: throw new Error(`unknown auth ${args.auth}`);
  }
}

const options = { execute: [client.allowInsecureRequests], timeout: 15 };

async function config() {
  // A client whose clock is off by clock_skew seconds (the library's clockSkew client metadata).
  const metadata = args.clock_skew === undefined
    ? args.client_secret
    : { client_secret: args.client_secret, [client.clockSkew]: args.clock_skew };
  return client.discovery(new URL(args.server), args.client_id, metadata, clientAuth(), options);
}

function out(value) {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** The DPoP key pair kept in args.key_file (a private JWK), made on first use. */
async function dpopKeys() {
  const fs = await import('node:fs');
  const { subtle } = globalThis.crypto;
  const alg = { name: 'ECDSA', namedCurve: 'P-256' };
  if (!fs.existsSync(args.key_file)) {
    const pair = await client.randomDPoPKeyPair('ES256', { extractable: true });
    fs.writeFileSync(args.key_file, JSON.stringify(await subtle.exportKey('jwk', pair.privateKey)));
    return pair;
  }
  const jwk = JSON.parse(fs.readFileSync(args.key_file, 'utf8'));
  const { d, key_ops, ...pub } = jwk;
  return {
    privateKey: await subtle.importKey('jwk', jwk, alg, false, ['sign']),
    publicKey: await subtle.importKey('jwk', { ...pub, key_ops: ['verify'] }, alg, true, ['verify']),
  };
}

function withClaims(token) {
  return { token: { ...token }, claims: token.claims?.() ?? null };
}

const ops = {
  async metadata() {
    return (await config()).serverMetadata();
  },
  async client_credentials() {
    return { ...await client.clientCredentialsGrant(await config(), args.scope ? { scope: args.scope } : {}) };
  },
  async introspect() {
    return { ...await client.tokenIntrospection(await config(), args.token) };
  },
  async revoke() {
    await client.tokenRevocation(await config(), args.token);
    return { revoked: true };
  },
  async register() {
    const cfg = await client.dynamicClientRegistration(new URL(args.server), args.metadata, undefined, options);
    return cfg.clientMetadata();
  },
  async auth_url() {
    const cfg = await config();
    const code_verifier = client.randomPKCECodeVerifier();
    const state = client.randomState();
    const nonce = client.randomNonce();
    const params = {
      redirect_uri: args.redirect_uri,
      scope: args.scope,
      code_challenge: await client.calculatePKCECodeChallenge(code_verifier),
      code_challenge_method: 'S256',
      state,
      nonce,
      ...(args.params ?? {}),
    };
    const url = args.par
      ? await client.buildAuthorizationUrlWithPAR(cfg, params)
      : client.buildAuthorizationUrl(cfg, params);
    return { url: url.href, state, nonce, code_verifier };
  },
  async code_grant() {
    const token = await client.authorizationCodeGrant(await config(), new URL(args.callback_url), {
      pkceCodeVerifier: args.code_verifier,
      expectedState: args.state,
      expectedNonce: args.nonce,
      idTokenExpected: args.id_token_expected ?? true,
    });
    return withClaims(token);
  },
  async userinfo() {
    return { ...await client.fetchUserInfo(await config(), args.access_token, args.sub) };
  },
  async refresh() {
    return withClaims(await client.refreshTokenGrant(await config(), args.refresh_token));
  },
  async end_session_url() {
    return { url: client.buildEndSessionUrl(await config(), args.params ?? {}).href };
  },
  async device() {
    const cfg = await config();
    const started = await client.initiateDeviceAuthorization(cfg, { scope: args.scope });
    out({ ...started });
    return withClaims(await client.pollDeviceAuthorizationGrant(cfg, started));
  },
  async dpop_client_credentials() {
    const cfg = await config();
    const DPoP = client.getDPoPHandle(cfg, await dpopKeys());
    const params = {};
    if (args.scope) params.scope = args.scope;
    if (args.resource) params.resource = args.resource;
    if (args.count === undefined) return { ...await client.clientCredentialsGrant(cfg, params, { DPoP }) };
    const responses = [];
    for (let i = 0; i < args.count; i += 1) {
      responses.push({ ...await client.clientCredentialsGrant(cfg, params, { DPoP }) });
    }
    return { responses };
  },
  async dpop_fetch() {
    const cfg = await config();
    const DPoP = client.getDPoPHandle(cfg, await dpopKeys());
    const res = await client.fetchProtectedResource(
      cfg, args.access_token, new URL(args.url), args.method ?? 'GET', args.body ?? null,
      args.headers ? new Headers(args.headers) : undefined, { DPoP });
    return { status: res.status, headers: Object.fromEntries(res.headers), body: await res.text() };
  },
  async dpop_proof() {
    const cfg = await config();
    const DPoP = client.getDPoPHandle(cfg, await dpopKeys());
    // Every later request of this configuration goes to this function instead of the network:
    // it keeps the headers the library made and answers 200 (with a DPoP-Nonce when asked, which
    // the handle then remembers for the origin, as it does for a server's answer).
    let sent;
    let answerNonce = null;
    cfg[client.customFetch] = async (url, init) => {
      sent = { url, headers: init.headers };
      return new Response('{}', {
        status: 200,
        headers: answerNonce ? { 'dpop-nonce': answerNonce } : {},
      });
    };
    const one = async ({ url, method, access_token }) => {
      await client.fetchProtectedResource(cfg, access_token, new URL(url), method ?? 'GET', null, undefined, { DPoP });
      return { dpop: sent.headers.dpop, authorization: sent.headers.authorization, url: sent.url };
    };
    const requests = args.requests ?? [{ url: args.url, method: args.method, access_token: args.access_token }];
    if (args.nonce) {
      answerNonce = args.nonce;
      await one(requests[0]);
      answerNonce = null;
    }
    const proofs = [];
    for (const r of requests) proofs.push({ ...await one(r), thumbprint: await DPoP.calculateThumbprint() });
    return args.requests ? { proofs } : proofs[0];
  },
  async resource_discovery() {
    const insecure = { [oauth.allowInsecureRequests]: true };
    const url = new URL(args.url);
    let challenged;
    try {
      await oauth.protectedResourceRequest('not-a-token-the-resource-knows', 'GET', url, undefined, undefined, insecure);
    } catch (err) {
      if (!(err instanceof oauth.WWWAuthenticateChallengeError)) throw err;
      challenged = err;
    }
    if (!challenged) throw new Error('the resource answered a call without a valid token');
    const found = await oauth.resourceDiscoveryRequest(url, insecure);
    const metadata = await oauth.processResourceDiscoveryResponse(url, found);
    if (!metadata.authorization_servers?.includes(args.issuer)) {
      throw new Error(`${args.issuer} is not among the resource's authorization_servers`);
    }
    const issuer = new URL(args.issuer);
    const as = await oauth.processDiscoveryResponse(
      issuer, await oauth.discoveryRequest(issuer, { algorithm: args.algorithm, ...insecure }));
    const rp = { client_id: args.client_id };
    const params = new URLSearchParams(args.token_params ?? {});
    if (args.scope) params.set('scope', args.scope);
    const token = await oauth.processClientCredentialsResponse(as, rp,
      await oauth.clientCredentialsGrantRequest(as, rp, oauth.ClientSecretBasic(args.client_secret), params, insecure));
    const res = await oauth.protectedResourceRequest(token.access_token, 'GET', url, undefined, undefined, insecure);
    return {
      challenge_status: challenged.status,
      challenges: challenged.cause,
      metadata_url: found.url,
      metadata,
      as_issuer: as.issuer,
      token_endpoint: as.token_endpoint,
      status: res.status,
      body: await res.text(),
    };
  },
  async ciba() {
    const cfg = await config();
    const started = await client.initiateBackchannelAuthentication(cfg, {
      scope: args.scope, login_hint: args.login_hint,
    });
    out({ ...started });
    return withClaims(await client.pollBackchannelAuthenticationGrant(cfg, started));
  },
};

if (!ops[op]) {
  console.error(`usage: node rp.mjs <${Object.keys(ops).join('|')}> '<json args>'`);
  process.exit(2);
}
try {
  out(await ops[op]());
} catch (err) {
  out({
    error: {
      name: err?.name,
      code: err?.code,
      message: err?.message,
      status: err?.status ?? err?.cause?.status,
      error: err?.error,
      error_description: err?.error_description,
      cause: err?.cause?.message ?? err?.cause?.attribute ?? err?.cause?.claim ?? undefined,
      // WWWAuthenticateChallengeError: the challenges as the library parsed them
      challenges: Array.isArray(err?.cause) ? err.cause : undefined,
    },
  });
  process.exit(1);
}
